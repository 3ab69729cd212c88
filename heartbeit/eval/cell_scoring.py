"""One cell's prediction table -> its metric rows: every evaluation set (internal test, external sites pooled
and per site) and the subgroups (site, sex, age band), with the intervals of heartbeit.eval.metrics. Split from
metrics.py (single metrics and their intervals) so each module keeps one responsibility."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from heartbeit.records import PREDICTION_COLUMNS

from .metrics import (MIN_N, NAN, _cluster_codes, auprc_trapezoid, auroc, bootstrap_distribution, brier, check_binary, ece,
                      percentile_interval)

EVAL_SET = {"test": "internal", "external": "external"}  # split value -> evaluation-set name in tables


def validate_predictions(df: pd.DataFrame) -> None:
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing} (have {sorted(map(str, df.columns))})")
    bad = sorted(set(df["split"].astype(str)) - set(EVAL_SET))
    if bad:
        raise ValueError(f"predictions: unknown split values {bad}; expected {sorted(EVAL_SET)}")


def _score_set(y, s, patients, *, ci, n_resamples, seed, min_n, ece_bins) -> dict:
    """All metrics of one evaluation set. Interval reasons are kept per metric."""
    n, n_pos = len(y), int(np.sum(y == 1))
    reasons = []
    codes = _cluster_codes(patients, n) if n else None
    clusters = patients if codes is not None else None
    row = {"n": n, "n_pos": n_pos, "n_neg": n - n_pos, "n_patients": int(pd.Series(patients).nunique()),
           "ci_level": ci, "auroc_ci_method": "delong_clustered" if clusters is not None else "delong",
           "auprc_ci_method": f"bootstrap{n_resamples}_{'cluster_' if clusters is not None else ''}stratified"}
    r = auroc(y, s, ci=ci, clusters=clusters, min_n=min_n)
    row.update(auroc=r.value, auroc_low=r.low, auroc_high=r.high)
    reasons += [f"auroc {r.reason}"] if r.reason else []
    y_chk, s_chk, reason = check_binary(y, s, min_n)
    if reason:
        row.update({k: NAN for k in ("auprc_ap", "auprc_ap_low", "auprc_ap_high",
                                     "auprc_trapz", "auprc_trapz_low", "auprc_trapz_high")})
        reasons.append(f"auprc {reason}")
    else:
        row["auprc_ap"] = float(average_precision_score(y_chk, s_chk))
        row["auprc_trapz"] = auprc_trapezoid(y_chk, s_chk)
        if n_resamples > 0:
            reps = bootstrap_distribution(y_chk, s_chk, metrics=("ap", "trapz"), n_resamples=n_resamples,
                                          seed=seed, clusters=clusters)
            for kind in ("ap", "trapz"):
                low, high, why = percentile_interval(reps[kind], ci)
                row[f"auprc_{kind}_low"], row[f"auprc_{kind}_high"] = low, high
                reasons += [f"auprc_{kind} {why}"] if why else []
        else:
            row.update(auprc_ap_low=NAN, auprc_ap_high=NAN, auprc_trapz_low=NAN, auprc_trapz_high=NAN)
    for name, fn in (("brier", brier), ("ece", lambda a, b, min_n: ece(a, b, n_bins=ece_bins, min_n=min_n))):
        r = fn(y, s, min_n=min_n)
        row[name] = r.value
        reasons += [f"{name} {r.reason}"] if r.reason else []
    row["reasons"] = "; ".join(reasons)
    return row


def _groups(df: pd.DataFrame, per_site: bool):
    """(split, site) evaluation sets: each split pooled over its sites (site "all"), plus each site on
    its own when a split spans several sites and `per_site`."""
    for split in sorted(df["split"].astype(str).unique()):
        part = df[df["split"].astype(str) == split]
        yield split, "all", part
        sites = sorted(part["site"].astype(str).unique())
        if per_site and len(sites) > 1:
            for site in sites:
                yield split, site, part[part["site"].astype(str) == site]


def cell_metrics(predictions: pd.DataFrame, *, ci: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 min_n: int = MIN_N, ece_bins: int = 10, per_site: bool = True) -> list[dict]:
    """One row per evaluation set of a cell's predictions: each split ('test' -> internal, 'external')
    pooled over sites (site = "all"), and per site when a split spans several. Columns: split, eval_set,
    site, n, n_pos, n_neg, n_patients, auroc[_low/_high], auprc_ap[_low/_high], auprc_trapz[_low/_high],
    brier, ece, reasons, and the CI settings used."""
    validate_predictions(predictions)
    rows = []
    for split, site, part in _groups(predictions, per_site):
        row = {"split": split, "eval_set": EVAL_SET[split], "site": site}
        row.update(_score_set(part["label"].to_numpy(), part["score"].to_numpy(dtype=float),
                              part["patient_hash"].astype(str).to_numpy(), ci=ci, n_resamples=n_resamples,
                              seed=seed, min_n=min_n, ece_bins=ece_bins))
        rows.append(row)
    return rows


SUBGROUP_COLUMNS = ("site", "sex", "age_band")


def subgroup_metrics(predictions: pd.DataFrame, *, by=SUBGROUP_COLUMNS, ci: float = 0.95, min_per_class: int = 10,
                     min_n: int = MIN_N) -> list[dict]:
    """AUROC with DeLong CI per level of each subgroup variable present (site, sex, age band), within each
    split. `too_small` flags levels with fewer than `min_per_class` positives or negatives: their numbers
    are still computed where defined, but should not be read as evidence."""
    validate_predictions(predictions)
    rows = []
    for split in sorted(predictions["split"].astype(str).unique()):
        part = predictions[predictions["split"].astype(str) == split]
        for var in by:
            if var not in part.columns or part[var].isna().all():
                continue
            levels = part[var].astype("string").fillna("unknown")
            for level in sorted(levels.unique()):
                sub = part[(levels == level).to_numpy()]
                y = sub["label"].to_numpy()
                n_pos = int(np.sum(y == 1))
                patients = sub["patient_hash"].astype(str).to_numpy()
                clusters = patients if _cluster_codes(patients, len(y)) is not None else None
                r = auroc(y, sub["score"].to_numpy(dtype=float), ci=ci, clusters=clusters, min_n=min_n)
                small = n_pos < min_per_class or len(y) - n_pos < min_per_class
                rows.append({"split": split, "eval_set": EVAL_SET[split], "subgroup": var, "level": str(level),
                             "n": len(y), "n_pos": n_pos, "n_neg": len(y) - n_pos, "auroc": r.value,
                             "auroc_low": r.low, "auroc_high": r.high, "too_small": bool(small),
                             "reasons": r.reason})
    return rows
