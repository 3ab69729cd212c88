"""`heartbeit report`: one command from the matrix's finished cells and the image shards to
`results/REPORT.md` (+ `REPORT.html`, `report.json`), with everything it embeds:

  results/tables/     metrics with CIs, paired tests, calibration, subgroups (heartbeit.eval.tables),
                      the data summary and the Wasserstein modality-distance table
  results/figures/    ROC/PR, fraction and reliability figures (heartbeit.eval.plots)
  results/saliency/   Grad-CAM (+ FullGrad for CNNs) overlays, per-lead and lead x time tables and
                      figures per task x model, and the synthetic-STEMI territory analysis

This module only orchestrates; each part has its own module:
  report_inputs     finished cells and ECGs read back from the shards
  inference         a cell's model rebuilt from its weights, and its scores
  report_sections   data, models and seeds, results per task, comparisons, the ablation hook
  report_saliency   saliency by lead and time          territory   the synthetic-STEMI territory analysis
  wasserstein       the modality-distance table        document    Markdown/HTML output and its links

Atomicity: each part is built in a staging folder inside the results folder and swapped into place
(`tables/`, `figures/`, `saliency/` one rename each); `report.json`, `REPORT.md` and `REPORT.html` are written
last, atomically, so a report never links to a part that is not there. The output has no timestamp: the
same inputs give the same files.

Which cells count: see heartbeit.eval.report_inputs. Saliency needs `model.safetensors` (the selected
weights); a cell without it is named in the report's "Missing" section. Signal-domain cells have no image
and no saliency.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from heartbeit.config.layout import RunLayout
from heartbeit.utils.io import atomic_write_json, atomic_write_text, code_version, swap_into_place

from .ablation import split_cells
from .cells import long_metrics
from .document import Document
from .report_inputs import load_cells, open_images, unfinished_cells
from .report_saliency import SaliencyResult, saliency_part, saliency_section
from .report_sections import data_section, models_section, results_section
from .territory import TerritoryResult, territory_part, territory_section
from .training_noise import load_seed_spread

log = logging.getLogger("heartbeit.report")

PARTS = ("tables", "figures", "saliency")


def score_cache(cfg) -> Path:
    """Where each cell's metric rows are kept between report runs (and written by `report --score-only`
    array tasks): <workdir>/report/scores."""
    return RunLayout.of(cfg).score_cache


def run_report(cfg, cells_dir: str | Path | None = None, images_dir: str | Path | None = None,
               out_dir: str | Path | None = None, command: str = "heartbeit report") -> dict:
    """Build every part and REPORT.md/.html. Returns a summary (also written as report.json)."""
    cells_dir = Path(cells_dir) if cells_dir else RunLayout.of(cfg).cells
    images_dir = Path(images_dir) if images_dir else RunLayout.of(cfg).images
    root = Path(out_dir) if out_dir else Path(cfg.results_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = {part: root / f"{part}.staging-{os.getpid()}" for part in PARTS}
    for path in staging.values():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    try:
        summary, doc = _build(cfg, cells_dir, images_dir, staging, command)
        for part, path in staging.items():
            swap_into_place(path, root / part)
    finally:
        for path in staging.values():
            shutil.rmtree(path, ignore_errors=True)
    missing_links = [p for p in doc.links if not (root / p).is_file()]
    if missing_links:  # a bug, not bad input: every linked file was written above
        raise RuntimeError(f"REPORT.md would link missing files: {missing_links[:5]}")
    atomic_write_json(root / "report.json", summary)
    atomic_write_text(root / "REPORT.html", doc.to_html())
    atomic_write_text(root / "REPORT.md", doc.markdown())
    log.info("report: %s", root / "REPORT.md")
    return summary


def _build(cfg, cells_dir: Path, images_dir: Path, staging: dict, command: str) -> tuple[dict, Document]:
    """Every section in document order, into the staging folders; (summary, document)."""
    from .plots import write_all_figures
    from .tables import write_all_tables
    from .wasserstein import wasserstein_section

    rc = cfg.report
    cellset = load_cells(cells_dir)
    cellset.cells, ablation_cells = split_cells(cellset.cells)  # not the main model: their own section
    images = open_images(images_dir)
    cells = cellset.cells
    problems = list(cellset.problems) + list(images.problems)
    doc = Document("HeartBEiT Bench report")
    summary: dict = {"profile": cfg.profile, "command": command, "code_version": code_version(),
                     "cells": len(cells), "cells_dir": str(cells_dir), "images_dir": str(images_dir)}
    doc.para(f"Profile **{cfg.profile}**, code `{code_version()}`. Regenerate this report with:")
    doc.code(command)
    doc.para(f"Cells: `{cells_dir}` ({len(cells)} finished). Images: `{images_dir}`.")
    planned, unfinished = unfinished_cells(cells_dir)
    summary["unfinished_cells"] = unfinished
    if unfinished:  # first, before any table: every table below lacks these cells
        doc.heading("Incomplete study")
        shown = 50
        doc.para(f"**{len(unfinished)} of {planned} planned cells did not finish; every table and figure below "
                 "lacks them.** Resubmit them (`heartbeit slurm submit --from matrix ...`, or `heartbeit matrix "
                 "run`: done cells are skipped, checkpointed ones resume) and regenerate this report."
                 + (f" The first {shown} are listed; report.json lists all." if len(unfinished) > shown else ""))
        doc.bullets(unfinished[:shown])

    tables = None
    if cells:
        log.info("tables from %d cells", len(cells))
        long = long_metrics(cells, ci=rc.ci, n_resamples=rc.bootstrap, seed=rc.seed, min_n=rc.min_n,
                            ece_bins=rc.ece_bins, workers=rc.workers, cache_dir=score_cache(cfg))
        spread = load_seed_spread(rc.seed_spread_file) if rc.seed_spread_file else None
        if spread:
            summary["seed_spread_file"] = rc.seed_spread_file
        tables = write_all_tables(cells, staging["tables"], ci=rc.ci, n_resamples=rc.bootstrap, seed=rc.seed,
                                  min_n=rc.min_n, min_per_class=rc.min_per_class, ece_bins=rc.ece_bins, long=long,
                                  seed_spread=spread)
        write_all_figures(cells, tables["long"], staging["figures"], n_bins=rc.ece_bins)
    data_section(doc, cfg, cells, images, staging["tables"], summary)
    models_section(doc, cfg, cells, staging["tables"], summary)
    if tables:
        results_section(doc, cfg, tables, ablation_cells, staging, summary, score_cache(cfg))

    sres = saliency_part(cellset, images, cfg, staging["saliency"]) if cells else SaliencyResult()
    tres = (territory_part(cellset, images, cfg, staging["saliency"], tables["long"] if tables else None)
            if cells else TerritoryResult())
    problems += sres.notes + tres.notes
    saliency_section(doc, cfg, sres)
    territory_section(doc, tres, summary)
    wasserstein_section(doc, images, cfg, staging["tables"], summary, problems)

    doc.heading("Missing or left out")
    if problems:
        doc.bullets(problems)
    else:
        doc.para("Nothing: every part was built.")
    summary["problems"] = problems
    return summary, doc
