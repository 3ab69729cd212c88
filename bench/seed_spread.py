"""Training noise, measured once: each architecture's internal-test AUROC at 100 % of the labels over several
training seeds (init, batch order, dropout; same data, same draw), on a finished demo's images and export.

    .venv/bin/python bench/seed_spread.py --workdir runs/demo [--seeds 0 1 2] [--json results/bench/seed_spread.json]

The cells go into <workdir>/matrix-seeds (the run's own matrix and plan are untouched); finished cells of the
run's matrix with the same id (seed 0) are reused. The record (eval/training_noise.py) is what the report's
`report.seed_spread_file` reads to mark paired differences smaller than the spread "within training noise"."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--json", default="results/bench/seed_spread.json")
    args = ap.parse_args()
    if len(args.seeds) < 3:
        ap.error("--seeds: a spread needs at least three seeds")

    from heartbeit.config.layout import RunLayout, matrix_cells
    from heartbeit.records import COMPLETE, PREDICTIONS
    from heartbeit.config import load_config
    from heartbeit.matrix import read_plan
    from heartbeit.utils.io import atomic_write_json
    from heartbeit.utils.machine import machine_record

    sets = [f"matrix.seeds={args.seeds}", f"matrix.fractions=[{args.fraction}]", "matrix.ablation_label_fraction=null"]
    cfg = load_config(args.profile, overrides=[f"workdir={args.workdir}", *sets])
    layout = RunLayout.of(cfg)
    matrix_dir = layout.root / "matrix-seeds"
    base = [sys.executable, "-m", "heartbeit", "matrix"]
    common = ["--profile", args.profile, "--workdir", args.workdir, "--matrix-dir", str(matrix_dir)]
    for s in sets:
        common += ["--set", s]
    t0 = time.time()
    subprocess.run([*base, "plan", *common], check=True, stdout=subprocess.DEVNULL)
    cells = read_plan(matrix_dir / "plan.json")
    matrix_cells(matrix_dir).mkdir(parents=True, exist_ok=True)
    reused = 0
    for c in cells:  # the run's own finished cells of the same id (seed 0) are not trained twice
        src, dst = matrix_cells(layout.matrix) / c.cell_id, matrix_cells(matrix_dir) / c.cell_id
        if (src / COMPLETE).is_file() and not dst.exists():
            shutil.copytree(src, dst)
            reused += 1
    subprocess.run([*base, "run", *common], check=True)
    by_arch: dict = {}
    for c in cells:
        pred = pd.read_parquet(matrix_cells(matrix_dir) / c.cell_id / PREDICTIONS)
        internal = pred[pred["split"] == "test"]
        from sklearn.metrics import roc_auc_score

        by_arch.setdefault(c.arch, {}).setdefault(c.task, {}).setdefault("aurocs", {})[c.seed] = round(
            float(roc_auc_score(internal["label"], internal["score"])), 6)
    for arch, tasks in by_arch.items():
        for task, v in tasks.items():
            a = np.array([v["aurocs"][s] for s in args.seeds])
            v["aurocs"] = [float(x) for x in a]
            v["range"] = round(float(a.max() - a.min()), 6)
            v["sd"] = round(float(a.std(ddof=1)), 6)
    record = {"profile": args.profile, "fraction": args.fraction, "eval_set": "internal", "seeds": args.seeds,
              "cells": len(cells), "reused_cells": reused, "seconds": round(time.time() - t0, 1),
              "machine": machine_record(), "by_arch": by_arch}
    atomic_write_json(args.json, record)
    for arch, tasks in sorted(by_arch.items()):
        print(arch, {t: v["range"] for t, v in tasks.items()})
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
