"""How noisy is epoch selection? An offline diagnostic on a finished demo's data (docs/selection.md).

Test labels stay out of reach of training and of the matrix: this script, not `heartbeit matrix`, fine-tunes
copies of the demo's cells (draw 0, seed 0, the given fractions, every task and architecture) with a round
hook that also scores the internal test set after every validation. It writes nothing into the run's
matrix. Per cell it records, per round, the validation loss and AUROC and the test AUROC, then asks of each
selection rule (matrix.selection: val_auroc, val_loss, last) how often it picks a round other than the
best test round and what that costs in test AUROC (regret):

    .venv/bin/python bench/selection.py --workdir runs/demo [--fractions 1.0 0.1] [--json results/bench/selection.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RULES = ("val_auroc", "val_loss", "last")


def _run_cell(args) -> dict:
    import torch
    from sklearn.metrics import roc_auc_score

    from heartbeit.commands.matrix import CellTrainer
    from heartbeit.train.finetune import cell_data_from_shards, finetune_cell

    cell, cfg, images, pretrained = args
    torch.set_num_threads(1)
    trainer = CellTrainer(images, cfg, pretrained)
    data = cell_data_from_shards(images, cell, cfg.matrix)
    test_auroc: dict[int, float] = {}

    def hook(round_, score):
        s, y, metas, _ = score(data.evaluation())
        internal = np.array([m.get("split") == "test" for m in metas])
        test_auroc[round_] = float(roc_auc_score(y[internal], s[internal]))

    with tempfile.TemporaryDirectory() as tmp:
        finetune_cell(cell, cfg.matrix, data, Path(tmp), pretrained_file=trainer.export_of(cell), round_hook=hook)
        curves = [json.loads(line) for line in (Path(tmp) / "curves.jsonl").read_text().splitlines()]
    return {"arch": cell.arch, "task": cell.task, "fraction": cell.fraction,
            "rounds": [{"round": c["round"], "val_loss": c["val_loss"], "val_auroc": c.get("val_auroc"),
                        "test_auroc": test_auroc[c["round"]]} for c in curves]}


def pick(rule: str, rounds: list[dict]) -> int:
    if rule == "last":
        return len(rounds) - 1
    if rule == "val_loss":
        return int(np.argmin([r["val_loss"] for r in rounds]))
    return int(np.argmax([r["val_auroc"] if r["val_auroc"] is not None else -1 for r in rounds]))


def summarise(cells: list[dict]) -> dict:
    out = {}
    for rule in RULES:
        regrets, differs, chosen = [], 0, []
        for c in cells:
            test = [r["test_auroc"] for r in c["rounds"]]
            i = pick(rule, c["rounds"])
            regrets.append(max(test) - test[i])
            differs += int(test[i] < max(test))
            chosen.append(test[i])
        out[rule] = {"cells": len(cells), "picks_other_than_best_test_round": differs,
                     "mean_regret": round(float(np.mean(regrets)), 4), "max_regret": round(float(np.max(regrets)), 4),
                     "mean_test_auroc": round(float(np.mean(chosen)), 4)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default="results/bench/selection.json")
    args = ap.parse_args()

    from heartbeit.commands.matrix import default_pretrained
    from heartbeit.config import load_config
    from heartbeit.config.layout import RunLayout
    from heartbeit.matrix import plan_cells
    from heartbeit.utils.io import atomic_write_json

    cfg = load_config(args.profile, overrides=[f"workdir={args.workdir}", f"matrix.fractions={args.fractions}",
                                               "matrix.ablation_label_fraction=null"])
    layout = RunLayout.of(cfg)
    pretrained = default_pretrained(cfg)
    cells = [c for c in plan_cells(cfg.matrix, layout.images, pretrained) if c.draw == 0 and c.seed == cfg.matrix.seeds[0]]
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(_run_cell, [(c, cfg, layout.images, str(pretrained) if pretrained else None)
                                            for c in cells]))
    record = {"profile": args.profile, "fractions": args.fractions, "seconds": round(time.time() - t0, 1),
              "rules": {f"{f:g}": summarise([r for r in results if r["fraction"] == f]) for f in args.fractions},
              "all": summarise(results), "cells": results}
    for arch in sorted({r["arch"] for r in results}):
        record.setdefault("by_arch", {})[arch] = summarise([r for r in results if r["arch"] == arch])
    atomic_write_json(args.json, record)
    print(json.dumps(record["all"], indent=1))
    print(f"{len(results)} cells, {record['seconds']} s -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
