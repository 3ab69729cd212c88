"""Read the matrix's finished cells and turn them into one long metrics table.

A cell directory `cells/<cell_id>/` holds `cell.json` (arch, arch_family, fraction, task, seed, draw,
init, ...) and `predictions.parquet` (ecg_uid, patient_hash, site, split, label, score, optional sex and
age_band). Cells without both files are unfinished and skipped (the matrix writes them atomically)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .metrics import cell_metrics, subgroup_metrics, validate_predictions

log = logging.getLogger("heartbeit.eval")

CELL_KEYS = ("cell_id", "arch", "arch_family", "fraction", "task", "seed", "draw", "init")
from heartbeit.models.families import FAMILY_ORDER  # noqa: E402,F401  (display order: the one family table)


@dataclass
class Cell:
    meta: dict
    predictions: pd.DataFrame


def read_cell(cell_dir: str | Path) -> Cell:
    """Load one finished cell; bad content raises ValueError naming the file (never patient data)."""
    cell_dir = Path(cell_dir)
    meta_path, pred_path = cell_dir / "cell.json", cell_dir / "predictions.parquet"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: unreadable cell record ({e.__class__.__name__})") from e
    meta.setdefault("draw", 0)
    meta.setdefault("init", "pretrained")
    missing = [k for k in CELL_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing keys {missing}")
    try:
        preds = pd.read_parquet(pred_path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{pred_path}: unreadable predictions ({e.__class__.__name__})") from e
    try:
        validate_predictions(preds)
    except ValueError as e:
        raise ValueError(f"{pred_path}: {e}") from e
    return Cell(meta, preds)


def finished_cell_dirs(cells_dir: str | Path) -> list[Path]:
    cells_dir = Path(cells_dir)
    if not cells_dir.is_dir():
        raise FileNotFoundError(f"{cells_dir}: no cells directory (run `heartbeit matrix` first)")
    return sorted(d for d in cells_dir.iterdir()
                  if d.is_dir() and (d / "cell.json").is_file() and (d / "predictions.parquet").is_file())


def read_cells(cells_dir: str | Path) -> list[Cell]:
    return [read_cell(d) for d in finished_cell_dirs(cells_dir)]


def _meta_columns(meta: dict) -> dict:
    row = {k: meta[k] for k in CELL_KEYS}
    row["fraction"] = float(row["fraction"])
    row["seed"], row["draw"] = int(row["seed"]), int(row["draw"])
    for k in ("profile", "n_train", "n_train_pos", "selected_epoch"):
        if k in meta:
            row[k] = meta[k]
    return row


def sort_long(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical row order: task, evaluation set, family (paper order), arch, init, fraction, seed, draw."""
    if df.empty:
        return df.reset_index(drop=True)
    family_rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    key = df.assign(_family=df["arch_family"].map(lambda f: family_rank.get(f, len(FAMILY_ORDER))))
    cols = [c for c in ("task", "eval_set", "site", "_family", "arch", "init", "fraction", "seed", "draw",
                        "subgroup", "level") if c in key.columns]
    return key.sort_values(cols, kind="mergesort").drop(columns="_family").reset_index(drop=True)


def long_metrics(cells: list[Cell], *, ci: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 min_n: int = 10, ece_bins: int = 10) -> pd.DataFrame:
    """One row per cell x evaluation set with the cell's metadata and every metric."""
    rows = []
    for cell in tqdm(cells, desc="metrics", unit="cell", disable=len(cells) < 2):
        meta = _meta_columns(cell.meta)
        for r in cell_metrics(cell.predictions, ci=ci, n_resamples=n_resamples, seed=seed, min_n=min_n,
                              ece_bins=ece_bins):
            rows.append({**meta, **r})
    log.info("scored %d cells into %d rows", len(cells), len(rows))
    return sort_long(pd.DataFrame(rows))


def long_subgroups(cells: list[Cell], *, ci: float = 0.95, min_per_class: int = 10, min_n: int = 10) -> pd.DataFrame:
    rows = []
    for cell in cells:
        meta = _meta_columns(cell.meta)
        for r in subgroup_metrics(cell.predictions, ci=ci, min_per_class=min_per_class, min_n=min_n):
            rows.append({**meta, **r})
    return sort_long(pd.DataFrame(rows))
