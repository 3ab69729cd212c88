"""Read the matrix's finished cells and turn them into one long metrics table.

A cell directory `cells/<cell_id>/` holds `cell.json` (arch, arch_family, fraction, task, seed, draw,
init, ...) and `predictions.parquet` (ecg_uid, patient_hash, site, split, label, score, optional sex and
age_band). Cells without both files are unfinished and skipped (the matrix writes them atomically).

Scale (issue 22): a cell read from disk keeps only its record and its folder; its predictions are read when
asked for (`Cell.predictions`) and dropped again, so the report's memory is bounded by the cells one step
works on (one cell, or the two a paired test matches), not by the number of cells. `long_metrics` scores
cells in `workers` processes; every cell's rows depend only on that cell and the seed, and rows are
gathered in cell order, so the output is byte-identical for any worker count."""
from __future__ import annotations

import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .metrics import cell_metrics, subgroup_metrics, validate_predictions

log = logging.getLogger("heartbeit.eval")

CELL_KEYS = ("cell_id", "arch", "arch_family", "fraction", "task", "seed", "draw", "init")
# Display order of model families (rows of every table, colours of every figure).
FAMILY_ORDER = ("heartbeit", "vit", "efficientnet", "resnet", "signal")


@dataclass
class Cell:
    """A finished cell: its record and its predictions, either held (`Cell(meta, df)`) or read from
    `path` (its predictions.parquet) each time they are asked for."""

    meta: dict
    held: pd.DataFrame | None = None
    path: Path | None = None

    @property
    def predictions(self) -> pd.DataFrame:
        return self.held if self.held is not None else read_predictions(self.path)


def read_predictions(pred_path: Path) -> pd.DataFrame:
    try:
        preds = pd.read_parquet(pred_path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{pred_path}: unreadable predictions ({e.__class__.__name__})") from e
    try:
        validate_predictions(preds)
    except ValueError as e:
        raise ValueError(f"{pred_path}: {e}") from e
    return preds


def _check_predictions_file(pred_path: Path) -> None:
    """validate_predictions on the file's columns and its split column only (a streamed cell is checked
    when it is listed, without holding its predictions)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(pred_path).names
        cols = ["split"] if "split" in names else []
        part = pd.read_parquet(pred_path, columns=cols)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{pred_path}: unreadable predictions ({e.__class__.__name__})") from e
    try:
        validate_predictions(part.reindex(columns=names))
    except ValueError as e:
        raise ValueError(f"{pred_path}: {e}") from e


def read_cell(cell_dir: str | Path, hold: bool = True) -> Cell:
    """One finished cell, its predictions checked; `hold` keeps them in memory, else they are read on use.
    Bad content raises ValueError naming the file (never patient data)."""
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
    if hold:
        return Cell(meta, read_predictions(pred_path), pred_path)
    _check_predictions_file(pred_path)
    return Cell(meta, None, pred_path)


def finished_cell_dirs(cells_dir: str | Path) -> list[Path]:
    cells_dir = Path(cells_dir)
    if not cells_dir.is_dir():
        raise FileNotFoundError(f"{cells_dir}: no cells directory (run `heartbeit matrix` first)")
    return sorted(d for d in cells_dir.iterdir()
                  if d.is_dir() and (d / "cell.json").is_file() and (d / "predictions.parquet").is_file())


def read_cells(cells_dir: str | Path, hold: bool = True) -> list[Cell]:
    return [read_cell(d, hold) for d in finished_cell_dirs(cells_dir)]


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


def _cell_rows(cell: Cell, kw: dict) -> list[dict]:
    meta = _meta_columns(cell.meta)
    return [{**meta, **r} for r in cell_metrics(cell.predictions, **kw)]


def _cell_rows_star(args) -> list[dict]:
    return _cell_rows(*args)


def long_metrics(cells: list[Cell], *, ci: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 min_n: int = 10, ece_bins: int = 10, workers: int = 1) -> pd.DataFrame:
    """One row per cell x evaluation set with the cell's metadata and every metric, scored in `workers`
    processes (the same bytes for any count: each cell is scored on its own, rows are kept in cell order).
    A streamed cell travels to its worker as its record and path; the worker reads its predictions."""
    kw = dict(ci=ci, n_resamples=n_resamples, seed=seed, min_n=min_n, ece_bins=ece_bins)
    bar = tqdm(total=len(cells), desc="metrics", unit="cell", disable=len(cells) < 2)
    rows: list[dict] = []
    if workers > 1 and len(cells) > 1:
        # spawn: the report process may hold torch threads, which a forked child must not inherit
        with ProcessPoolExecutor(min(workers, len(cells)), mp_context=multiprocessing.get_context("spawn")) as pool:
            for part in pool.map(_cell_rows_star, [(cell, kw) for cell in cells], chunksize=1):
                rows += part
                bar.update(1)
    else:
        for cell in cells:
            rows += _cell_rows(cell, kw)
            bar.update(1)
    bar.close()
    log.info("scored %d cells into %d rows", len(cells), len(rows))
    return sort_long(pd.DataFrame(rows))


def long_subgroups(cells: list[Cell], *, ci: float = 0.95, min_per_class: int = 10, min_n: int = 10) -> pd.DataFrame:
    rows = []
    for cell in cells:  # DeLong only: quick, serial
        meta = _meta_columns(cell.meta)
        for r in subgroup_metrics(cell.predictions, ci=ci, min_per_class=min_per_class, min_n=min_n):
            rows.append({**meta, **r})
    return sort_long(pd.DataFrame(rows))
