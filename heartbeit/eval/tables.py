"""Paper-style result tables from the long metrics table, written as Markdown, LaTeX and CSV (and the
long tables as Parquet and JSON). Output bytes depend only on the inputs: rows are sorted canonically,
numbers are formatted with fixed digits, and nothing records a time.

Several seeds / draws of one architecture x fraction: a table cell shows the mean of the point estimates
and the mean of the interval bounds. All runs are scored on the same test ECGs, so their sampling errors
are strongly positively correlated; averaging the bounds equals an interval whose standard error is the
mean of the runs' standard errors, which by Minkowski's inequality is never smaller than the standard
error of the mean: the interval is conservative. The spread across runs (the variability a new training
draw brings) is reported separately in the `spread_*` tables, never folded into the interval.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from heartbeit.models.families import FAMILY_ORDER
from heartbeit.utils.io import atomic_path, atomic_write_bytes, atomic_write_text

from .cells import CellResult, long_metrics, long_subgroups, sort_long
from .cell_scoring import EVAL_SET
from .metrics import aggregate, paired_delong
from .training_noise import mark_paired

TABLE_FORMATS = ("md", "tex", "csv")
MISSING = "–"  # shown where a number is undefined; the long table carries the reason


# ------------------------------------------------------------------------------------------ formatting


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


def format_ci(value, low=None, high=None, digits: int = 3) -> str:
    """"0.812 [0.781, 0.843]"; the bare value when there is no interval; a dash when undefined."""
    if not _finite(value):
        return MISSING
    text = f"{float(value):.{digits}f}"
    if _finite(low) and _finite(high):
        text += f" [{float(low):.{digits}f}, {float(high):.{digits}f}]"
    return text


def format_p(p) -> str:
    """"=0.012" or "<0.001" (to follow "p")."""
    if not _finite(p):
        return f" {MISSING}"
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def fraction_label(fraction: float) -> str:
    return f"{float(fraction) * 100:g}%"


def model_label(arch: str, init: str) -> str:
    return f"{arch} ({init})"


# -------------------------------------------------------------------------------------------- writers


def _csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n", float_format="%.6g").encode("utf-8")


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, *, title: str = "", note: str = "",
                formats=TABLE_FORMATS) -> list[Path]:
    """Write a display table as `<stem>.md` (pipe table under a heading), `<stem>.tex` (booktabs tabular,
    special characters escaped) and `<stem>.csv`. Atomic writes; returns the paths."""
    out_dir = Path(out_dir)
    paths = []
    headers = [str(c) for c in df.columns]
    rows = df.astype(object).where(df.notna(), MISSING).values.tolist()
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "md":
            body = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
            text = (f"### {title}\n\n" if title else "") + body + "\n" + (f"\n{note}\n" if note else "")
            atomic_write_text(path, text)
        elif fmt == "tex":
            body = tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True)
            text = (f"% {title}\n" if title else "") + body + "\n"
            atomic_write_text(path, text)
        elif fmt == "csv":
            atomic_write_bytes(path, _csv_bytes(df))
        else:
            raise ValueError(f"unknown table format {fmt!r}; known: {TABLE_FORMATS}")
        paths.append(path)
    return paths


def _json_safe(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_long(df: pd.DataFrame, out_dir: str | Path, stem: str) -> list[Path]:
    """The machine-readable form of a long table: Parquet, JSON (records; NaN as null) and CSV."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    with atomic_path(out_dir / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    records = [{k: _json_safe(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(records, indent=1, sort_keys=True, allow_nan=False) + "\n")
    atomic_write_bytes(out_dir / f"{stem}.csv", _csv_bytes(df))
    return [out_dir / f"{stem}.{ext}" for ext in ("parquet", "json", "csv")]


# ------------------------------------------------------------------------------------- fraction tables


def _models(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(arch, init) in paper order: family order, then name, then init."""
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    keys = df[["arch_family", "arch", "init"]].drop_duplicates()
    keys = sorted(keys.itertuples(index=False), key=lambda r: (rank.get(r.arch_family, len(rank)), r.arch, r.init))
    return [(r.arch, r.init) for r in keys]


def _main_rows(long: pd.DataFrame) -> pd.DataFrame:
    """Rows of whole evaluation sets (pooled over sites)."""
    return long[long["site"] == "all"]


def fraction_table(long: pd.DataFrame, task: str, eval_set: str, metric: str = "auroc", *, digits: int = 3,
                   with_ci: bool = True) -> pd.DataFrame:
    """Architectures as rows, training fractions as columns, "value [low, high]" cells (mean over
    seeds/draws, see the module note)."""
    part = _main_rows(long)
    part = part[(part["task"] == task) & (part["eval_set"] == eval_set)]
    fractions = sorted(part["fraction"].unique())
    rows = []
    for arch, init in _models(part):
        mine = part[(part["arch"] == arch) & (part["init"] == init)]
        row = {"Model": arch, "Init": init}
        for f in fractions:
            runs = mine[mine["fraction"] == f]
            v = _mean_finite(runs[metric]) if len(runs) else float("nan")
            if with_ci and len(runs):
                row[fraction_label(f)] = format_ci(v, _mean_finite(runs[f"{metric}_low"]),
                                                   _mean_finite(runs[f"{metric}_high"]), digits)
            else:
                row[fraction_label(f)] = format_ci(v, digits=digits)
        rows.append(row)
    return pd.DataFrame(rows, columns=["Model", "Init"] + [fraction_label(f) for f in fractions])


def _mean_finite(values) -> float:
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def calibration_table(long: pd.DataFrame, task: str, eval_set: str, *, digits: int = 3) -> pd.DataFrame:
    """Brier score / ECE per architecture x fraction ("0.112 / 0.034"; lower is better)."""
    brier = fraction_table(long, task, eval_set, "brier", digits=digits, with_ci=False)
    ece = fraction_table(long, task, eval_set, "ece", digits=digits, with_ci=False)
    out = brier.copy()
    for col in brier.columns[2:]:
        out[col] = brier[col] + " / " + ece[col]
    return out


def spread_table(long: pd.DataFrame, task: str, eval_set: str, metric: str = "auroc", *,
                 digits: int = 3) -> pd.DataFrame:
    """Variability across seeds and training draws: "mean ± sd (min–max, k runs)" per cell."""
    part = _main_rows(long)
    part = part[(part["task"] == task) & (part["eval_set"] == eval_set)]
    agg = aggregate(part, ["arch", "init", "fraction"], [metric])
    fractions = sorted(part["fraction"].unique())
    rows = []
    for arch, init in _models(part):
        row = {"Model": arch, "Init": init}
        for f in fractions:
            a = agg[(agg["arch"] == arch) & (agg["init"] == init) & (agg["fraction"] == f)]
            if a.empty or not a[f"{metric}_count"].iloc[0]:
                row[fraction_label(f)] = MISSING
                continue
            a = a.iloc[0]
            sd = f" ± {a[f'{metric}_sd']:.{digits}f}" if _finite(a[f"{metric}_sd"]) else ""
            row[fraction_label(f)] = (f"{a[f'{metric}_mean']:.{digits}f}{sd} "
                                      f"({a[f'{metric}_min']:.{digits}f}–{a[f'{metric}_max']:.{digits}f}, "
                                      f"k={int(a[f'{metric}_count'])})")
        rows.append(row)
    return pd.DataFrame(rows, columns=["Model", "Init"] + [fraction_label(f) for f in fractions])


# ---------------------------------------------------------------------------------- paired comparisons


def holm(p) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), NaN kept as NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def with_holm(paired: pd.DataFrame) -> pd.DataFrame:
    """Add `p_holm`: the paired p-values Holm-adjusted within each (task, evaluation set) -- the family of
    tests one fraction table shows (every baseline, fraction, seed and draw); `p` stays the raw value."""
    if paired.empty:
        return paired
    paired = paired.copy()
    paired["p_holm"] = np.nan
    for _, idx in paired.groupby(["task", "eval_set"], sort=False).groups.items():
        paired.loc[idx, "p_holm"] = holm(pd.to_numeric(paired.loc[idx, "p"], errors="coerce"))
    return paired


def _matched_runs(cells: list[CellResult]) -> list[list[CellResult]]:
    """Cells grouped by (task, fraction, seed, draw): the runs trained on the same ECGs, in key order."""
    by_key: dict[tuple, list[CellResult]] = {}
    for c in cells:
        m = c.meta
        by_key.setdefault((m["task"], float(m["fraction"]), int(m["seed"]), int(m.get("draw", 0))), []).append(c)
    return [group for _, group in sorted(by_key.items())]


def paired_comparisons(cells: list[CellResult], *, reference_family: str = "heartbeit", reference_init: str = "pretrained",
                       ci: float = 0.95, min_n: int = 10) -> pd.DataFrame:
    """Paired DeLong tests of each reference model (family `reference_family`, init `reference_init`)
    against every other model trained on the same task, fraction, seed and draw, scored on the same ECGs
    (matched by ecg_uid within each evaluation set; clustered by patient when patients repeat)."""
    rows = []
    for group in _matched_runs(cells):
        refs = [c for c in group if c.meta["arch_family"] == reference_family and c.meta["init"] == reference_init]
        for ref in refs:
            for other in group:
                if other is ref:
                    continue
                rows.extend(_paired_rows(ref, other, ci=ci, min_n=min_n))
    df = pd.DataFrame(rows)
    return with_holm(sort_long(df)) if not df.empty else df


def image_vs_signal_comparisons(cells: list[CellResult], *, signal_family: str = "signal", ci: float = 0.95,
                                min_n: int = 10) -> pd.DataFrame:
    """Paired DeLong tests of every image model (reference) against the signal-domain model(s) trained on
    the same task, fraction, seed and draw -- the same training ECGs, drawn as a picture or kept as a
    waveform -- scored on the same held-out ECGs. Δ = image − signal."""
    rows = []
    for group in _matched_runs(cells):
        signals = [c for c in group if c.meta["arch_family"] == signal_family]
        for ref in (c for c in group if c.meta["arch_family"] != signal_family):
            for other in signals:
                rows.extend(_paired_rows(ref, other, ci=ci, min_n=min_n))
    df = pd.DataFrame(rows)
    return with_holm(sort_long(df)) if not df.empty else df


def _within_noise(runs: pd.DataFrame) -> bool:
    """Every measured run of a paired comparison lies within the two models' seed spread (mark_paired)."""
    if "within_training_noise" not in runs:
        return False
    noise = runs["within_training_noise"].dropna()
    return len(noise) > 0 and bool(noise.astype(bool).all())


def robustness_table(paired: pd.DataFrame, *, alpha: float = 0.05, digits: int = 3) -> pd.DataFrame:
    """Which paired differences survive the spread across seeds and training draws: per (task, evaluation
    set, fraction, reference, baseline), the runs, mean / min / max Δ and the largest p (Holm-adjusted within
    its task and evaluation set, `p_holm`). "holds in every run" = every run has adjusted p < alpha with the
    same sign; "single run" = nothing to compare against."""
    if paired.empty:
        return pd.DataFrame()
    rows = []
    keys = ["task", "eval_set", "fraction", "reference", "reference_init", "arch", "init"]
    for key, runs in paired.groupby(keys, sort=False):
        d = pd.to_numeric(runs["delta_auroc"], errors="coerce").to_numpy(float)
        p = pd.to_numeric(runs["p_holm"], errors="coerce").to_numpy(float)
        ok = np.isfinite(d) & np.isfinite(p)
        if not ok.any():
            verdict = "no test (see reasons)"
        elif len(runs) == 1:
            verdict = "significant, single run" if p[ok].max() < alpha else "not significant, single run"
        elif ok.all() and (p < alpha).all() and (np.sign(d) == np.sign(d[0])).all():
            verdict = "holds in every run"
        elif ok.any() and (p[ok] < alpha).any():
            verdict = f"significant in {int((p[ok] < alpha).sum())}/{len(runs)} runs only"
        else:
            verdict = "not significant in any run"
        if _within_noise(runs):  # |Δ| below the measured seed spread in every run: not told from training noise
            verdict += "; within training noise"
        task, eval_set, fraction, ref, ref_init, arch, init = key
        rows.append({"Task": task, "Set": eval_set, "Fraction": fraction_label(fraction), "Reference": ref,
                     "Baseline": model_label(arch, init), "Runs": len(runs),
                     "mean Δ": f"{np.nanmean(d):+.{digits}f}" if np.isfinite(d).any() else MISSING,
                     "Δ range": (f"{np.nanmin(d):+.{digits}f} … {np.nanmax(d):+.{digits}f}"
                                 if np.isfinite(d).any() else MISSING),
                     "max p (Holm)": format_p(np.nanmax(p)).lstrip("=") if np.isfinite(p).any() else MISSING,
                     "Verdict": verdict})
    return pd.DataFrame(rows)


def _paired_rows(ref: CellResult, other: CellResult, *, ci: float, min_n: int) -> list[dict]:
    rows = []
    cols = ["ecg_uid", "split", "patient_hash", "label", "score"]
    merged = ref.predictions[cols].merge(other.predictions[["ecg_uid", "split", "label", "score"]],
                                         on=["ecg_uid", "split"], suffixes=("_ref", "_base"), how="inner")
    if not (merged["label_ref"].to_numpy() == merged["label_base"].to_numpy()).all():
        raise ValueError(f"cells {ref.meta['cell_id']} and {other.meta['cell_id']}: the same ECG has "
                         f"different labels")
    for split in sorted(merged["split"].astype(str).unique()):
        part = merged[merged["split"].astype(str) == split]
        n_ref = int((ref.predictions["split"].astype(str) == split).sum())
        patients = part["patient_hash"].astype(str).to_numpy()
        clusters = patients if pd.Series(patients).duplicated().any() else None
        r = paired_delong(part["label_ref"].to_numpy(), part["score_ref"].to_numpy(float),
                          part["score_base"].to_numpy(float), ci=ci, clusters=clusters, min_n=min_n)
        m = ref.meta
        rows.append({"task": m["task"], "eval_set": EVAL_SET[split], "site": "all", "fraction": float(m["fraction"]),
                     "seed": int(m["seed"]), "draw": int(m.get("draw", 0)),
                     "reference": m["arch"], "reference_init": m["init"],
                     "arch": other.meta["arch"], "arch_family": other.meta["arch_family"],
                     "init": other.meta["init"], "n_matched": len(part), "n_unmatched": n_ref - len(part),
                     "auroc_reference": r.auc_a, "auroc_baseline": r.auc_b, "delta_auroc": r.delta,
                     "delta_low": r.low, "delta_high": r.high, "z": r.z, "p": r.p, "reasons": r.reason})
    return rows


def paired_table(paired: pd.DataFrame, task: str, eval_set: str, *, alpha: float = 0.05,
                 digits: int = 3) -> pd.DataFrame:
    """Baselines as rows, fractions as columns; a cell is "ΔAUROC (p=...)" = reference minus baseline, p
    Holm-adjusted over every test of this table (`p_holm`). With several seeds/draws: the mean Δ, the
    largest p over the matched runs (a difference that holds in every run) and how many runs reach p < alpha."""
    part = paired[(paired["task"] == task) & (paired["eval_set"] == eval_set)]
    if part.empty:
        return pd.DataFrame(columns=["Reference", "Baseline", "Init"])
    fractions = sorted(part["fraction"].unique())
    rows = []
    refs = sorted(part["reference"].unique())
    for ref in refs:
        mine = part[part["reference"] == ref]
        for arch, init in _models(mine):
            row = {"Reference": ref, "Baseline": arch, "Init": init}
            for f in fractions:
                runs = mine[(mine["arch"] == arch) & (mine["init"] == init) & (mine["fraction"] == f)]
                d = _mean_finite(runs["delta_auroc"]) if len(runs) else float("nan")
                p = pd.to_numeric(runs["p_holm"], errors="coerce").to_numpy(dtype=float)
                p = p[np.isfinite(p)]
                if not _finite(d):
                    row[fraction_label(f)] = MISSING
                elif len(p) == 0:
                    row[fraction_label(f)] = f"{d:+.{digits}f} (p {MISSING})"
                elif len(runs) == 1:
                    row[fraction_label(f)] = f"{d:+.{digits}f} (p{format_p(p.max())})"
                else:
                    row[fraction_label(f)] = (f"{d:+.{digits}f} (max p{format_p(p.max())}, "
                                              f"{int((p < alpha).sum())}/{len(runs)} p<{alpha:g})")
                if _finite(d) and _within_noise(runs):
                    row[fraction_label(f)] += " ≈ training noise"
            rows.append(row)
    return pd.DataFrame(rows, columns=["Reference", "Baseline", "Init"] + [fraction_label(f) for f in fractions])


# ------------------------------------------------------------------------------------------- subgroups


def subgroup_table(sub: pd.DataFrame, task: str, eval_set: str, *, fraction: float | None = None,
                   digits: int = 3) -> pd.DataFrame:
    """AUROC [CI] by site / sex / age band at one training fraction (default: the largest), models as
    columns (mean over seeds/draws), with the subgroup's size and a "too small" flag."""
    part = sub[(sub["task"] == task) & (sub["eval_set"] == eval_set)]
    if part.empty:
        return pd.DataFrame(columns=["Subgroup", "Level", "n", "n_pos", "Flag"])
    fraction = max(part["fraction"]) if fraction is None else fraction
    part = part[part["fraction"] == fraction]
    models = _models(part)
    rows = []
    for (var, level), grp in sorted(part.groupby(["subgroup", "level"], sort=True), key=lambda kv: kv[0]):
        first = grp.iloc[0]
        row = {"Subgroup": var, "Level": level, "n": int(first["n"]), "n_pos": int(first["n_pos"]),
               "Flag": "too small" if bool(grp["too_small"].any()) else ""}
        for arch, init in models:
            runs = grp[(grp["arch"] == arch) & (grp["init"] == init)]
            row[model_label(arch, init)] = format_ci(_mean_finite(runs["auroc"]), _mean_finite(runs["auroc_low"]),
                                                     _mean_finite(runs["auroc_high"]), digits) if len(runs) else MISSING
        rows.append(row)
    return pd.DataFrame(rows, columns=["Subgroup", "Level", "n", "n_pos", "Flag"] + [model_label(*m) for m in models])


# ------------------------------------------------------------------------------------------ everything


def _write_paired(paired: pd.DataFrame, out_dir: Path, stem: str, title: str, note: str,
                  robust_title: str) -> list[Path]:
    """A paired comparison's long table, one fraction table per task x evaluation set, and its robustness
    table across seeds and training draws."""
    if paired.empty:
        return []
    files = write_long(paired, out_dir, f"{stem}_long")
    for task in sorted(paired["task"].unique()):
        for eval_set in sorted(paired[paired["task"] == task]["eval_set"].unique()):
            files += write_table(paired_table(paired, task, eval_set), out_dir, f"{stem}_{task}_{eval_set}",
                                 title=f"{title} — {task}, {eval_set}", note=note)
    files += write_table(robustness_table(paired), out_dir, f"{stem}_robustness", title=robust_title,
                         note="Δ = reference − baseline AUROC; p Holm-adjusted within each task × evaluation set "
                              "(raw p in the long table); 'holds in every run': adjusted p < 0.05 with the same sign "
                              "in every seed/draw.")
    return files

CI_NOTE = ("Cells: mean over seeds/draws of the estimate [mean of the 95% CI bounds]; AUROC CI DeLong "
           "(clustered by patient when patients repeat), AUPRC CI stratified patient bootstrap.")


def write_all_tables(cells: list[CellResult], out_dir: str | Path, *, ci: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0, min_n: int = 10, min_per_class: int = 10, ece_bins: int = 10,
                     long: pd.DataFrame | None = None,
                     seed_spread: dict[tuple[str, str], float] | None = None) -> dict:
    """Every table of the report into `out_dir`. Returns {"long": df, "paired": df, "subgroups": df,
    "files": [paths], "signal": df}. Pass a precomputed `long` to avoid rescoring. With `seed_spread`
    (eval/training_noise.py) every paired difference no larger than the measured seed spread of the two
    models is marked "within training noise", whatever its p-value."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if long is None:
        long = long_metrics(cells, ci=ci, n_resamples=n_resamples, seed=seed, min_n=min_n, ece_bins=ece_bins)
    files = write_long(long, out_dir, "metrics_long")
    main = _main_rows(long)
    multi_run = bool(len(main) and main.groupby(["task", "eval_set", "arch", "init", "fraction"]).size().max() > 1)
    for task in sorted(main["task"].unique()):
        for eval_set in sorted(main[main["task"] == task]["eval_set"].unique()):
            where = f"{task}, {'internal test set' if eval_set == 'internal' else 'external validation'}"
            for metric, name in (("auroc", "AUROC"), ("auprc_trapz", "AUPRC (trapezoid, as in the paper)"),
                                 ("auprc_ap", "AUPRC (average precision)")):
                files += write_table(fraction_table(long, task, eval_set, metric), out_dir,
                                     f"{metric}_{task}_{eval_set}", title=f"{name} by training fraction — {where}",
                                     note=CI_NOTE)
            files += write_table(calibration_table(long, task, eval_set), out_dir, f"calibration_{task}_{eval_set}",
                                 title=f"Brier score / ECE ({ece_bins} equal-width bins) — {where}",
                                 note="Lower is better for both.")
            if multi_run:
                files += write_table(spread_table(long, task, eval_set), out_dir, f"spread_auroc_{task}_{eval_set}",
                                     title=f"AUROC across seeds and training draws — {where}",
                                     note="mean ± sd (min–max, k runs)")
    paired = paired_comparisons(cells, ci=ci, min_n=min_n)
    if seed_spread:
        paired = mark_paired(paired, seed_spread)
    files += _write_paired(paired, out_dir, "paired", "ΔAUROC (reference − baseline), paired DeLong",
                           "Same ECGs and same seed/draw; p two-sided, Holm-adjusted over every test in this table "
                           "(all baselines, fractions, seeds and draws); raw p in paired_long.",
                           "Do the paired differences survive repeated seeds and training draws?")
    signal = image_vs_signal_comparisons(cells, ci=ci, min_n=min_n)
    if seed_spread:
        signal = mark_paired(signal, seed_spread)
    files += _write_paired(signal, out_dir, "image_vs_signal", "ΔAUROC (image model − signal model), paired DeLong",
                           "Same training ECGs (same fraction, seed and draw) drawn as an image or kept as the "
                           "filtered waveform; same test ECGs; p two-sided, Holm-adjusted over every test in this "
                           "table; raw p in image_vs_signal_long.",
                           "Image vs signal: do the differences survive repeated seeds and training draws?")
    subgroups = long_subgroups(cells, ci=ci, min_per_class=min_per_class, min_n=min_n)
    if not subgroups.empty:
        files += write_long(subgroups, out_dir, "subgroups_long")
        for task in sorted(subgroups["task"].unique()):
            for eval_set in sorted(subgroups[subgroups["task"] == task]["eval_set"].unique()):
                files += write_table(subgroup_table(subgroups, task, eval_set), out_dir,
                                     f"subgroups_{task}_{eval_set}",
                                     title=f"AUROC by subgroup at the largest training fraction — {task}, {eval_set}",
                                     note=f"'too small': fewer than {min_per_class} positives or negatives.")
    return {"long": long, "paired": paired, "subgroups": subgroups, "files": files, "signal": signal}
