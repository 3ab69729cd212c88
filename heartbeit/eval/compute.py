"""Where a run's time went: the compute table written beside the stage timings (`<workdir>/run.json`, and
`<results_dir>/<profile>_run.json` for the committed results).

Per stage its wall seconds (measured by `heartbeit run`); for pretraining the steps, images and images/s of the
run's own summary; for the matrix, per architecture, the cells, their summed cell seconds (two cells run at
once with `matrix.jobs: 2`, so these add up to about jobs x the stage's wall time), the training images and the
training images/s over the cells' own training time. The machine's load average before and after says whether
the run had the cores to itself: a shared machine inflates every figure.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from heartbeit.config.layout import RunLayout, export_records
from heartbeit.records import CELL_RECORD, COMPLETE


def _pretrain_row(pretrain_dir: Path) -> dict | None:
    for f in export_records(pretrain_dir):
        summary = json.loads(f.read_text()).get("summary") or {}
        if not summary:
            continue
        steps = int(summary.get("steps_done", 0))
        batch = int(json.loads(f.read_text()).get("pretrain_config", {}).get("batch_size", 0))
        return {"model": json.loads(f.read_text()).get("model"), "steps": steps, "images": steps * batch,
                "last_images_per_s": round(float(summary.get("images_per_s", 0.0)), 1)}
    return None


def _matrix_rows(cells_dir: Path, batch_size: int) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for done in sorted(cells_dir.glob(f"*/{COMPLETE}")):
        cell_file = done.with_name(CELL_RECORD)
        if not cell_file.is_file():
            continue
        cell = json.loads(cell_file.read_text())
        name = cell["arch"] + (f" @ pretrain step {cell['pretrain_step']}" if cell.get("pretrain_step") else "")
        row = rows.setdefault(name, {"cells": 0, "cell_seconds": 0.0, "train_seconds": 0.0, "train_images": 0})
        row["cells"] += 1
        row["cell_seconds"] += float(json.loads(done.read_text()).get("seconds", 0.0))
        row["train_seconds"] += float(cell.get("train_seconds", 0.0))
        row["train_images"] += int(cell.get("steps", 0)) * batch_size
    for row in rows.values():
        row["cell_seconds"] = round(row["cell_seconds"], 1)
        row["train_seconds"] = round(row["train_seconds"], 1)
        row["train_images_per_s"] = round(row["train_images"] / row["train_seconds"], 1) if row["train_seconds"] else None
    return rows


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def compute_table(cfg, layout: RunLayout) -> dict:
    """The table for a run folder (only what exists: a run stopped early has fewer rows)."""
    out: dict = {"cpu_count": os.cpu_count(), "matrix_jobs": cfg.matrix.jobs}
    pre = _pretrain_row(layout.pretrain)
    if pre:
        out["pretrain"] = pre
    cells = layout.cells
    if cells.is_dir():
        out["matrix"] = _matrix_rows(cells, cfg.matrix.batch_size)
    return out


def markdown(record: dict) -> str:
    """The run record as two small tables (stages; matrix architectures)."""
    stages = record.get("stages_s", {})
    lines = ["| stage | wall s | wall min |", "|:--|--:|--:|"]
    lines += [f"| {k} | {v:.0f} | {v / 60:.1f} |" for k, v in stages.items()]
    matrix = record.get("compute", {}).get("matrix", {})
    if matrix:
        lines += ["", "| matrix architecture | cells | cell s | train images | train img/s |", "|:--|--:|--:|--:|--:|"]
        lines += [f"| {a} | {r['cells']} | {r['cell_seconds']:.0f} | {r['train_images']} | {r['train_images_per_s']} |"
                  for a, r in matrix.items()]
    return "\n".join(lines) + "\n"
