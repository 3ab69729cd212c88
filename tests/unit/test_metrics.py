"""Metrics: DeLong vs sklearn and bootstrap, vectorised bootstrap vs sklearn, paired test, calibration,
degenerate inputs, one cell's metric rows."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import auc, average_precision_score, brier_score_loss, precision_recall_curve, roc_auc_score

from heartbeit.eval import cell_scoring as CS
from heartbeit.eval import metrics as M
from helpers.synthetic_cells import make_predictions


def synthetic(n=2000, prevalence=0.2, shift=1.0, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    s = rng.normal(size=n) + shift * y
    if decimals is not None:
        s = np.round(s, decimals)  # ties
    return y, s


def test_delong_auc_equals_sklearn_with_ties():
    y, s = synthetic(decimals=1)
    aucs, cov = M.delong_covariance(y, s)
    assert aucs[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auroc(y, s).value == roc_auc_score(y, s)
    assert cov.shape == (1, 1) and cov[0, 0] > 0


def test_delong_ci_matches_bootstrap():
    y, s = synthetic()
    r = M.auroc(y, s)
    reps = M.bootstrap_distribution(y, s, metrics=("auroc",), n_resamples=2000, seed=1)["auroc"]
    low, high, reason = M.percentile_interval(reps)
    assert reason == ""
    assert abs(r.low - low) < 0.01 and abs(r.high - high) < 0.01
    assert r.low < r.value < r.high


def test_clustered_delong_widens_with_repeated_patients_and_matches_cluster_bootstrap():
    # 400 patients x 5 ECGs each, labels and scores shared strongly within a patient.
    rng = np.random.default_rng(3)
    patient = np.repeat(np.arange(400), 5)
    y = np.repeat((rng.random(400) < 0.25).astype(int), 5)
    s = np.repeat(rng.normal(size=400), 5) + 0.3 * rng.normal(size=2000) + 1.0 * y
    plain = M.auroc(y, s)
    clustered = M.auroc(y, s, clusters=patient)
    assert clustered.value == plain.value
    assert clustered.high - clustered.low > 1.5 * (plain.high - plain.low)
    reps = M.bootstrap_distribution(y, s, metrics=("auroc",), n_resamples=2000, seed=0, clusters=patient)["auroc"]
    low, high, _ = M.percentile_interval(reps)
    assert abs(clustered.low - low) < 0.015 and abs(clustered.high - high) < 0.015


def test_singleton_clusters_equal_plain_delong():
    y, s = synthetic(n=500)
    assert M.auroc(y, s, clusters=np.arange(500)) == M.auroc(y, s)


@pytest.mark.parametrize("decimals,clustered", [(None, False), (1, False), (None, True), (1, True)])
def test_vectorised_bootstrap_equals_sklearn_on_resampled_data(decimals, clustered):
    y, s = synthetic(n=300, decimals=decimals, seed=5)
    clusters = np.arange(300) // 3 if clustered else None
    W = np.concatenate(list(M.bootstrap_weights(y, 6, seed=2, clusters=clusters)))
    assert W.shape == (6, 300) and np.all(W.sum(axis=1) == 300 if not clustered else W.sum(axis=1) > 0)
    got = M.bootstrap_distribution(y, s, n_resamples=6, seed=2, clusters=clusters)
    for b in range(6):  # the replicates are the metrics of exactly the data sets the weights describe
        idx = np.repeat(np.arange(300), W[b].astype(int))
        p, r, _ = precision_recall_curve(y[idx], s[idx])
        assert got["auroc"][b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
        assert got["ap"][b] == pytest.approx(average_precision_score(y[idx], s[idx]), abs=1e-12)
        assert got["trapz"][b] == pytest.approx(auc(r, p), abs=1e-12)


def test_bootstrap_resample_without_a_class_is_nan():
    # patient 0 holds a positive and the only negative, patient 1 one positive: both in the positive stratum,
    # so a resample that draws patient 1 twice has no negative and no defined metric
    y, s, clusters = np.array([1, 0, 1]), np.array([0.9, 0.2, 0.5]), np.array([0, 0, 1])
    W = np.concatenate(list(M.bootstrap_weights(y, 40, seed=3, clusters=clusters)))
    reps = M.bootstrap_distribution(y, s, n_resamples=40, seed=3, clusters=clusters)
    no_negative = (W * (1 - y)).sum(axis=1) == 0
    assert 0 < no_negative.sum() < 40
    for name in ("auroc", "ap", "trapz"):
        assert np.array_equal(np.isnan(reps[name]), no_negative)


def test_bootstrap_is_seeded_and_stratified():
    y, s = synthetic(n=200, prevalence=0.05)
    a = M.auprc(y, s, n_resamples=300, seed=7)
    assert a == M.auprc(y, s, n_resamples=300, seed=7)
    assert a != M.auprc(y, s, n_resamples=300, seed=8)
    # stratified: every resample keeps the number of positive (clusters) fixed
    for W in M.bootstrap_weights(y, 50, seed=0):
        assert np.all((W * y).sum(axis=1) == y.sum())


def test_auprc_forms():
    y, s = synthetic()
    p, r, _ = precision_recall_curve(y, s)
    trapz = M.auprc(y, s, kind="trapz", n_resamples=500)
    ap = M.auprc(y, s, kind="ap", n_resamples=0)
    assert trapz.value == pytest.approx(auc(r, p)) and trapz.low < trapz.value < trapz.high
    assert ap.value == pytest.approx(average_precision_score(y, s)) and math.isnan(ap.low)
    with pytest.raises(ValueError):
        M.auprc(y, s, kind="roc")


def test_paired_delong_rejects_different_and_not_identical():
    y, s = synthetic()
    rng = np.random.default_rng(9)
    worse = s + rng.normal(scale=2.0, size=len(s))
    r = M.paired_delong(y, s, worse)
    assert r.p < 1e-6 and r.delta > 0.05 and r.low > 0 and r.reason == ""
    same = M.paired_delong(y, s, s)
    assert same.p == 1.0 and same.delta == 0.0 and same.reason == "identical_rankings"
    # a monotone transform ranks identically: same decision
    assert M.paired_delong(y, s, np.exp(s)).p == 1.0
    # two similar models on the same ECGs: not rejected
    a, b = s + rng.normal(scale=0.3, size=len(s)), s + rng.normal(scale=0.3, size=len(s))
    assert M.paired_delong(y, a, b).p > 0.05


@pytest.mark.parametrize("labels,scores,reason", [
    ([0] * 20, np.linspace(0, 1, 20), "one_class"),
    ([1] * 20, np.linspace(0, 1, 20), "one_class"),
    ([0, 1] * 10, [0.5] * 19 + [np.nan], "nonfinite_scores"),
    ([0, 1] * 10, [0.5] * 19 + [np.inf], "nonfinite_scores"),
    ([0, 1, 0], [0.1, 0.9, 0.2], "too_few"),
    ([0, 2] * 10, np.linspace(0, 1, 20), "labels_not_binary"),
    ([], [], "too_few"),
])
def test_degenerate_inputs_give_nan_with_reason(labels, scores, reason):
    for r in (M.auroc(labels, scores), M.auprc(labels, scores, n_resamples=50), M.auprc(labels, scores, kind="ap")):
        assert math.isnan(r.value) and math.isnan(r.low) and r.reason.startswith(reason) and not r.ok
    p = M.paired_delong(labels, scores, scores)
    assert math.isnan(p.p) and p.reason.startswith(reason)


def test_ci_undefined_but_value_kept():
    y = [1] + [0] * 19
    s = np.linspace(0, 1, 20)
    r = M.auroc(y, s)
    assert r.value == roc_auc_score(y, s) and math.isnan(r.low) and r.reason.startswith("ci_undefined")
    perfect = M.auroc([0] * 10 + [1] * 10, np.arange(20))
    assert perfect.value == 1.0 and perfect.reason.startswith("ci_undefined")


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        M.auroc([0, 1], [0.1])


def test_calibration():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # calibrated by construction
    assert M.brier(y, p).value == pytest.approx(brier_score_loss(y, p))
    assert M.ece(y, p).value < 0.02
    over = np.clip(p * 0.5 + 0.5, 0, 1)  # overconfident: predicts far too high
    assert M.ece(y, over).value > 0.2
    curve = M.reliability_curve(y, p, n_bins=10)
    assert len(curve) == 10 and curve["n"].sum() == 20000
    assert np.allclose(curve["frac_pos"], curve["mean_score"], atol=0.03)
    assert (curve["frac_pos_low"] <= curve["frac_pos"]).all() and (curve["frac_pos"] <= curve["frac_pos_high"]).all()
    # ECE by hand on a tiny example: bins [0,.5) and [.5,1]
    e = M.ece([0, 0, 1, 1, 1, 0, 0, 0, 0, 0], [0.1, 0.2, 0.9, 1.0, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1], n_bins=2)
    assert e.value == pytest.approx((6 * abs(0 - 0.7 / 6) + 4 * abs(3 / 4 - 3.2 / 4)) / 10)
    bad = M.brier([0, 1] * 10, np.linspace(-1, 2, 20))
    assert math.isnan(bad.value) and bad.reason.startswith("scores_not_probabilities")
    assert M.brier([0] * 20, np.full(20, 0.1)).value == pytest.approx(0.01)  # defined for one class


def test_aggregate():
    df = pd.DataFrame({"arch": ["a", "a", "a", "b"], "auroc": [0.7, 0.8, np.nan, 0.6]})
    agg = M.aggregate(df, ["arch"], ["auroc"]).set_index("arch")
    assert agg.loc["a", "auroc_mean"] == pytest.approx(0.75) and agg.loc["a", "auroc_count"] == 2
    assert agg.loc["a", "auroc_sd"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert agg.loc["a", "n_runs"] == 3
    assert math.isnan(agg.loc["b", "auroc_sd"]) and agg.loc["b", "auroc_min"] == 0.6


def test_cell_metrics_rows():
    preds = make_predictions("stemi", "heartbeit", 0.1, seed=0)
    rows = CS.cell_metrics(preds, n_resamples=200)
    keys = [(r["split"], r["site"]) for r in rows]
    assert keys == [("external", "all"), ("test", "all"), ("test", "site_a"), ("test", "site_b")]
    internal = rows[1]
    part = preds[preds["split"] == "test"]
    assert internal["eval_set"] == "internal" and internal["n"] == len(part)
    assert internal["n_pos"] == part["label"].sum()
    assert internal["auroc"] == pytest.approx(roc_auc_score(part["label"], part["score"]))
    assert internal["auroc_ci_method"] == "delong_clustered"  # synthetic patients repeat
    for k in ("auroc", "auprc_ap", "auprc_trapz"):
        assert internal[f"{k}_low"] < internal[k] < internal[f"{k}_high"]
    assert 0 < internal["brier"] < 1 and 0 <= internal["ece"] < 1 and internal["reasons"] == ""
    assert CS.cell_metrics(preds, n_resamples=200) == rows  # deterministic


def test_cell_metrics_degenerate_set_and_bad_columns():
    preds = make_predictions("stemi", "resnet", 1.0, seed=0)
    preds.loc[preds["split"] == "external", "label"] = 0
    ext = CS.cell_metrics(preds, n_resamples=50)[0]
    assert ext["split"] == "external" and math.isnan(ext["auroc"]) and math.isnan(ext["auprc_trapz"])
    assert "one_class" in ext["reasons"] and math.isfinite(ext["brier"])
    with pytest.raises(ValueError, match="lack columns"):
        CS.cell_metrics(preds.drop(columns=["score"]))
    with pytest.raises(ValueError, match="unknown split"):
        CS.cell_metrics(preds.assign(split="train"))


def test_subgroup_metrics_flags_small_groups():
    preds = make_predictions("hcm", "vit", 1.0, seed=0, n_test=120, n_external=60)
    rows = CS.subgroup_metrics(preds, min_per_class=10)
    assert {r["subgroup"] for r in rows} == {"site", "sex", "age_band"}
    for r in rows:
        assert r["too_small"] == (r["n_pos"] < 10 or r["n_neg"] < 10)
    assert any(r["too_small"] for r in rows) and any(not r["too_small"] for r in rows)
    assert not any(r["subgroup"] == "sex" for r in CS.subgroup_metrics(preds.drop(columns=["sex"])))
