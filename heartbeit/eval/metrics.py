"""Discrimination and calibration metrics with honest uncertainty.

Everything a results table needs for one set of predictions (labels 0/1, scores = probability of class 1):

- AUROC (sklearn's `roc_auc_score`) with a DeLong 95% CI. DeLong's variance uses the fast midrank
  algorithm of Sun & Xu (2014), O(n log n). When a patient contributes several ECGs the ECGs are not
  independent, so the variance is the clustered generalisation of Obuchowski (1997) over patients; with
  one ECG per patient it reduces to DeLong. The interval is the normal (Wald) interval clipped to [0, 1].
- AUPRC in both forms: average precision (sklearn's `average_precision_score`, the step integral) and
  the paper's trapezoid `auc(recall, precision)`, with percentile CIs from a seeded, stratified cluster
  bootstrap: patients are resampled with replacement within two strata (patients with any positive
  ECG, patients without) so every resample keeps the case mix; all ECGs of a drawn patient come along.
  The bootstrap is vectorised: one shared sort, per-patient draw counts per resample, and one sparse
  product that sums them per tie group of the curve (see `_event_design`).
- A paired DeLong test of two score vectors on the same ECGs (z, two-sided p, CI of the difference).
- Calibration: Brier score (sklearn), expected calibration error over equal-width bins, reliability-curve
  data with Wilson intervals.
- Aggregation of any metric over seeds / training-subset draws (mean, sd, min, max, count).

Degenerate inputs (one class only, NaN or infinite scores, fewer than `min_n` ECGs, labels outside
{0, 1}) never raise and never produce a number: the value is NaN and `reason` says why.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import auc, average_precision_score, brier_score_loss, precision_recall_curve, roc_auc_score

MIN_N = 10  # fewer ECGs than this: no metric at all
NAN = float("nan")
# Elements of the (resamples x ECGs) weight matrix processed at once by the bootstrap (~32 MB of float64).
_BOOTSTRAP_BLOCK = 4_000_000


@dataclass(frozen=True)
class MetricResult:
    """A point estimate with an optional interval. `reason` is empty when the value is valid; when the
    value (or only its interval) could not be computed it says why, and the missing numbers are NaN."""

    value: float
    low: float = NAN
    high: float = NAN
    reason: str = ""

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value)


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of two classifiers on the same ECGs: delta = AUROC(a) - AUROC(b)."""

    auc_a: float
    auc_b: float
    delta: float
    low: float
    high: float
    z: float
    p: float
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- input


def check_binary(labels, scores, min_n: int = MIN_N) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate one labels/scores pair. Returns (labels as int8, scores as float64, reason); reason is
    empty when the pair can be scored. Length mismatch is a programming error and raises."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    n = len(y)
    if n and not np.all(np.isin(y, (0, 1))):
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        return y, s, f"labels_not_binary: values {bad.tolist()} outside {{0, 1}}"
    y = y.astype(np.int8)
    n_bad = int(np.count_nonzero(~np.isfinite(s)))
    if n_bad:
        return y, s, f"nonfinite_scores: {n_bad} of {n} scores are NaN or infinite"
    if n < min_n:
        return y, s, f"too_few: n={n} < {min_n}"
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        return y, s, f"one_class: n_pos={n_pos}, n_neg={n - n_pos}"
    return y, s, ""


def _cluster_codes(clusters, n: int) -> np.ndarray | None:
    """Integer cluster codes 0..C-1, or None when every ECG is its own cluster."""
    if clusters is None:
        return None
    codes, uniques = pd.factorize(pd.Series(np.asarray(clusters, dtype=object)), use_na_sentinel=False)
    if len(codes) != n:
        raise ValueError(f"clusters must have one entry per ECG ({n}), got {len(codes)}")
    if len(uniques) == n:
        return None
    return codes.astype(np.int64)


# ---------------------------------------------------------------------------------------------- DeLong


def _structural_components(y: np.ndarray, S: np.ndarray):
    """Sun & Xu (2014) fast DeLong. S is (k classifiers, n ECGs). Returns AUCs (k,), the positives'
    components V10 (k, m) and the negatives' components V01 (k, n_neg). A positive's V10 is the fraction
    of negatives it outranks (ties count 1/2); a negative's V01 the fraction of positives above it."""
    pos, neg = y == 1, y == 0
    X, Y = S[:, pos], S[:, neg]
    m, n = X.shape[1], Y.shape[1]
    tx = stats.rankdata(X, axis=1)  # midranks within positives
    ty = stats.rankdata(Y, axis=1)
    tz = stats.rankdata(np.concatenate([X, Y], axis=1), axis=1)  # midranks in the pooled sample
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(labels, scores, clusters=None) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance matrix for k score vectors on the same ECGs.

    `scores` is (n,) or (k, n). Without clusters this is DeLong et al. (1988); with clusters (e.g. the
    patient hash) it is Obuchowski's (1997) clustered estimator, which sums components within patients.
    Inputs must already be valid (see `check_binary`)."""
    y = np.asarray(labels).astype(np.int8)
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    aucs, v10, v01 = _structural_components(y, S)
    m, n = v10.shape[1], v01.shape[1]
    codes = _cluster_codes(clusters, len(y))
    if codes is None:
        cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
        return aucs, cov
    n_clusters = int(codes.max()) + 1
    pos, neg = y == 1, y == 0
    m_i = np.bincount(codes[pos], minlength=n_clusters)
    n_i = np.bincount(codes[neg], minlength=n_clusters)
    k = S.shape[0]
    # Per-cluster sums of components, centred by (count in cluster) * AUC.
    A = np.stack([np.bincount(codes[pos], weights=v10[r], minlength=n_clusters) for r in range(k)]) - np.outer(aucs, m_i)
    B = np.stack([np.bincount(codes[neg], weights=v01[r], minlength=n_clusters) for r in range(k)]) - np.outer(aucs, n_i)
    c = n_clusters / (n_clusters - 1.0)
    cov = c * (A @ A.T / m**2 + B @ B.T / n**2 + (A @ B.T + B @ A.T) / (m * n))
    return aucs, cov


def _z(ci: float) -> float:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    return float(stats.norm.ppf(0.5 + ci / 2.0))


def auroc(labels, scores, *, ci: float = 0.95, clusters=None, min_n: int = MIN_N) -> MetricResult:
    """AUROC (sklearn) with a DeLong interval (clustered by `clusters` when given)."""
    y, s, reason = check_binary(labels, scores, min_n)
    if reason:
        return MetricResult(NAN, reason=reason)
    value = float(roc_auc_score(y, s))
    n_pos = int(y.sum())
    if n_pos < 2 or len(y) - n_pos < 2:
        return MetricResult(value, reason="ci_undefined: DeLong needs at least 2 positives and 2 negatives")
    codes = _cluster_codes(clusters, len(y))
    if codes is not None and codes.max() < 1:
        return MetricResult(value, reason="ci_undefined: a single patient")
    _, cov = delong_covariance(y, s, clusters)
    var = float(cov[0, 0])
    if not var > 1e-15:
        return MetricResult(value, reason="ci_undefined: DeLong variance is zero (perfect or constant ranking)")
    half = _z(ci) * math.sqrt(var)
    return MetricResult(value, max(0.0, value - half), min(1.0, value + half))


def paired_delong(labels, scores_a, scores_b, *, ci: float = 0.95, clusters=None,
                  min_n: int = MIN_N) -> PairedResult:
    """Paired DeLong test of H0: AUROC(a) == AUROC(b), both scored on the same ECGs in the same order.

    Identical rankings (e.g. identical score vectors) give delta = 0 with a zero-variance difference;
    there is then no evidence of a difference and the result is z = 0, p = 1 with the reason
    "identical_rankings" (not NaN: the statement "no difference" is exact). A zero-variance difference
    with a non-zero delta has no defined test and gives NaN z/p with a reason."""
    y, sa, reason = check_binary(labels, scores_a, min_n)
    _, sb, reason_b = check_binary(labels, scores_b, min_n)
    reason = reason or reason_b
    if reason:
        return PairedResult(NAN, NAN, NAN, NAN, NAN, NAN, NAN, reason)
    n_pos = int(y.sum())
    if n_pos < 2 or len(y) - n_pos < 2:
        a, b = float(roc_auc_score(y, sa)), float(roc_auc_score(y, sb))
        return PairedResult(a, b, a - b, NAN, NAN, NAN, NAN, "test_undefined: needs 2 positives and 2 negatives")
    aucs, cov = delong_covariance(y, np.stack([sa, sb]), clusters)
    a, b = float(aucs[0]), float(aucs[1])
    delta = a - b
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    scale = max(float(cov[0, 0] + cov[1, 1]), 1e-12)
    if var <= 1e-12 * scale:
        if abs(delta) < 1e-12:
            return PairedResult(a, b, 0.0, 0.0, 0.0, 0.0, 1.0, "identical_rankings")
        return PairedResult(a, b, delta, NAN, NAN, NAN, NAN, "test_undefined: zero variance of the difference")
    se = math.sqrt(var)
    z = delta / se
    p = float(2.0 * stats.norm.sf(abs(z)))
    half = _z(ci) * se
    return PairedResult(a, b, delta, delta - half, delta + half, float(z), p)


# ------------------------------------------------------------------------------- bootstrap (vectorised)


def _cluster_draws(codes: np.ndarray, y: np.ndarray, n_resamples: int, seed: int, block: int):
    """Yield blocks (b, clusters) of per-cluster draw counts of a stratified cluster bootstrap.

    Clusters are split into those with any positive ECG and those without; each stratum is resampled with
    replacement to its own size: k uniform integers below k per stratum and resample, counted with one
    bincount (exactly "draw with replacement"; ~10x quicker than numpy's multinomial, which draws one
    binomial per cluster)."""
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    cluster_pos = np.bincount(codes, weights=y, minlength=n_clusters) > 0
    strata = [np.flatnonzero(cluster_pos), np.flatnonzero(~cluster_pos)]
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        counts = np.zeros((b, n_clusters))
        for members in strata:
            k = len(members)
            if k:
                dtype = np.int32 if b * k < 2**31 else np.int64
                picks = rng.integers(0, k, size=(b, k), dtype=dtype)
                picks += (np.arange(b, dtype=dtype) * k)[:, None]
                counts[:, members] = np.bincount(picks.ravel(), minlength=b * k).reshape(b, k)
        yield counts
        done += b


def _block_rows(n: int) -> int:
    return max(1, _BOOTSTRAP_BLOCK // max(n, 1))


def bootstrap_weights(labels, n_resamples: int, seed: int, clusters=None):
    """Yield blocks of bootstrap weight matrices (block, n): the number of times each ECG is drawn (the
    stratified cluster bootstrap of `_cluster_draws`; each ECG alone is a cluster when `clusters` is None).
    `bootstrap_distribution` never expands these per ECG; this is the readable form, for tests and checks."""
    y = np.asarray(labels).astype(np.int8)
    codes = _cluster_codes(clusters, len(y))
    codes = np.arange(len(y)) if codes is None else codes
    for counts in _cluster_draws(codes, y, n_resamples, seed, _block_rows(len(y))):
        yield counts[:, codes]


def _event_design(y_sorted: np.ndarray, group: np.ndarray, codes_sorted: np.ndarray, n_clusters: int, event: int):
    """Sparse (clusters x 3T) matrix that turns per-cluster draw counts into, for each of the T tie groups
    (distinct scores, descending) holding an ECG of class `event`: that class's weight in the group (block 0),
    the other class's weight in the group (block 1), and the other class's weight in groups after the
    previous event group and before this one (block 2). Weight in groups after the last event group only
    enters the class totals. A precision-recall curve moves only at groups with positives and a ROC curve's
    area grows only at groups with negatives, so every curve metric follows from these three (b x T) sums:
    ~T ECG columns of work per resample instead of two cumulative sums and a gather over all n."""
    import scipy.sparse as sp

    event_groups = np.unique(group[y_sorted == event])
    t = len(event_groups)
    slot = np.searchsorted(event_groups, group)  # first event group at or after each ECG's group
    same = (slot < t) & (event_groups[np.minimum(slot, t - 1)] == group)
    is_event = y_sorted == event
    column = np.where(is_event, slot, np.where(same, t + slot, 2 * t + slot))
    keep = is_event | (slot < t)
    design = sp.csr_matrix((np.ones(int(keep.sum())), (codes_sorted[keep], column[keep])), shape=(n_clusters, 3 * t))
    design.sum_duplicates()
    return design, t


def _precision(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    # a threshold above every drawn ECG (tp + fp = 0) sits at the curve's (recall 0, precision 1) start
    predicted = tp + fp
    return np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1.0), 1.0)


def bootstrap_distribution(labels, scores, *, metrics=("auroc", "ap", "trapz"), n_resamples: int = 2000,
                           seed: int = 0, clusters=None) -> dict[str, np.ndarray]:
    """Bootstrap replicates (n_resamples,) of each metric in `metrics` (subset of auroc, ap, trapz), equal to
    sklearn's roc_auc_score / average_precision_score / auc(precision_recall_curve) on each resampled data
    set (checked in the tests). Rows whose resample lacks a class give NaN."""
    y = np.asarray(labels).astype(np.int8)
    s = np.asarray(scores, dtype=np.float64)
    n = len(y)
    codes = _cluster_codes(clusters, n)
    codes = np.arange(n) if codes is None else codes
    n_clusters = int(codes.max()) + 1 if n else 0
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted, codes_sorted = y[order], s[order], codes[order]
    group = np.r_[0, np.cumsum(np.diff(s_sorted) != 0)] if n else np.zeros(0, dtype=np.int64)
    per_class = np.stack([np.bincount(codes, weights=(y == c), minlength=n_clusters) for c in (1, 0)], axis=1)
    designs = {}
    if "auroc" in metrics:
        designs[0] = _event_design(y_sorted, group, codes_sorted, n_clusters, event=0)
    if "ap" in metrics or "trapz" in metrics:
        designs[1] = _event_design(y_sorted, group, codes_sorted, n_clusters, event=1)
    reps: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for counts in _cluster_draws(codes, y, n_resamples, seed, _block_rows(n)):
        P, N = (counts @ per_class).T
        valid = (P > 0) & (N > 0)
        P_safe, N_safe = np.where(valid, P, 1.0), np.where(valid, N, 1.0)
        out = {}
        for event, (design, t) in designs.items():
            sums = np.asarray(design.T @ counts.T).T  # (b, 3t): csr (3t x clusters) times the draws
            mine, other_in, other_before = sums[:, :t], sums[:, t:2 * t], sums[:, 2 * t:]
            cum_mine = np.cumsum(mine, axis=1)
            cum_other = np.cumsum(other_before + other_in, axis=1)
            if event == 0:  # ROC: each negative outranks the positives above it, half of those tied with it
                out["auroc"] = np.sum(mine * (cum_other - other_in + other_in / 2.0), axis=1) / (P_safe * N_safe)
                continue
            tp, fp = cum_mine, cum_other
            here = _precision(tp, fp)
            if "ap" in metrics:
                out["ap"] = np.sum(mine * here, axis=1) / P_safe
            if "trapz" in metrics:
                before = _precision(tp - mine, fp - other_in)  # the curve's previous point
                out["trapz"] = np.sum(mine * (here + before) / 2.0, axis=1) / P_safe
        for name in metrics:
            reps[name].append(np.where(valid, out[name], np.nan))
    return {m: np.concatenate(v) if v else np.zeros(0) for m, v in reps.items()}


def percentile_interval(replicates: np.ndarray, ci: float = 0.95, max_invalid: float = 0.05):
    """Percentile interval of bootstrap replicates; (low, high, reason)."""
    finite = replicates[np.isfinite(replicates)]
    n_bad = len(replicates) - len(finite)
    if len(replicates) == 0 or n_bad > max_invalid * len(replicates):
        return NAN, NAN, f"ci_undefined: {n_bad} of {len(replicates)} resamples lacked a class"
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    reason = f"ci_note: {n_bad} of {len(replicates)} resamples lacked a class and were dropped" if n_bad else ""
    return float(low), float(high), reason


def auprc_trapezoid(labels, scores) -> float:
    """The paper's AUPRC: trapezoid area under sklearn's precision-recall curve."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(auc(recall, precision))


def auprc(labels, scores, *, kind: str = "trapz", ci: float = 0.95, n_resamples: int = 2000, seed: int = 0,
          clusters=None, min_n: int = MIN_N) -> MetricResult:
    """AUPRC as `kind` = "trapz" (paper) or "ap" (average precision) with a bootstrap interval
    (`n_resamples` = 0: no interval)."""
    if kind not in ("trapz", "ap"):
        raise ValueError(f"kind must be 'trapz' or 'ap', got {kind!r}")
    y, s, reason = check_binary(labels, scores, min_n)
    if reason:
        return MetricResult(NAN, reason=reason)
    value = auprc_trapezoid(y, s) if kind == "trapz" else float(average_precision_score(y, s))
    if n_resamples <= 0:
        return MetricResult(value)
    reps = bootstrap_distribution(y, s, metrics=(kind,), n_resamples=n_resamples, seed=seed, clusters=clusters)
    low, high, reason = percentile_interval(reps[kind], ci)
    return MetricResult(value, low, high, reason)


# ------------------------------------------------------------------------------------------ calibration


def _check_probabilities(labels, scores, min_n):
    y, s, reason = check_binary(labels, scores, min_n)
    if not reason and (s.min() < 0.0 or s.max() > 1.0):
        reason = f"scores_not_probabilities: range [{s.min():.3g}, {s.max():.3g}] outside [0, 1]"
    if reason.startswith("one_class"):
        reason = ""  # calibration is defined for one class (e.g. an all-negative subgroup)
    return y, s, reason


def brier(labels, scores, *, min_n: int = MIN_N) -> MetricResult:
    """Brier score: mean squared error of the probability of class 1 (lower is better)."""
    y, s, reason = _check_probabilities(labels, scores, min_n)
    if reason:
        return MetricResult(NAN, reason=reason)
    return MetricResult(float(brier_score_loss(y, s, pos_label=1)))


def _bin_index(s: np.ndarray, n_bins: int) -> np.ndarray:
    # Equal-width bins [k/B, (k+1)/B); the last bin is closed so that a score of exactly 1 lands in it.
    return np.minimum((s * n_bins).astype(np.int64), n_bins - 1)


def reliability_curve(labels, scores, *, n_bins: int = 10, ci: float = 0.95, min_n: int = MIN_N) -> pd.DataFrame:
    """Reliability-diagram data over `n_bins` equal-width bins of the score: per bin its edges, ECG count,
    mean score, observed fraction of positives and its Wilson interval (NaN for empty bins). Empty frame
    when the inputs are degenerate."""
    cols = ["bin", "bin_low", "bin_high", "n", "mean_score", "frac_pos", "frac_pos_low", "frac_pos_high"]
    y, s, reason = _check_probabilities(labels, scores, min_n)
    if reason:
        return pd.DataFrame(columns=cols)
    idx = _bin_index(s, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    pos = np.bincount(idx, weights=y, minlength=n_bins)
    ssum = np.bincount(idx, weights=s, minlength=n_bins)
    rows = []
    for k in range(n_bins):
        n_k = int(counts[k])
        if n_k:
            w = stats.binomtest(int(pos[k]), n_k).proportion_ci(confidence_level=ci, method="wilson")
            rows.append([k, k / n_bins, (k + 1) / n_bins, n_k, ssum[k] / n_k, pos[k] / n_k, w.low, w.high])
        else:
            rows.append([k, k / n_bins, (k + 1) / n_bins, 0, NAN, NAN, NAN, NAN])
    return pd.DataFrame(rows, columns=cols)


def ece(labels, scores, *, n_bins: int = 10, min_n: int = MIN_N) -> MetricResult:
    """Expected calibration error: sum over equal-width score bins of (bin share of ECGs) x
    |observed fraction positive - mean score|. Binary-class form (on the probability of class 1), not
    the top-label form used for multi-class networks."""
    y, s, reason = _check_probabilities(labels, scores, min_n)
    if reason:
        return MetricResult(NAN, reason=reason)
    idx = _bin_index(s, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=n_bins) - np.bincount(idx, weights=s, minlength=n_bins))
    return MetricResult(float(gap.sum() / counts.sum()))


# ------------------------------------------------------------------------------------------ aggregation


def aggregate(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, sample sd, min, max and count of finite values of each metric over the rows of each group
    (typically: over seeds and draws of one architecture x fraction x task x evaluation set)."""
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n_runs"] = len(group)
        for m in metrics:
            v = pd.to_numeric(group[m], errors="coerce").to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            row[f"{m}_mean"] = float(v.mean()) if len(v) else NAN
            row[f"{m}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else NAN
            row[f"{m}_min"] = float(v.min()) if len(v) else NAN
            row[f"{m}_max"] = float(v.max()) if len(v) else NAN
            row[f"{m}_count"] = len(v)
        rows.append(row)
    return pd.DataFrame(rows)
