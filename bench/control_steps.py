"""Is a control's gap to its siblings a matter of optimizer steps? One demo cell (default: the same-size
random ViT on STEMI at 100 %) fine-tuned with its profile's schedule stretched 1x, 2x and 4x (more epochs,
same recipe otherwise), internal-test AUROC per length.

    .venv/bin/python bench/control_steps.py --workdir runs/demo [--arch vit_tiny_patch8_64 --task stemi]

Cells go into temporary matrix folders; the run's own matrix is untouched. Record: results/bench/control_steps.json."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--arch", default="vit_tiny_patch8_64")
    ap.add_argument("--task", default="stemi")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--multipliers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--json", default="results/bench/control_steps.json")
    args = ap.parse_args()

    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from heartbeit.config import load_config
    from heartbeit.utils.io import atomic_write_json
    from heartbeit.utils.machine import machine_record

    mcfg = load_config(args.profile).matrix
    rows = []
    for m in args.multipliers:
        with tempfile.TemporaryDirectory() as tmp:
            sets = [f"matrix.architectures=[{args.arch}]", f"matrix.tasks=[{args.task}]",
                    f"matrix.fractions=[{args.fraction}]", "matrix.ablation_label_fraction=null", "matrix.jobs=1",
                    "matrix.threads_per_job=2", f"matrix.epochs={mcfg.epochs * m}", f"matrix.min_steps={mcfg.min_steps * m}"]
            common = ["--profile", args.profile, "--workdir", args.workdir, "--matrix-dir", tmp]
            for s in sets:
                common += ["--set", s]
            subprocess.run([sys.executable, "-m", "heartbeit", "matrix", "plan", *common], check=True,
                           stdout=subprocess.DEVNULL)
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "heartbeit", "matrix", "run", *common], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cell = next(Path(tmp, "cells").glob("*/predictions.parquet"))
            info = json.loads((cell.parent / "cell.json").read_text())
            pred = pd.read_parquet(cell)
            internal = pred[pred["split"] == "test"]
            val = pd.read_parquet(cell.parent / "val_scores.parquet")
            rows.append({"multiplier": m, "epochs": mcfg.epochs * m, "steps": info.get("steps"),
                         "seconds": round(time.time() - t0, 1), "val_score_std": round(float(val["score"].std()), 4),
                         "val_share_below_half": round(float((val["score"] < 0.5).mean()), 4),
                         "auroc_internal": round(float(roc_auc_score(internal["label"], internal["score"])), 4)})
            print(rows[-1])
    atomic_write_json(args.json, {"arch": args.arch, "task": args.task, "fraction": args.fraction,
                                  "profile": args.profile, "runs": rows, "machine": machine_record()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
