"""Task difficulty, set with the baselines only: the demo's data at its sizes, the baselines (ResNet-18
and the signal model) trained at 100 % of the labels with the demo's recipe, internal-test AUROC per task.

The generator's disease effects (heartbeit/data/synth/ecg.py, "label effects") were tuned until the better baseline
of every task lay in 0.75-0.97; HeartBEiT plays no part (it is not trained here). The record of each round --
effect constants, AUROCs -- is results/bench/difficulty.json; this script makes a round:

    .venv/bin/python bench/difficulty.py --workdir runs/difficulty [--json results/bench/difficulty.json]

It runs synth -> ingest -> render -> matrix (plan + run) of the demo profile with the matrix narrowed to the
baselines at 100 % (`--set` overrides on the command line of each stage: nothing else changes), then scores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

BASELINES = ("resnet18", "signal_xresnet1d_tiny")
BAND = (0.75, 0.97)


def scores(cells_dir: Path) -> list[dict]:
    from heartbeit.eval.metrics import auroc

    rows = []
    from heartbeit.records import CELL_RECORD, COMPLETE, PREDICTIONS

    for cell_file in sorted(cells_dir.glob(f"*/{CELL_RECORD}")):
        if not cell_file.with_name(COMPLETE).is_file():
            continue
        cell = json.loads(cell_file.read_text())
        pred = pd.read_parquet(cell_file.with_name(PREDICTIONS))
        for split, group in pred.groupby("split"):
            res = auroc(group["label"].to_numpy(), group["score"].to_numpy(), clusters=group["patient_hash"].to_numpy())
            rows.append({"task": cell["task"], "arch": cell["arch"], "split": split, "n": len(group),
                         "positives": int(group["label"].sum()), "auroc": round(res.value, 3),
                         "ci": [round(res.low, 3), round(res.high, 3)]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/difficulty")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--json", default=None, help="append this round to a JSON record")
    ap.add_argument("--note", default="", help="what changed in this round")
    ap.add_argument("--score-only", action="store_true", help="score the cells already in --workdir")
    args = ap.parse_args()
    from heartbeit.cli import main as heartbeit

    common = ["--profile", args.profile, "--workdir", args.workdir,
              "--set", f"matrix.architectures={json.dumps(list(BASELINES))}", "--set", "matrix.fractions=[1.0]",
              "--set", "matrix.probe_architectures=[]", "--set", "matrix.ablation_label_fraction=null", "--set", f"results_dir={args.workdir}/results"]
    t0 = time.time()
    for argv in () if args.score_only else (["synth", "--no-progress"], ["ingest", "--no-progress"], ["render", "--no-progress"],
                 ["matrix", "plan"], ["matrix", "run"]):
        rc = heartbeit([*argv, *common])
        if rc:
            return rc
    from heartbeit.config.layout import RunLayout

    rows = scores(RunLayout(args.workdir).cells)
    internal = [r for r in rows if r["split"] == "test"]
    verdict = {}
    for task in sorted({r["task"] for r in internal}):
        best = max(r["auroc"] for r in internal if r["task"] == task)
        verdict[task] = {"best_baseline_auroc": best, "in_band": BAND[0] <= best <= BAND[1]}
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profile": args.profile, "note": args.note,
              "seconds": round(time.time() - t0, 1), "band": BAND, "rows": rows, "verdict": verdict}
    print(json.dumps(verdict, indent=1))
    print(pd.DataFrame(internal).to_string(index=False))
    if args.json:
        path = Path(args.json)
        rounds = json.loads(path.read_text())["rounds"] if path.is_file() else []
        path.write_text(json.dumps({"rounds": [*rounds, record]}, indent=1) + "\n")
    return 0 if all(v["in_band"] for v in verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
