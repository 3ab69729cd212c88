"""A fresh run's results against the committed ones, and promoting a run to the committed results.

`make run` writes its results into the run folder (demo: runs/demo/results) and never touches the committed
`results/`; at its end `compare` says, per model, how far the fresh AUROCs are from the committed ones and
whether that lies within the measured training-seed spread (eval/training_noise.py). Training bytes depend on
the CPU's vector units (docs/reproducibility.md), so a rerun on another machine is expected to differ by
about that spread, not to be byte-identical. `promote` copies a run's outputs over the committed ones:

    heartbeit results compare --profile demo      # also the last step of `heartbeit run`
    heartbeit results promote --profile demo      # runs/demo/results -> results/ (bench/, realism/ kept)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.records import TMP_PREFIX

from .training_noise import load_seed_spread, noise_band

METRICS = Path("tables") / "metrics_long.csv"
KEY = ["arch", "task", "fraction", "seed", "draw", "split", "eval_set", "site"]
COMPARISON = "comparison"  # <results>/comparison.json and .md


def compare_results(fresh_dir: str | Path, committed_dir: str | Path, noise_file: str | Path | None = None) -> dict:
    """Per architecture: rows matched, cells whose ids match, max and median |ΔAUROC|, and whether the max
    lies within the architecture's measured seed spread (its largest over tasks)."""
    fresh_dir, committed_dir = Path(fresh_dir), Path(committed_dir)
    for d in (fresh_dir, committed_dir):
        if not (d / METRICS).is_file():
            raise FileNotFoundError(f"{d / METRICS}: no metrics table (run `heartbeit report` first)")
    fresh, old = pd.read_csv(fresh_dir / METRICS), pd.read_csv(committed_dir / METRICS)
    key = [k for k in KEY if k in fresh.columns and k in old.columns]
    both = fresh.merge(old, on=key, suffixes=("", "_committed"))
    spread = load_seed_spread(noise_file) if noise_file and Path(noise_file).is_file() else {}
    rows = []
    for arch, part in both.groupby("arch", sort=True):
        delta = (part["auroc"] - part["auroc_committed"]).abs()
        band = max((noise_band(spread, arch, arch, t) or 0.0) for t in part["task"].unique()) if spread else None
        worst = float(np.nanmax(delta)) if delta.notna().any() else float("nan")
        rows.append({"arch": arch, "rows": int(len(part)),
                     "same_cell_ids": int((part["cell_id"] == part["cell_id_committed"]).sum()),
                     "max_abs_delta_auroc": round(worst, 4), "median_abs_delta_auroc": round(float(np.nanmedian(delta)), 4),
                     "seed_spread": None if band is None else round(band, 4),
                     "within_seed_spread": None if band is None else bool(worst <= band)})
    return {"fresh": str(fresh_dir), "committed": str(committed_dir),
            "rows_fresh": int(len(fresh)), "rows_committed": int(len(old)), "rows_matched": int(len(both)),
            "by_arch": rows}


def comparison_markdown(cmp: dict) -> str:
    lines = [f"# This run against the committed results\n",
             f"{cmp['rows_matched']} of {cmp['rows_fresh']} metric rows matched a committed row "
             f"({cmp['rows_committed']} committed).\n",
             "| model | rows | same cell ids | max abs ΔAUROC | median abs ΔAUROC | seed spread | within |",
             "|:--|--:|--:|--:|--:|--:|:--|"]
    for r in cmp["by_arch"]:
        within = {True: "yes", False: "**no**", None: "(no spread measured)"}[r["within_seed_spread"]]
        lines.append(f"| {r['arch']} | {r['rows']} | {r['same_cell_ids']} | {r['max_abs_delta_auroc']:.4f} | "
                     f"{r['median_abs_delta_auroc']:.4f} | {'' if r['seed_spread'] is None else r['seed_spread']} | {within} |")
    return "\n".join(lines) + "\n"


def promote(fresh_dir: str | Path, committed_dir: str | Path) -> list[str]:
    """Replace each top-level entry of `committed_dir` that the run wrote with the run's own (a folder
    whole, through a temporary name beside it); entries the run did not write (bench/, realism/) stay."""
    fresh_dir, committed_dir = Path(fresh_dir), Path(committed_dir)
    if not (fresh_dir / METRICS).is_file():
        raise FileNotFoundError(f"{fresh_dir}: not a finished run's results (no {METRICS})")
    if fresh_dir.resolve() == committed_dir.resolve():
        raise ValueError(f"{fresh_dir}: the run's results already are the committed folder")
    committed_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for src in sorted(fresh_dir.iterdir()):
        if src.name.startswith("."):
            continue
        dst = committed_dir / src.name
        tmp = committed_dir / f"{TMP_PREFIX}promote-{src.name}-{os.getpid()}"
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copy2(src, tmp)
        old = committed_dir / f".old-promote-{src.name}-{os.getpid()}"
        if dst.exists():
            dst.rename(old)
        tmp.rename(dst)
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        done.append(src.name)
    return done
