"""The median-beat delineator: synthetic ground truth recovered, real fixtures plausible and in agreement
with the MUSE cart's own measurements."""
import numpy as np
import pytest

from heartbeit.data.synth.ecg import simulate_ecg_detailed
from heartbeit.eval.delineate import DELINEATION_FS, FEATURES, delineate, prepare

# a typical site's artefacts (heartbeit.config.synth.default_sites)
SITE = dict(noise_mv=0.02, wander_mv=0.2, powerline_mv=0.02)


def _truth_rate(sim):
    beats = sim.r_peaks_s[(sim.r_peaks_s >= 0) & (sim.r_peaks_s < 10)]
    return 60.0 / float(np.median(np.diff(beats)))


def test_synthetic_ground_truth_recovered():
    """Tolerances (per record / mean bias): HR 5 bpm; QRS 15 / 10 ms; QT 35 / 15 ms; PR 35 / 20 ms; axis
    35 deg (the truth is the R vector's angle, the measure the net QRS area, which q and S also move).
    The PR reads ~13 ms short because the P onset threshold (10 % of the P peak) sits at 2.15 sigma of the
    Gaussian P wave while the generator calls 2.5 sigma its onset."""
    errors = {"qrs": [], "qt": [], "pr": []}
    n_p = 0
    seeds = range(16)
    for seed in seeds:
        sim = simulate_ecg_detailed(seed, fs=500, **SITE)
        d = delineate(prepare(sim.signals, sim.fs))
        f, m = d.features, sim.measurements
        assert abs(f["heart_rate_bpm"] - _truth_rate(sim)) <= 5
        errors["qrs"].append(f["qrs_ms"] - m["QRSDuration"])
        errors["qt"].append(f["qt_ms"] - m["QTInterval"])
        assert abs(f["qtc_bazett_ms"] - f["qt_ms"] / np.sqrt(60.0 / f["heart_rate_bpm"])) < 1e-6  # Bazett
        assert abs((f["qrs_axis_deg"] - m["RAxis"] + 180) % 360 - 180) <= 35, seed
        # the fiducials are relative to the R peak, like the generator's
        assert abs(d.qrs_onset_s - sim.qrs_onset_s) <= 0.035 and abs(d.qrs_offset_s - sim.j_point_s) <= 0.03
        assert abs(d.t_end_s - sim.t_end_s) <= 0.035
        if np.isfinite(f["pr_ms"]):
            n_p += 1
            errors["pr"].append(f["pr_ms"] - m["PRInterval"])
            assert abs(d.p_onset_s - sim.p_onset_s) <= 0.04
    assert n_p >= 0.9 * len(seeds)  # sinus rhythm: the P wave is found
    for key, per_record, bias in (("qrs", 15, 10), ("qt", 35, 15), ("pr", 35, 20)):
        e = np.asarray(errors[key])
        assert np.abs(e).max() <= per_record, (key, e)
        assert abs(e.mean()) <= bias, (key, e.mean())


def test_amplitudes_follow_the_signal():
    sim = simulate_ecg_detailed(3, fs=500)
    d = delineate(prepare(sim.signals, sim.fs))
    f = d.features
    assert f["sokolow_lyon_mv"] == pytest.approx(f["s_V1_mv"] + max(f["r_V5_mv"], f["r_V6_mv"]))
    # doubling the voltage doubles every amplitude (and leaves the intervals alone)
    d2 = delineate(prepare(2 * sim.signals, sim.fs))
    for k in FEATURES:
        if k.endswith("_mv"):
            assert d2.features[k] == pytest.approx(2 * f[k], rel=0.02, abs=0.01), k
        elif k != "qrs_axis_deg":
            assert d2.features[k] == pytest.approx(f[k], abs=4), k
    # V1 is rS, V5 qR: the delineator sees the S in V1 deeper than its R, and the opposite in V5
    assert f["s_V1_mv"] > f["r_V1_mv"] and f["r_V5_mv"] > f["s_V5_mv"]


def test_unmeasurable_records_are_nan_with_a_reason():
    flat = np.zeros((12, 5000), dtype=np.float32)
    d = delineate(flat, DELINEATION_FS)
    assert all(np.isnan(v) for v in d.features.values())
    assert set(d.reasons) == set(FEATURES) and "beats" in d.reasons["heart_rate_bpm"]
    assert "finite" in delineate(np.full((12, 5000), np.nan)).reasons["qrs_ms"]


def _read(path):
    from heartbeit.data.ingest.muse import read_muse
    from heartbeit.data.ingest.wfdb_io import read_wfdb

    return read_muse(path) if path.suffix == ".xml" else read_wfdb(path)


def test_real_muse_agrees_with_the_cart(ecg_fixtures):
    """Against GE MUSE's own measurement block: rate 5 bpm, PR 20 ms, QRS 15 ms, QT 40 ms (our T end is
    the trapezium-area point, typically 5-20 ms earlier than 12SL's), axis 15 deg."""
    files = sorted((ecg_fixtures / "muse_xml").glob("*.xml"))
    assert len(files) == 3
    for path in files:
        rec = _read(path)
        cart = rec.meta["measurements"]
        f = delineate(prepare(rec.signals, rec.fs)).features
        assert abs(f["heart_rate_bpm"] - cart["ventricular_rate"]) <= 5, path.name
        assert abs(f["pr_ms"] - cart["pr_interval_ms"]) <= 20, path.name
        assert abs(f["qrs_ms"] - cart["qrs_duration_ms"]) <= 15, path.name
        assert abs(f["qt_ms"] - cart["qt_interval_ms"]) <= 40, path.name
        assert abs(f["qrs_axis_deg"] - cart["r_axis"]) <= 15, path.name


def test_real_wfdb_plausible(ecg_fixtures):
    """CinC 2021 / PTB-XL records: every feature physiologically plausible; an AF record has no PR."""
    names = ["ptbxl/00001_lr", "cinc2021/E07500", "cinc2021/E07506", "cinc2021/HR06004", "cinc2021/JS20011"]
    for name in names:
        rec = _read(ecg_fixtures / "wfdb" / f"{name}.hea")
        f = delineate(prepare(rec.signals, rec.fs)).features
        assert 40 <= f["heart_rate_bpm"] <= 140, name
        assert 60 <= f["qrs_ms"] <= 130, name
        assert 280 <= f["qt_ms"] <= 480 and 340 <= f["qtc_bazett_ms"] <= 480, name
        assert -60 <= f["qrs_axis_deg"] <= 120, name
        assert 0.5 <= f["sokolow_lyon_mv"] <= 5.0, name
        if name != "cinc2021/JS20011":  # sinus tachycardia with premature atrial beats: P may be lost
            assert 100 <= f["pr_ms"] <= 220, name
    # JS00001: atrial fibrillation (SNOMED 164889003 in its header) - no P wave, so no PR
    rec = _read(ecg_fixtures / "wfdb" / "cinc2021" / "JS00001.hea")
    assert "164889003" in rec.meta["dx_codes"]
    d = delineate(prepare(rec.signals, rec.fs))
    assert np.isnan(d.features["pr_ms"]) and "P wave" in d.reasons["pr_ms"]
    assert np.isfinite(d.features["qrs_ms"])


def test_tall_t_waves_are_not_counted_as_beats():
    """A low-voltage QRS (here: the generator's QRS scaled to 35 %) with a normal T at a slow rate: the T
    waves' envelope peaks pass the height test and must be recognised as T waves, not beats."""
    for seed in (0, 3):
        sim = simulate_ecg_detailed(seed, fs=500, heart_rate=48.0)
        x = sim.signals.copy()
        for r in sim.r_peaks_s:
            a, b = int((r + sim.qrs_onset_s - 0.01) * 500), int((r + sim.j_point_s + 0.01) * 500)
            if b > 0 and a < x.shape[1]:
                x[:, max(a, 0):min(b, x.shape[1])] *= 0.35
        d = delineate(prepare(x, 500.0))
        assert abs(d.features["heart_rate_bpm"] - _truth_rate(sim)) <= 3, seed
