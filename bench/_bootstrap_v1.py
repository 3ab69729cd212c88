"""The clustered bootstrap as it was before the report's hospital-scale rewrite (kept for `bench/scale.py` only, never imported by the
package): per resample a multinomial draw of per-patient counts (numpy's conditional-binomial multinomial,
~55 ns per patient), counts expanded to a dense (resamples x ECGs) weight matrix, two cumulative sums over
every ECG and the curve metrics over every threshold."""
from __future__ import annotations

import numpy as np

from heartbeit.eval.metrics import _cluster_codes

_BOOTSTRAP_BLOCK = 4_000_000


def bootstrap_weights(labels, n_resamples: int, seed: int, clusters=None):
    """Yield blocks of bootstrap weight matrices (block, n): the number of times each ECG is drawn.

    Stratified cluster bootstrap: clusters (patients; each ECG alone when `clusters` is None) are split
    into those with any positive ECG and those without, and each stratum is resampled with replacement
    to its own size. A multinomial draw of counts is exactly "draw with replacement" and is vectorised."""
    y = np.asarray(labels).astype(np.int8)
    n = len(y)
    codes = _cluster_codes(clusters, n)
    if codes is None:
        codes = np.arange(n)
    n_clusters = int(codes.max()) + 1 if n else 0
    cluster_pos = np.bincount(codes, weights=y, minlength=n_clusters) > 0
    strata = [np.flatnonzero(cluster_pos), np.flatnonzero(~cluster_pos)]
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK // max(n, 1))
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        counts = np.zeros((b, n_clusters))
        for members in strata:
            if len(members):
                counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=b)
        yield counts[:, codes]
        done += b


def _weighted_curves(y_sorted: np.ndarray, last_of_tie: np.ndarray, W: np.ndarray):
    """Cumulative weighted TP/FP counts at each distinct threshold (scores sorted descending)."""
    tps = np.cumsum(W * y_sorted, axis=1)[:, last_of_tie]
    fps = np.cumsum(W * (1 - y_sorted), axis=1)[:, last_of_tie]
    return tps, fps


def _metrics_from_curves(tps: np.ndarray, fps: np.ndarray, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Row-wise AUROC / average precision / trapezoid AUPRC, identical to sklearn's definitions for
    integer weights (checked in the tests). Rows without both classes give NaN."""
    P, N = tps[:, -1], fps[:, -1]
    valid = (P > 0) & (N > 0)
    P_safe, N_safe = np.where(valid, P, 1.0), np.where(valid, N, 1.0)
    out = {}
    zeros = np.zeros((tps.shape[0], 1))
    recall = np.concatenate([zeros, tps / P_safe[:, None]], axis=1)
    if "auroc" in wanted:
        fpr = np.concatenate([zeros, fps / N_safe[:, None]], axis=1)
        out["auroc"] = np.trapezoid(recall, fpr, axis=1)
    if "ap" in wanted or "trapz" in wanted:
        ps = tps + fps
        # Leading thresholds carrying only zero-weight ECGs have no precision; they sit at recall 0 and,
        # like sklearn (which drops zero weights), must join the curve's (recall 0, precision 1) start.
        precision = np.concatenate([np.ones_like(zeros), np.where(ps > 0, tps / np.where(ps > 0, ps, 1.0), 1.0)], axis=1)
        d_recall = np.diff(recall, axis=1)
        if "ap" in wanted:
            out["ap"] = np.sum(d_recall * precision[:, 1:], axis=1)
        if "trapz" in wanted:
            out["trapz"] = np.sum(d_recall * (precision[:, 1:] + precision[:, :-1]) / 2.0, axis=1)
    return {k: np.where(valid, v, np.nan) for k, v in out.items()}


def bootstrap_distribution(labels, scores, *, metrics=("auroc", "ap", "trapz"), n_resamples: int = 2000,
                           seed: int = 0, clusters=None) -> dict[str, np.ndarray]:
    """Bootstrap replicates (n_resamples,) of each metric in `metrics` (subset of auroc, ap, trapz)."""
    y = np.asarray(labels).astype(np.int8)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order].astype(np.float64), s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    reps: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for W in bootstrap_weights(y, n_resamples, seed, clusters):
        tps, fps = _weighted_curves(y_sorted, last_of_tie, W[:, order])
        for name, values in _metrics_from_curves(tps, fps, tuple(metrics)).items():
            reps[name].append(values)
    return {m: np.concatenate(v) for m, v in reps.items()}


