"""Read the matrix's finished cells and turn them into one long metrics table.

A cell directory `cells/<cell_id>/` holds `cell.json` (arch, arch_family, fraction, task, seed, draw,
init, ...) and `predictions.parquet` (ecg_uid, patient_hash, site, split, label, score, optional sex and
age_band). Cells without both files are unfinished and skipped (the matrix writes them atomically).

Scale: a cell read from disk keeps only its record and its folder; its predictions are read when
asked for (`CellResult.predictions`) and dropped again, so the report's memory is bounded by the cells one step
works on (one cell, or the two a paired test matches), not by the number of cells. `long_metrics` scores
cells in `workers` processes; every cell's rows depend only on that cell and the seed, and rows are
gathered in cell order, so the output is byte-identical for any worker count. With a `cache_dir`, each
streamed cell's rows are also kept as `<cache_dir>/<cell_id>-<key>.json` (the key covers the predictions'
sha256, the evaluation settings and SCORE_VERSION), so a Slurm array can score slices of the cells
(`score_cells`, `heartbeit report --score-only`) and the report then only gathers them."""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from heartbeit.records import CELL_RECORD, PREDICTIONS
from heartbeit.utils.io import atomic_write_text, sha256_file

from .cell_scoring import cell_metrics, subgroup_metrics, validate_predictions

log = logging.getLogger("heartbeit.eval")

SCORE_VERSION = 1  # bump when cell_metrics' rows change for the same inputs: cached rows become stale
CELL_KEYS = ("cell_id", "arch", "arch_family", "fraction", "task", "seed", "draw", "init")
from heartbeit.models.families import FAMILY_ORDER  # noqa: E402,F401  (display order: the one family table)


@dataclass
class CellResult:
    """A finished cell: its record and its predictions, either held (`CellResult(meta, df)`) or read from
    `path` (its predictions.parquet) each time they are asked for. (The matrix's planned cell is
    `heartbeit.matrix.Cell`.)"""

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


def read_cell(cell_dir: str | Path, hold: bool = True) -> CellResult:
    """One finished cell, its predictions checked; `hold` keeps them in memory, else they are read on use.
    Bad content raises ValueError naming the file (never patient data)."""
    cell_dir = Path(cell_dir)
    meta_path, pred_path = cell_dir / CELL_RECORD, cell_dir / PREDICTIONS
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
        return CellResult(meta, read_predictions(pred_path), pred_path)
    _check_predictions_file(pred_path)
    return CellResult(meta, None, pred_path)


def finished_cell_dirs(cells_dir: str | Path) -> list[Path]:
    cells_dir = Path(cells_dir)
    if not cells_dir.is_dir():
        raise FileNotFoundError(f"{cells_dir}: no cells directory (run `heartbeit matrix` first)")
    return sorted(d for d in cells_dir.iterdir()
                  if d.is_dir() and (d / CELL_RECORD).is_file() and (d / PREDICTIONS).is_file())


def read_cells(cells_dir: str | Path, hold: bool = True) -> list[CellResult]:
    return [read_cell(d, hold) for d in finished_cell_dirs(cells_dir)]


def first_runs(cells: list[CellResult], task: str, fraction: float, by_family: bool = False) -> dict[tuple[str, str], CellResult]:
    """The lowest (seed, draw) cell of each (arch, init) for a task at a fraction: in that order, or with
    `by_family` in the family table's display order (then by name)."""
    out: dict[tuple[str, str], CellResult] = {}
    for c in sorted(cells, key=lambda c: (int(c.meta["seed"]), int(c.meta.get("draw", 0)))):
        m = c.meta
        if m["task"] == task and float(m["fraction"]) == float(fraction):
            out.setdefault((m["arch"], m["init"]), c)
    if not by_family:
        return out
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[1].meta["arch_family"], 99), kv[0])))


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


def _cell_rows(cell: CellResult, kw: dict) -> list[dict]:
    meta = _meta_columns(cell.meta)
    return [{**meta, **r} for r in cell_metrics(cell.predictions, **kw)]


def _cache_file(cell: CellResult, kw: dict, cache_dir: Path) -> Path | None:
    if cell.path is None:  # held predictions (tests, synthetic cells): nothing stable to key on
        return None
    key = json.dumps({"version": SCORE_VERSION, "predictions": sha256_file(cell.path), "settings": kw,
                      "meta": _meta_columns(cell.meta)}, sort_keys=True, default=str)
    return cache_dir / f"{cell.meta['cell_id']}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _json_value(v):
    return v.item() if hasattr(v, "item") else v


def _scored(cell: CellResult, kw: dict, cache_dir: str | None) -> list[dict]:
    """A cell's rows: from its cache file when present, else computed (and cached). JSON keeps floats
    exactly (repr round-trips; NaN as NaN), so cached and fresh rows give the same bytes downstream."""
    path = _cache_file(cell, kw, Path(cache_dir)) if cache_dir else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    rows = _cell_rows(cell, kw)
    if path is not None:
        rows = [{k: _json_value(v) for k, v in r.items()} for r in rows]
        atomic_write_text(path, json.dumps(rows, allow_nan=True))
    return rows


def _scored_star(args) -> list[dict]:
    return _scored(*args)


def _score_all(cells: list[CellResult], kw: dict, workers: int, cache_dir: Path | None) -> list[list[dict]]:
    cache = str(cache_dir) if cache_dir else None
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(cells), desc="metrics", unit="cell", disable=len(cells) < 2)
    out: list[list[dict]] = []
    if workers > 1 and len(cells) > 1:
        # spawn: the report process may hold torch threads, which a forked child must not inherit
        with ProcessPoolExecutor(min(workers, len(cells)), mp_context=multiprocessing.get_context("spawn")) as pool:
            for part in pool.map(_scored_star, [(cell, kw, cache) for cell in cells], chunksize=1):
                out.append(part)
                bar.update(1)
    else:
        for cell in cells:
            out.append(_scored(cell, kw, cache))
            bar.update(1)
    bar.close()
    return out


def long_metrics(cells: list[CellResult], *, ci: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 min_n: int = 10, ece_bins: int = 10, workers: int = 1,
                 cache_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per cell x evaluation set with the cell's metadata and every metric, scored in `workers`
    processes (the same bytes for any count: each cell is scored on its own, rows are kept in cell order).
    A streamed cell travels to its worker as its record and path; the worker reads its predictions.
    `cache_dir`: reuse and keep each cell's rows there (see the module note)."""
    kw = dict(ci=ci, n_resamples=n_resamples, seed=seed, min_n=min_n, ece_bins=ece_bins)
    rows = [r for part in _score_all(cells, kw, workers, Path(cache_dir) if cache_dir else None) for r in part]
    log.info("scored %d cells into %d rows", len(cells), len(rows))
    return sort_long(pd.DataFrame(rows))


def score_cells(cells: list[CellResult], cache_dir: str | Path, task_index: int = 0, num_tasks: int = 1, *,
                workers: int = 1, **kw) -> int:
    """Score cells task_index, task_index + num_tasks, ... into `cache_dir` (one Slurm array task's share
    of the report's cell evaluation). Returns how many cells this task holds."""
    if not 0 <= task_index < num_tasks:
        raise ValueError(f"task index {task_index} outside 0..{num_tasks - 1}")
    mine = cells[task_index::num_tasks]
    settings = dict(ci=kw.get("ci", 0.95), n_resamples=kw.get("n_resamples", 2000), seed=kw.get("seed", 0),
                    min_n=kw.get("min_n", 10), ece_bins=kw.get("ece_bins", 10))
    _score_all(mine, settings, workers, Path(cache_dir))
    return len(mine)


def long_subgroups(cells: list[CellResult], *, ci: float = 0.95, min_per_class: int = 10, min_n: int = 10) -> pd.DataFrame:
    rows = []
    for cell in cells:  # DeLong only: quick, serial
        meta = _meta_columns(cell.meta)
        for r in subgroup_metrics(cell.predictions, ci=ci, min_per_class=min_per_class, min_n=min_n):
            rows.append({**meta, **r})
    return sort_long(pd.DataFrame(rows))
