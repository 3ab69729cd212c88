"""Does pretraining cause the gain? The report's pretraining ablation (matrix.ablation_label_fraction).

HeartBEiT fine-tuned at one label fraction from the backbone exported at fixed fractions of its
pretraining steps (pretrain.export_at; cells that carry `pretrain_step`), beside the two ends the benchmark
already has at that fraction: 0 steps = HeartBEiT's same-size random-init ViT (heartbeit_X -> vit_X,
heartbeit.models.families.same_size_baseline), all steps = the normal HeartBEiT cells. If AUROC rises with
the pretraining steps, the gain over the random ViT comes from pretraining, not from the recipe.

The ablation cells are kept out of every other part of the report (`split_cells`): they are not the main
HeartBEiT model. Their points use the tables' conventions (heartbeit.eval.tables' module note): internal test
set, whole set; a mean over seeds and draws of the point estimates and of the DeLong bounds; every run's own
value is listed too, and kept in `ablation_long` (Parquet/JSON/CSV).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from heartbeit.models.families import same_size_baseline
from heartbeit.records import cell_verdicts

from .cells import CellResult
from .plots import save_png
from .tables import MISSING, fraction_label, format_ci, write_long, write_table

TITLE = "Does pretraining cause the gain?"
FIGURE = "ablation_pretraining.png"
TABLE = "ablation_auroc"
RUN_COLUMNS = ["task", "model", "label_fraction", "pretrain_fraction", "pretrain_step", "source_arch", "init",
               "seed", "draw", "cell_id", "auroc", "auroc_low", "auroc_high"]


def is_ablation_cell(meta: dict) -> bool:
    return meta.get("pretrain_step") is not None


def split_cells(cells: list[CellResult]) -> tuple[list[CellResult], list[CellResult]]:
    """(the benchmark's cells, the pretraining ablation's cells)."""
    return ([c for c in cells if not is_ablation_cell(c.meta)], [c for c in cells if is_ablation_cell(c.meta)])


def _internal(long: pd.DataFrame | None) -> pd.DataFrame:
    if long is None or long.empty:
        return pd.DataFrame(columns=["task", "arch", "init", "fraction", "eval_set", "site"])
    return long[(long["eval_set"] == "internal") & (long["site"] == "all")]


def ablation_runs(long_main: pd.DataFrame | None, long_ablation: pd.DataFrame, ablation_metas: list[dict]) -> pd.DataFrame:
    """One row per run and point of the curve: the ablation cells, then the same label fraction's normal
    HeartBEiT cells (pretrain_fraction 1) and same-size random-ViT cells (0) for each HeartBEiT model."""
    info = {str(m["cell_id"]): m for m in ablation_metas}
    rows = []
    for r in _internal(long_ablation).to_dict("records"):
        m = info[str(r["cell_id"])]
        rows.append({**r, "model": r["arch"], "label_fraction": float(r["fraction"]), "source_arch": r["arch"],
                     "pretrain_fraction": float(m["pretrain_fraction"]), "pretrain_step": int(m["pretrain_step"])})
    main = _internal(long_main)
    for model, fraction in sorted({(r["model"], r["label_fraction"]) for r in rows}):
        # the two ends: the final export (normal HeartBEiT cells) and no pretraining (the random twin)
        for source, init, point in ((model, "pretrained", 1.0), (same_size_baseline(model), "random", 0.0)):
            runs = main[(main["arch"] == source) & (main["init"] == init) & (main["fraction"] == fraction)]
            for r in runs.to_dict("records"):
                rows.append({**r, "model": model, "label_fraction": fraction, "source_arch": source,
                             "pretrain_fraction": point, "pretrain_step": 0 if point == 0.0 else None})
    df = pd.DataFrame(rows).reindex(columns=RUN_COLUMNS)
    if df.empty:
        return df
    df["pretrain_step"] = df["pretrain_step"].astype("Int64")  # unknown (None) for the final export
    return df.sort_values(["task", "model", "label_fraction", "pretrain_fraction", "seed", "draw"],
                          kind="mergesort").reset_index(drop=True)


def _point_label(fraction: float, steps: set) -> str:
    if fraction == 0.0:
        return "0 (random ViT)"
    if fraction == 1.0:
        return "100% (final export)"
    step = ", ".join(str(int(s)) for s in sorted(steps) if pd.notna(s))
    return f"{fraction_label(fraction)} (step {step})"


def ablation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Task x pretraining point: "mean [low, high]" over runs, then every run's AUROC (seed/draw order)."""
    points = sorted(runs["pretrain_fraction"].unique())
    labels = {p: _point_label(p, set(runs[runs["pretrain_fraction"] == p]["pretrain_step"].dropna())) for p in points}
    rows = []
    for (task, model, fraction), group in runs.groupby(["task", "model", "label_fraction"], sort=True):
        row = {"Task": task, "Model": model, "Labels": fraction_label(fraction)}
        for p in points:
            g = group[group["pretrain_fraction"] == p]
            if g.empty:
                row[labels[p]] = MISSING
                continue
            values = ", ".join(f"s{int(s)}d{int(d)} {v:.3f}" for s, d, v in zip(g["seed"], g["draw"], g["auroc"]))
            row[labels[p]] = f"{format_ci(g['auroc'].mean(), g['auroc_low'].mean(), g['auroc_high'].mean())} ({values})"
        rows.append(row)
    return pd.DataFrame(rows, columns=["Task", "Model", "Labels"] + [labels[p] for p in points])


def ablation_figure(runs: pd.DataFrame, path: str | Path) -> Path:
    """AUROC (internal test set) vs the fraction of pretraining steps: one line per task and model through
    the means, every run as a point."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, ((task, model, fraction), g) in enumerate(runs.groupby(["task", "model", "label_fraction"], sort=True)):
        colour = f"C{i % 10}"
        mean = g.groupby("pretrain_fraction")["auroc"].mean()
        name = task if runs["model"].nunique() == 1 else f"{task}, {model}"
        ax.plot(mean.index, mean.to_numpy(), "-o", color=colour, label=name)
        ax.scatter(g["pretrain_fraction"], g["auroc"], color=colour, alpha=0.45, s=16, marker="x")
    ticks = sorted(runs["pretrain_fraction"].unique())
    ax.set_xticks(ticks, [("0\n(random ViT)" if t == 0 else fraction_label(t)) for t in ticks])
    ax.set_xlabel("pretraining steps (fraction of the run)")
    ax.set_ylabel("AUROC, internal test set")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    labels = ", ".join(fraction_label(f) for f in sorted(runs["label_fraction"].unique()))
    ax.set_title(f"HeartBEiT at {labels} labels vs pretraining steps (x: each run)")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def write_ablation(doc, ablation_cells: list[CellResult], long_main: pd.DataFrame | None, long_ablation: pd.DataFrame | None,
                   tables_dir: Path, figures_dir: Path, configured: float | None) -> dict | None:
    """The report section: table, figure and machine-readable runs. Returns the summary's entry (None when
    the ablation is neither configured nor present)."""
    if not ablation_cells and configured is None:
        return None
    doc.heading(TITLE, 3)
    runs = ablation_runs(long_main, long_ablation, [c.meta for c in ablation_cells]) if ablation_cells else None
    if runs is None or runs.empty:
        doc.para("Not available: no finished pretraining-ablation cell (matrix.ablation_label_fraction "
                 f"{configured}; HeartBEiT fine-tuned from the pretrain.export_at exports).")
        return {"runs": 0}
    write_long(runs, tables_dir, "ablation_long")
    table = ablation_table(runs)
    write_table(table, tables_dir, TABLE, title=TITLE,
                note="Internal test set AUROC: mean [mean of the DeLong 95% bounds] over seeds and draws, then "
                     "each run (s = seed, d = draw).")
    ablation_figure(runs, figures_dir / FIGURE)
    missing = sorted({m for m in runs["model"] if same_size_baseline(m) is None
                      or not (runs[runs["model"] == m]["pretrain_fraction"] == 0).any()})
    doc.para("HeartBEiT fine-tuned from its backbone at fixed fractions of the pretraining steps "
             "(pretrain.export_at), at the same label fraction, tasks, seeds and draws as the benchmark: 0 steps "
             "is the same-size random-init ViT, 100 % the final export (both the benchmark's own cells). AUROC "
             "that rises with the steps attributes the gain to pretraining rather than to the fine-tuning recipe. "
             "Each entry: mean [95% CI: mean of the runs' DeLong bounds], then every run's AUROC.")
    if missing:
        doc.para("No 0-step point for " + ", ".join(f"`{m}`" for m in missing) + ": its same-size random-init "
                 "ViT is not in matrix.architectures (or not finished).")
    flagged = [(c.meta, cell_verdicts(c.meta)) for c in ablation_cells]
    flagged = [(m, v) for m, v in flagged if v]
    if flagged:
        doc.para(f"Cell sanity: {len(flagged)} of {len(ablation_cells)} ablation cell(s) have a verdict ("
                 + "; ".join(f"{m['task']} step {m['pretrain_step']} draw {m['draw']}: "
                             + ", ".join(v).replace("_", " ") for m, v in flagged) + "); they are kept.")
    doc.table(table, "Internal-test AUROC vs pretraining steps (tables/ablation_auroc, runs in tables/ablation_long)")
    doc.image(f"figures/{FIGURE}", "AUROC vs pretraining steps: one line per task through the means, x = each run")
    means = runs.groupby(["task", "model", "pretrain_fraction"])["auroc"].mean()
    return {"runs": int(len(runs)), "cells": len(ablation_cells),
            "mean_auroc": {f"{t}|{m}|{p:g}": float(v) for (t, m, p), v in means.items() if np.isfinite(v)}}
