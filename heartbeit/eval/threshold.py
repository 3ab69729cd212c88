"""A decision threshold and the numbers at it: Youden's J on validation scores (`heartbeit export`), and
sensitivity / specificity / PPV / NPV with Wilson 95 % intervals on a scored set (`heartbeit predict
--labels`). AUROC/AUPRC and their intervals come from heartbeit.eval.metrics (one home)."""
from __future__ import annotations

import math

import numpy as np

from .metrics import MetricResult, auprc, auroc, check_binary


def youden_threshold(labels, scores) -> float:
    """The score cut maximising sensitivity + specificity - 1 (ties: the highest cut); a score >= the cut is
    positive. Needs both classes."""
    from sklearn.metrics import roc_curve

    y, s, reason = check_binary(labels, scores, min_n=2)
    if reason:
        raise ValueError(f"no decision threshold: validation scores unusable ({reason})")
    fpr, tpr, cuts = roc_curve(y, s)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    cut = float(cuts[best[0]])
    return min(cut, 1.0) if math.isfinite(cut) else 1.0


def wilson(k: int, n: int, ci: float = 0.95) -> MetricResult:
    """Proportion k/n with its Wilson score interval (NaN with a reason when n = 0)."""
    if n == 0:
        return MetricResult(float("nan"), reason="no_cases: the denominator is empty")
    from scipy import stats

    interval = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=ci, method="wilson")
    return MetricResult(k / n, float(interval.low), float(interval.high))


def threshold_metrics(labels, scores, threshold: float, *, ci: float = 0.95, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, dict]:
    """{metric: {value, low, high, reason}} for AUROC (DeLong), AUPRC (bootstrap) and the confusion-matrix
    rates at `threshold`, plus the counts."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    pred = s >= threshold
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
    out = {"auroc": auroc(y, s, ci=ci), "auprc": auprc(y, s, ci=ci, n_resamples=n_resamples, seed=seed),
           "sensitivity": wilson(tp, tp + fn, ci), "specificity": wilson(tn, tn + fp, ci),
           "ppv": wilson(tp, tp + fp, ci), "npv": wilson(tn, tn + fn, ci)}
    result = {k: {"value": v.value, "low": v.low, "high": v.high, "reason": v.reason} for k, v in out.items()}
    result["counts"] = {"n": int(len(y)), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "threshold": float(threshold)}
    return result
