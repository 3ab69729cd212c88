"""The dipole simulator: lead identities, amplitudes, rhythm, and label ground truth measured on signals."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from heartbeit.data.leads import LEAD_INDEX, LEADS, derive_limb_leads
from heartbeit.data.synth.ecg import (STEMI_TERRITORY_LEADS, injury_vector, lead_matrix, simulate_ecg,
                                  simulate_ecg_detailed)

ARTEFACTS = dict(noise_mv=0.03, wander_mv=0.3, powerline_mv=0.03)


def _beat_index(e, lo=0.6, hi=9.2):
    r = e.r_peaks_s[(e.r_peaks_s > lo) & (e.r_peaks_s < hi)]
    return np.rint(r * e.fs).astype(int)


def st_level(e, leads):
    """Mean over beats and `leads` of ST at J+60 ms relative to the PR segment (20 ms before QRS onset)."""
    idx = _beat_index(e)
    base = e.signals[:, idx + int(round((e.qrs_onset_s - 0.02) * e.fs))]
    st = e.signals[:, idx + int(round((e.j_point_s + 0.06) * e.fs))]
    return float((st - base).mean(axis=1)[[LEAD_INDEX[name] for name in leads]].mean())


def qrs_voltage(e):
    """Sum over the 12 leads of the mean QRS peak-to-peak amplitude (mV)."""
    idx = _beat_index(e)
    w = np.arange(int(round(e.qrs_onset_s * e.fs)), int(round(e.j_point_s * e.fs)) + 1)
    seg = e.signals[:, idx[:, None] + w[None, :]]
    return float((seg.max(-1) - seg.min(-1)).mean(-1).sum())


def test_shape_dtype_determinism():
    for fs in (250, 500, 1000):
        x = simulate_ecg(3, fs=fs, **ARTEFACTS)
        assert x.shape == (12, 10 * fs) and x.dtype == np.float32
        assert np.isfinite(x).all()
    assert np.array_equal(simulate_ecg(7, **ARTEFACTS), simulate_ecg(7, **ARTEFACTS))
    assert not np.array_equal(simulate_ecg(7), simulate_ecg(8))
    assert simulate_ecg(1, fs=500, duration_s=2.5).shape == (12, 1250)


@pytest.mark.parametrize("kwargs", [{}, dict(hcm=True), dict(lvef_le40=True), dict(stemi_territory="lateral")])
def test_limb_lead_identities_exact(kwargs):
    x = simulate_ecg(11, fs=500, **kwargs, **ARTEFACTS)
    i, ii = x[LEAD_INDEX["I"]], x[LEAD_INDEX["II"]]
    derived = derive_limb_leads(i, ii)  # float32 arithmetic: must match bit for bit
    for name, values in derived.items():
        assert values.dtype == np.float32
        assert np.array_equal(x[LEAD_INDEX[name]], values), name


def test_limb_identities_within_one_step_after_int16():
    x = simulate_ecg(5, **ARTEFACTS).astype(np.float64) * 1000.0  # microvolts
    step = 4.88
    q = np.rint(x / step).astype(np.int16).astype(np.int64)
    i, ii = q[LEAD_INDEX["I"]], q[LEAD_INDEX["II"]]
    assert np.abs(q[LEAD_INDEX["III"]] - (ii - i)).max() <= 1
    assert np.abs(q[LEAD_INDEX["aVF"]] - (ii - i / 2)).max() <= 1
    assert np.abs(q[LEAD_INDEX["aVR"]] + (i + ii) / 2).max() <= 1


def test_lead_matrix_obeys_the_formulas():
    m = lead_matrix()
    i, ii = m[LEAD_INDEX["I"]], m[LEAD_INDEX["II"]]
    np.testing.assert_allclose(m[LEAD_INDEX["III"]], ii - i)
    np.testing.assert_allclose(m[LEAD_INDEX["aVL"]], i - ii / 2)


def test_realistic_amplitudes_and_rhythm():
    r_v5, spans = [], []
    for seed in range(20):
        e = simulate_ecg_detailed(seed)
        v5 = e.signals[LEAD_INDEX["V5"]]
        r_v5.append(v5.max())
        spans.append(np.abs(e.signals).max())
        m = e.measurements
        assert 40 <= m["VentricularRate"] <= 130
        assert 70 <= m["QRSDuration"] <= 115
        assert 110 <= m["PRInterval"] <= 220
        # rates up to 125 bpm (tuned against real ECGs, see README "How realistic"): QT shortens with rate,
        # QTc (Bazett) stays normal
        assert 280 <= m["QTInterval"] <= 460
        assert 360 <= m["QTCorrected"] <= 470
    assert 0.8 <= np.median(r_v5) <= 2.2
    assert max(spans) < 4.0
    # V1 is mostly negative (rS), V5 mostly positive (qR)
    e = simulate_ecg_detailed(0)
    assert e.signals[LEAD_INDEX["V1"]].min() < -0.5 < e.signals[LEAD_INDEX["V5"]].max()


def test_heart_rate_and_variability():
    e = simulate_ecg_detailed(2, heart_rate=60.0)
    r = e.r_peaks_s[(e.r_peaks_s >= 0) & (e.r_peaks_s < 10)]
    assert 9 <= r.size <= 11
    rr = np.diff(r)
    assert abs(rr.mean() - 1.0) < 0.05
    assert rr.std() > 0.005  # not a metronome


@pytest.mark.parametrize("territory", sorted(STEMI_TERRITORY_LEADS))
def test_st_elevation_separates_stemi(territory):
    leads = STEMI_TERRITORY_LEADS[territory]
    rng = np.random.default_rng(0)
    n = 30
    normal = [st_level(simulate_ecg_detailed(1000 + i, severity=rng.uniform(0.3, 1.0)), leads) for i in range(n)]
    stemi = [st_level(simulate_ecg_detailed(2000 + i, stemi_territory=territory,
                                            severity=rng.uniform(0.3, 1.0)), leads) for i in range(n)]
    assert roc_auc_score([0] * n + [1] * n, normal + stemi) > 0.9
    assert np.median(stemi) - np.median(normal) > 0.05
    # graded by severity: the same ECG at full severity has more elevation than at 0.3
    assert st_level(simulate_ecg_detailed(5, stemi_territory=territory, severity=1.0), leads) > \
        st_level(simulate_ecg_detailed(5, stemi_territory=territory, severity=0.3), leads) + 0.03


def test_reciprocal_depression():
    base = simulate_ecg_detailed(9)
    inferior = simulate_ecg_detailed(9, stemi_territory="inferior")
    lateral = simulate_ecg_detailed(9, stemi_territory="lateral")
    assert st_level(inferior, ["aVL"]) < st_level(base, ["aVL"]) - 0.05
    assert st_level(lateral, ["III", "aVF"]) < st_level(base, ["III", "aVF"]) - 0.05
    # the injury vector is scaled so its mean territory elevation is the requested one
    for territory, leads in STEMI_TERRITORY_LEADS.items():
        proj = lead_matrix() @ injury_vector(territory, 0.25)
        assert proj[[LEAD_INDEX[n] for n in leads]].mean() == pytest.approx(0.25)


def test_qrs_voltage_separates_hcm_and_low_ef():
    rng = np.random.default_rng(1)
    n = 30
    normal = [qrs_voltage(simulate_ecg_detailed(1000 + i)) for i in range(n)]
    hcm = [qrs_voltage(simulate_ecg_detailed(3000 + i, hcm=True, severity=rng.uniform(0.3, 1))) for i in range(n)]
    low = [qrs_voltage(simulate_ecg_detailed(4000 + i, lvef_le40=True, severity=rng.uniform(0.3, 1)))
           for i in range(n)]
    # graded effects in the right direction that overlap normal variation (no single feature gives the label away)
    assert 0.7 < roc_auc_score([0] * n + [1] * n, normal + hcm) < 0.99
    assert 0.7 < roc_auc_score([1] * n + [0] * n, normal + low) < 0.99  # lower voltage
    assert np.median(hcm) > np.median(normal) > np.median(low)


def test_label_morphology_details():
    normal = simulate_ecg_detailed(21)
    low = simulate_ecg_detailed(21, lvef_le40=True)
    hcm = simulate_ecg_detailed(21, hcm=True)
    assert low.measurements["QRSDuration"] > normal.measurements["QRSDuration"] + 15  # wider QRS
    # deep narrow Q before the R peak in the lateral and inferior leads
    idx = _beat_index(hcm)
    pre = np.arange(int(-0.045 * hcm.fs), 0)
    for lead in ("I", "V6", "aVF"):
        q_h = hcm.signals[LEAD_INDEX[lead]][idx[:, None] + pre].min(axis=1).mean()
        q_n = normal.signals[LEAD_INDEX[lead]][idx[:, None] + pre].min(axis=1).mean()
        assert q_h < q_n - 0.1, lead
    # repolarisation: T inverted in V5/V6 at full severity
    t_peak = idx + int(0.26 * hcm.fs)
    assert hcm.signals[LEAD_INDEX["V6"], t_peak].mean() < 0 < normal.signals[LEAD_INDEX["V6"], t_peak].mean()
    # poor R-wave progression: smaller R in V3 relative to V6
    def r_v3(e):
        idx = _beat_index(e)
        w = np.arange(int(round(e.qrs_onset_s * e.fs)), int(round(e.j_point_s * e.fs)) + 1)
        r = e.signals[:, idx[:, None] + w[None, :]].max(axis=-1).mean(axis=-1)
        return r[LEAD_INDEX["V3"]] / r[LEAD_INDEX["V6"]]

    non_lbbb = next(s for s in range(50) if not simulate_ecg_detailed(s, lvef_le40=True, severity=0.8).lbbb)
    assert r_v3(simulate_ecg_detailed(non_lbbb, lvef_le40=True, severity=0.8)) < r_v3(simulate_ecg_detailed(non_lbbb))


def test_lbbb_like_pattern_occurs_and_is_broad():
    lbbb = [simulate_ecg_detailed(s, lvef_le40=True, severity=1.0) for s in range(40)]
    found = [e for e in lbbb if e.lbbb]
    assert 3 <= len(found) <= 30
    assert all(e.measurements["QRSDuration"] >= 120 for e in found)  # the LBBB width criterion


def test_bad_arguments():
    with pytest.raises(ValueError, match="stemi_territory"):
        simulate_ecg(0, stemi_territory="posterior")
    with pytest.raises(ValueError):
        simulate_ecg(0, fs=0)
    assert LEADS[0] == "I"


def test_stemi_st_floor_raises_weak_elevations_only():
    from heartbeit.data.synth.ecg import simulate_ecg_detailed

    weak = simulate_ecg_detailed(3, fs=250, stemi_territory="anterior", severity=0.0)
    assert weak.st_mv < 0.12
    floored = simulate_ecg_detailed(3, fs=250, stemi_territory="anterior", severity=0.0, stemi_st_min_mv=0.12)
    assert floored.st_mv == 0.12
    # a floor below the drawn elevation changes nothing, bit for bit (the random stream is untouched)
    low = simulate_ecg_detailed(3, fs=250, stemi_territory="anterior", severity=0.0, stemi_st_min_mv=0.01)
    assert np.array_equal(low.signals, weak.signals)
    # no STEMI, no elevation, whatever the floor
    assert simulate_ecg_detailed(3, fs=250, stemi_st_min_mv=0.2).st_mv == 0.0


def test_disease_twin_shares_beats_and_artefacts():
    """Label effects draw from their own stream: an ECG and the same ECG without the disease have the same
    beats and noise, so their difference is the disease alone (bench/render_choice.py relies on it)."""
    kw = dict(fs=250, noise_mv=0.02, wander_mv=0.2, powerline_mv=0.02)
    for label in (dict(stemi_territory="inferior"), dict(hcm=True), dict(lvef_le40=True)):
        sick, twin = simulate_ecg_detailed(11, **label, **kw), simulate_ecg_detailed(11, **kw)
        assert np.array_equal(sick.r_peaks_s, twin.r_peaks_s), label
    sick, twin = simulate_ecg_detailed(11, stemi_territory="inferior", **kw), simulate_ecg_detailed(11, **kw)
    idx = _beat_index(sick)
    pr = idx + int(round((sick.qrs_onset_s - 0.03) * sick.fs))
    assert np.abs(sick.signals[:, pr] - twin.signals[:, pr]).max() < 1e-3  # no change over the PR segment


def test_normal_st_variant_overlaps_mild_anterior_stemi():
    """Benign anterior J-point elevation in healthy ECGs reaches the range of mild anterior STEMI, so ST level in
    V1-V3 alone cannot separate them; STEMI ECGs still have more on average."""
    leads = ("V1", "V2", "V3")
    normal = [st_level(simulate_ecg_detailed(6000 + i), leads) for i in range(60)]
    stemi = [st_level(simulate_ecg_detailed(7000 + i, stemi_territory="anterior", severity=0.0), leads)
             for i in range(60)]
    assert np.quantile(normal, 0.9) > np.quantile(stemi, 0.1)
    assert np.median(stemi) > np.median(normal)
