"""Training noise: how much a cell's AUROC moves when only the training seed changes (init, batch order,
dropout), measured once per architecture and task (bench/seed_spread.py -> results/bench/seed_spread.json)
and used by the report to mark a paired difference smaller than it as "within training noise", whatever
its p-value: the paired DeLong test sees the sampling noise of the test set, not the noise of training.

The record: {"fraction": 1.0, "eval_set": "internal", "seeds": [...],
             "by_arch": {arch: {task: {"aurocs": [...], "range": max - min, "sd": ...}}}}"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def load_seed_spread(path: str | Path) -> dict[tuple[str, str], float]:
    """{(arch, task): AUROC range over seeds} from a seed-spread record; errors name the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        return {(arch, task): float(v["range"]) for arch, tasks in record["by_arch"].items()
                for task, v in tasks.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a seed-spread record ({exc})") from None


def noise_band(spread: dict[tuple[str, str], float], reference: str, arch: str, task: str) -> float | None:
    """The larger seed spread of the two models compared on `task` (None when neither was measured)."""
    known = [spread[(a, task)] for a in (reference, arch) if (a, task) in spread]
    return max(known) if known else None


def mark_paired(paired: pd.DataFrame, spread: dict[tuple[str, str], float]) -> pd.DataFrame:
    """paired_long + `noise_band` and `within_training_noise` (|ΔAUROC| <= band; NA where unmeasured)."""
    out = paired.copy()
    if out.empty:
        return out.assign(noise_band=pd.Series(dtype=float), within_training_noise=pd.Series(dtype=object))
    bands = [noise_band(spread, r, a, t) for r, a, t in zip(out["reference"], out["arch"], out["task"])]
    out["noise_band"] = [np.nan if b is None else b for b in bands]
    delta = pd.to_numeric(out["delta_auroc"], errors="coerce").abs()
    out["within_training_noise"] = [None if b is None or not np.isfinite(d) else bool(d <= b)
                                    for b, d in zip(bands, delta)]
    return out
