"""Result figures: ROC and precision-recall curves, performance vs training fraction, reliability diagrams.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas (no pyplot global state, no display),
written atomically as PNG without a timestamp or software tag, so identical inputs give identical bytes.
Curves of one model are drawn from its first run (lowest seed, then draw); the fraction plot shows every
run's spread. Colours follow the tables' model order, so a model has the same colour in every figure.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from heartbeit.models.families import FAMILY_ORDER
from heartbeit.utils.io import atomic_path

from .cells import CellResult, first_runs
from .cell_scoring import EVAL_SET
from .metrics import auprc_trapezoid, check_binary, ece, reliability_curve
from .tables import fraction_label, model_label

log = logging.getLogger("heartbeit.eval")

DPI = 120
EVAL_TITLE = {"internal": "internal test set", "external": "external validation"}
METRIC_LABEL = {"auroc": "AUROC", "auprc_trapz": "AUPRC (trapezoid)", "auprc_ap": "AUPRC (average precision)"}


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    return path


def _model_keys(metas: list[dict]) -> list[tuple[str, str]]:
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    keys = {(m["arch"], m["init"]): rank.get(m["arch_family"], len(rank)) for m in metas}
    return sorted(keys, key=lambda k: (keys[k], k[0], k[1]))


def _colours(models: list[tuple[str, str]]) -> dict:
    palette = [f"C{i}" for i in range(10)]
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def _eval_part(cell: CellResult, eval_set: str):
    split = {v: k for k, v in EVAL_SET.items()}[eval_set]
    p = cell.predictions[cell.predictions["split"].astype(str) == split]
    return p["label"].to_numpy(), p["score"].to_numpy(dtype=float)


def roc_pr_figure(cells: list[CellResult], task: str, fraction: float, eval_set: str, path: str | Path,
                  colours: dict | None = None) -> Path | None:
    """ROC (left) and precision-recall (right) curves of every model on one evaluation set."""
    runs = first_runs(cells, task, fraction)
    models = _model_keys([c.meta for c in runs.values()])
    colours = colours or _colours(models)
    fig = Figure(figsize=(11, 5))
    ax_roc, ax_pr = fig.subplots(1, 2)
    prevalence = None
    drawn = 0
    for key in models:
        y, s = _eval_part(runs[key], eval_set)
        _, _, reason = check_binary(y, s, min_n=2)
        if reason:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        label = model_label(*key)
        ax_roc.plot(fpr, tpr, color=colours[key], lw=1.6, label=f"{label}: AUROC {roc_auc_score(y, s):.3f}")
        ax_pr.plot(recall, precision, color=colours[key], lw=1.6,
                   label=f"{label}: AUPRC {auprc_trapezoid(y, s):.3f}")
        prevalence = float(np.mean(y))
        drawn += 1
    if not drawn:
        return None
    ax_roc.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="chance (AUROC 0.5)")
    ax_pr.axhline(prevalence, color="0.6", ls=":", lw=1, label=f"chance (prevalence {prevalence:.3f})")
    ax_roc.set(xlabel="False positive rate (1 − specificity)", ylabel="True positive rate (sensitivity)",
               title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.set(xlabel="Recall (sensitivity)", ylabel="Precision (positive predictive value)",
              title="Precision–recall", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (ax_roc, ax_pr):
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "upper right", fontsize=8)
    n = len(y)
    fig.suptitle(f"{task}: {EVAL_TITLE[eval_set]} (n = {n} ECGs), trained on {fraction_label(fraction)} "
                 f"of the training set; first seed/draw")
    return save_png(fig, path)


def fraction_figure(long: pd.DataFrame, task: str, path: str | Path, metrics=("auroc", "auprc_trapz"),
                    colours: dict | None = None) -> Path | None:
    """Metric vs training fraction (log x, 1–100%), one line per model: internal test solid, external
    dashed; shaded band = 95% CI (mean of bounds over runs); vertical bars = min–max over seeds/draws."""
    part = long[(long["task"] == task) & (long["site"] == "all")]
    if part.empty:
        return None
    models = _model_keys(part[["arch", "arch_family", "init"]].drop_duplicates().to_dict("records"))
    colours = colours or _colours(models)
    fractions = sorted(part["fraction"].unique())
    fig = Figure(figsize=(6 * len(metrics), 5))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    styles = {"internal": "-", "external": "--"}
    for ax, metric in zip(axes, metrics):
        for key in models:
            mine = part[(part["arch"] == key[0]) & (part["init"] == key[1])]
            for eval_set, ls in styles.items():
                runs = mine[mine["eval_set"] == eval_set]
                if runs.empty:
                    continue
                g = runs.groupby("fraction")
                stats = pd.DataFrame({"mean": g[metric].mean(), "low": g[f"{metric}_low"].mean(),
                                      "high": g[f"{metric}_high"].mean(), "min": g[metric].min(),
                                      "max": g[metric].max(), "k": g[metric].count()}).dropna(subset=["mean"])
                if stats.empty:
                    continue
                x = stats.index.to_numpy(dtype=float) * 100
                ax.plot(x, stats["mean"], ls=ls, marker="o", ms=4, color=colours[key], lw=1.6)
                ax.fill_between(x, stats["low"], stats["high"], color=colours[key], alpha=0.12, lw=0)
                if (stats["k"] > 1).any():
                    ax.errorbar(x, stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                                fmt="none", ecolor=colours[key], elinewidth=1, capsize=3, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xticks([f * 100 for f in fractions], [fraction_label(f) for f in fractions])
        ax.minorticks_off()
        ax.set_xlim(min(fractions) * 100 / 1.3, max(fractions) * 100 * 1.3)
        ax.set(xlabel="Training data used (% of the training set, log scale)", ylabel=METRIC_LABEL.get(metric, metric),
               title=f"{METRIC_LABEL.get(metric, metric)} vs training fraction")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[k], lw=2, label=model_label(*k)) for k in models]
    handles += [Line2D([], [], color="0.3", ls="-", label="internal test"),
                Line2D([], [], color="0.3", ls="--", label="external validation")]
    axes[-1].legend(handles=handles, fontsize=8, loc="lower right")
    runs = part.groupby(["arch", "init", "fraction", "eval_set"]).size()
    k_min, k_max = int(runs.min()), int(runs.max())
    fig.suptitle(f"{task}: mean over {k_max if k_min == k_max else f'{k_min}–{k_max}'} run(s) per point; "
                 "band = 95% CI" + ("; bars = min–max over seeds/draws" if k_max > 1 else ""))
    return save_png(fig, path)


def reliability_figure(cells: list[CellResult], task: str, eval_set: str, path: str | Path, *, fraction: float | None = None,
                       n_bins: int = 10, colours: dict | None = None) -> Path | None:
    """Reliability diagram (observed fraction positive vs mean predicted probability per equal-width
    bin, Wilson 95% intervals) for every model at one training fraction (default the largest)."""
    mine = [c for c in cells if c.meta["task"] == task]
    if not mine:
        return None
    fraction = max(float(c.meta["fraction"]) for c in mine) if fraction is None else fraction
    runs = first_runs(mine, task, fraction)
    models = _model_keys([c.meta for c in runs.values()])
    colours = colours or _colours(models)
    fig = Figure(figsize=(6.5, 6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="perfect calibration")
    drawn = 0
    for key in models:
        y, s = _eval_part(runs[key], eval_set)
        curve = reliability_curve(y, s, n_bins=n_bins)
        curve = curve[curve["n"] > 0]
        if curve.empty:
            continue
        e = ece(y, s, n_bins=n_bins)
        yerr = [curve["frac_pos"] - curve["frac_pos_low"], curve["frac_pos_high"] - curve["frac_pos"]]
        ax.errorbar(curve["mean_score"], curve["frac_pos"], yerr=yerr, color=colours[key], marker="o", ms=4,
                    lw=1.4, capsize=2, label=f"{model_label(*key)}: ECE {e.value:.3f}")
        drawn += 1
    if not drawn:
        return None
    ax.set(xlabel="Mean predicted probability in bin", ylabel="Observed fraction of positives in bin",
           xlim=(0, 1), ylim=(0, 1), title=f"{task}: calibration, {EVAL_TITLE[eval_set]}, "
                                           f"{fraction_label(fraction)} of training data")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return save_png(fig, path)


def write_all_figures(cells: list[CellResult], long: pd.DataFrame, out_dir: str | Path, *, n_bins: int = 10) -> list[Path]:
    """Every figure of the report: per task a fraction plot; per task x fraction x evaluation set the
    ROC/PR curves; per task x evaluation set a reliability diagram at the largest fraction."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = _colours(_model_keys([c.meta for c in cells]))
    files = []
    for task in sorted({c.meta["task"] for c in cells}):
        files.append(fraction_figure(long, task, out_dir / f"fraction_{task}.png", colours=colours))
        eval_sets = sorted(long[long["task"] == task]["eval_set"].unique())
        fractions = sorted({float(c.meta["fraction"]) for c in cells if c.meta["task"] == task})
        for eval_set in eval_sets:
            for f in fractions:
                files.append(roc_pr_figure(cells, task, f, eval_set,
                                           out_dir / f"roc_pr_{task}_{eval_set}_{fraction_label(f).rstrip('%')}pct.png",
                                           colours=colours))
            files.append(reliability_figure(cells, task, eval_set, out_dir / f"reliability_{task}_{eval_set}.png",
                                            n_bins=n_bins, colours=colours))
    written = [f for f in files if f is not None]
    log.info("wrote %d figures to %s", len(written), out_dir)
    return written
