"""ECG delineation on the median beat: heart rate, PR, QRS, QT/QTc, frontal QRS axis and lead amplitudes.

Why our own and not `neurokit2.ecg_delineate` (not installed, not compared here): its DWT delineator
reads one lead at a time and beat by beat, while global intervals are defined over all leads on a median
beat - the way clinical carts (GE 12SL, Glasgow) measure them and what the MUSE fixtures report, which this
delineator is tested against (tests/unit/test_delineate.py). It needs scipy only and a few milliseconds per ECG.

Method (input: a 12-lead record already through `heartbeit.data.signal.preprocess`; its median-filter
baseline leaves the isoelectric line near but not at zero, so levels below are taken from the beat itself):

1. Beats. The spatial velocity v(t) = sqrt(sum over the eight independent leads (I, II, V1..V6) of
   (dx/dt)^2), smoothed over 40 ms, is a QRS-energy envelope; its peaks (`scipy.signal.find_peaks`, at
   least 250 ms apart, above 30 % of its 99.5th percentile, and not a much lower peak within 450 ms of a
   beat: a T wave) are the beats. Each beat is then shifted by up to +-20 ms to best match the first
   median beat over the QRS (cross-correlation), so that the median is sharp.
2. Heart rate = 60 / median RR over all detected beats.
3. The median beat (all 12 leads, 450 ms before to 700 ms after the fiducial) of the beats whose window fits.
4. QRS onset/offset: from the peak of the median beat's spatial velocity, walk out until the velocity falls
   below `QRS_VELOCITY_FRACTION` of that peak (the global multi-lead QRS, as in the CSE convention: earliest
   onset and latest end over leads). The R peak (the fiducial every time below is relative to) is the
   maximum of the spatial magnitude between them. The isoelectric level of each lead is its mean over
   10..30 ms before QRS onset (the PR segment); P, T and amplitudes are measured relative to it.
5. T end: the T peak is the maximum of the spatial magnitude from J + 60 ms up to a rate-bound limit (a
   QTc of `QTC_MAX_S`, and before the next beat); the leads are projected on the direction of the T peak
   (a signed "T lead": noise averages out instead of adding to a magnitude) and T end is the trapezium-area
   point (Zhang et al. 2005) between the steepest descent and `T_REFERENCE_S` later - a method that needs
   no baseline level.
6. P onset: the P peak is the maximum of the spatial magnitude from max(QRS onset - 300 ms, the previous
   beat's T end) to QRS onset - 40 ms, projected like T; its baseline is the median of that projection
   80..160 ms before the peak. The P wave is present if it exceeds `P_MIN_MV` and `P_SNR` times the beat's
   high-frequency noise, and is not a weak wave in an irregular rhythm (atrial fibrillation: no P, so PR is
   NaN). P onset: walking left from the P peak (at most 120 ms) until the projection falls to
   `P_ONSET_FRACTION` of the P amplitude.
7. QT = T end - QRS onset; QTc by Bazett (QT / sqrt(RR in s)), the convention of most carts and of the
   reference ranges in heartbeit/eval/realism.py.
8. Frontal QRS axis = atan2(net QRS area in aVF, net QRS area in I), areas over QRS onset..offset relative
   to the isoelectric level.
9. Amplitudes relative to that level: R = the largest positive deflection in the QRS, S = the deepest
   negative deflection after the R peak (the whole QRS when there is no R: a QS complex), T = the signed
   value at the T peak. Sokolow-Lyon = S(V1) + max(R(V5), R(V6)).

A feature that cannot be measured is NaN, and `reasons` says why (counted by the realism comparison).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy import signal as sps

from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX

DELINEATION_FS = 500.0  # every record is resampled to this rate by `prepare` before delineation
AMPLITUDE_LEADS = ("I", "II", "aVL", "V1", "V2", "V5", "V6")
T_LEADS = ("II", "V5")
INTERVAL_FEATURES = ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_bazett_ms", "qrs_axis_deg")
FEATURES: tuple[str, ...] = (
    INTERVAL_FEATURES
    + tuple(f"r_{lead}_mv" for lead in AMPLITUDE_LEADS)
    + tuple(f"s_{lead}_mv" for lead in AMPLITUDE_LEADS)
    + ("sokolow_lyon_mv",)
    + tuple(f"t_{lead}_mv" for lead in T_LEADS)
)

BEAT_HEIGHT, BEAT_MIN_RR_S = 0.3, 0.25
T_NEIGHBOUR_S, T_RATIO = 0.45, 0.6  # a T-wave envelope peak: this close to a beat and this much lower
PRE_S, POST_S = 0.45, 0.70  # median-beat window around the fiducial
QRS_VELOCITY_FRACTION = 0.06
QRS_MAX_HALF_S = (0.12, 0.20)  # QRS onset / end searched this far before / after the velocity peak
P_MIN_MV = 0.04  # the P peak in the P direction (the spatial P amplitude)
P_SNR = 4.0  # P peak / high-frequency noise of the median beat
P_ONSET_FRACTION = 0.1
T_MIN_MV = 0.05
QTC_MAX_S = 0.52  # longest QTc (Bazett) searched for; longer QTs are read short
T_REFERENCE_S = 0.15  # the trapezium's far corner after the steepest T descent
IRREGULAR_RR = 0.08  # median |successive RR difference| / median RR above this: irregular rhythm
_INDEPENDENT = [LEAD_INDEX[name] for name in INDEPENDENT_LEADS]


@dataclass
class Delineation:
    """Features (NaN where not measurable, with a reason) and the fiducials relative to the R peak (s)."""

    features: dict[str, float]
    reasons: dict[str, str] = field(default_factory=dict)
    n_beats: int = 0
    qrs_onset_s: float = float("nan")
    qrs_offset_s: float = float("nan")
    t_end_s: float = float("nan")
    p_onset_s: float = float("nan")


def prepare(signals_mv: np.ndarray, fs: float, render_cfg=None) -> np.ndarray:
    """The project's preprocessing (resample, median baseline, band-pass) at DELINEATION_FS: real and
    synthetic ECGs both go through exactly this before `delineate`."""
    from heartbeit.data.signal import preprocess

    return preprocess(signals_mv, fs, render_cfg, fs_out=DELINEATION_FS)


def _failed(reason: str, n_beats: int = 0) -> Delineation:
    return Delineation({k: float("nan") for k in FEATURES}, {k: reason for k in FEATURES}, n_beats)


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    return ndimage.uniform_filter1d(x, max(1, n), axis=-1, mode="nearest")


def _spatial_velocity(x: np.ndarray, fs: float) -> np.ndarray:
    d = np.gradient(x[_INDEPENDENT].astype(np.float64), axis=-1) * fs
    return np.sqrt((d * d).sum(axis=0))


def _project(ind: np.ndarray, at: int) -> np.ndarray:
    """The leads projected on their unit direction at sample `at` (a signed single "lead")."""
    u = ind[:, at] / max(float(np.linalg.norm(ind[:, at])), 1e-9)
    return u @ ind


def detect_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of the QRS complexes (peaks of the smoothed spatial velocity)."""
    env = _smooth(_spatial_velocity(x, fs), int(0.04 * fs))
    ref = float(np.percentile(env, 99.5))
    if not np.isfinite(ref) or ref <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, props = sps.find_peaks(env, height=BEAT_HEIGHT * ref, distance=int(BEAT_MIN_RR_S * fs))
    # a broad, tall T wave (low-voltage QRS, LBBB, strain) can pass the height test: a peak within
    # T_NEIGHBOUR_S of a peak more than 1 / T_RATIO times its height is that beat's T wave, not a beat
    heights = props["peak_heights"]
    keep = np.ones(peaks.size, dtype=bool)
    for i in np.argsort(-heights):
        if not keep[i]:
            continue
        near = (np.abs(peaks - peaks[i]) <= int(T_NEIGHBOUR_S * fs)) & (heights < T_RATIO * heights[i])
        keep &= ~near
    peaks = peaks[keep]
    return peaks.astype(np.int64)


def _median_beat(x: np.ndarray, peaks: np.ndarray, pre: int, post: int) -> tuple[np.ndarray, int]:
    ok = peaks[(peaks - pre >= 0) & (peaks + post <= x.shape[1])]
    if ok.size == 0:
        return np.zeros((x.shape[0], pre + post)), 0
    windows = x[:, ok[:, None] + np.arange(-pre, post)[None, :]]  # [leads, beats, width]
    return np.median(windows, axis=1), int(ok.size)


def _align(x: np.ndarray, peaks: np.ndarray, fs: float, pre: int, post: int) -> np.ndarray:
    """Shift every beat by up to 20 ms to best match the median beat's QRS (a sharper median)."""
    template, n = _median_beat(x, peaks, pre, post)
    if n < 2:
        return peaks
    half = int(0.06 * fs)
    shift = int(0.02 * fs)
    tq = template[_INDEPENDENT, pre - half:pre + half]
    out = peaks.copy()
    for i, p in enumerate(peaks):
        lo, hi = p - half - shift, p + half + shift
        if lo < 0 or hi > x.shape[1]:
            continue
        seg = x[_INDEPENDENT, lo:hi]
        scores = [float((seg[:, k:k + 2 * half] * tq).sum()) for k in range(2 * shift + 1)]
        out[i] = p + int(np.argmax(scores)) - shift
    return out


def delineate(x: np.ndarray, fs: float = DELINEATION_FS) -> Delineation:
    """Delineate one preprocessed record [12, n] (mV, LEADS order) sampled at `fs`."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != 12 or not np.isfinite(x).all():
        return _failed("not a finite 12-lead record")
    peaks = detect_beats(x, fs)
    if peaks.size < 3:
        return _failed("fewer than 3 beats detected", int(peaks.size))
    rr = np.diff(peaks) / fs
    rr_med = float(np.median(rr))
    pre, post = int(PRE_S * fs), int(POST_S * fs)
    peaks = _align(x, peaks, fs, pre, post)
    beat, n_beats = _median_beat(x, peaks, pre, post)
    if n_beats < 2:
        return _failed("fewer than 2 complete beats for a median", n_beats)
    ind = beat[_INDEPENDENT]
    feats = {k: float("nan") for k in FEATURES}
    reasons: dict[str, str] = {}
    feats["heart_rate_bpm"] = 60.0 / rr_med

    # QRS: walk out from the spatial-velocity peak near the fiducial
    vel = _smooth(_spatial_velocity(beat, fs), 3)
    near = slice(pre - int(0.06 * fs), pre + int(0.06 * fs))
    vpeak = near.start + int(np.argmax(vel[near]))
    thr = QRS_VELOCITY_FRACTION * vel[vpeak]
    on, first = vpeak, max(0, vpeak - int(QRS_MAX_HALF_S[0] * fs))
    while on > first and vel[on] >= thr:
        on -= 1
    off, last = vpeak, min(vel.size - 1, vpeak + int(QRS_MAX_HALF_S[1] * fs))
    while off < last and vel[off] >= thr:
        off += 1
    if on == first or off == last:  # the velocity never settles: no QRS boundaries to read
        return _failed("QRS boundaries not found (the QRS never returns to baseline)", n_beats)
    r_peak = on + int(np.argmax(np.sqrt((ind * ind).sum(axis=0))[on:off + 1]))
    feats["qrs_ms"] = (off - on) / fs * 1000.0
    iso_lo, iso_hi = max(0, on - int(0.03 * fs)), max(1, on - int(0.01 * fs))
    iso = beat[:, iso_lo:iso_hi].mean(axis=1)
    rel = beat - iso[:, None]
    qrs = rel[:, on:off + 1]
    # preprocessing's median baseline leaves the isoelectric line off zero (its windows see the waves):
    # P and T are measured relative to the PR-segment level, like the amplitudes
    rind = rel[_INDEPENDENT]
    mag = np.sqrt((rind * rind).sum(axis=0))

    # T end: trapezium-area method (Zhang et al. 2005) on the beat projected on the direction of the T peak
    # (a signed "T lead": noise averages out instead of adding to a magnitude). It needs no baseline level,
    # which matters because preprocessing's median baseline leaves the TP segment off the PR level.
    # search bounds from the rate: T peaks before a QT of QTC_MAX_S * sqrt(RR) and everything ends before
    # the next beat's P wave (at fast rates a small T would otherwise lose to the next P or QRS)
    qt_max = QTC_MAX_S * np.sqrt(rr_med)
    next_beat = on + int((rr_med - 0.05) * fs)
    t_stop = min(beat.shape[1] - 1, next_beat, on + int((qt_max + 0.05) * fs))
    t_peak_stop = min(next_beat - int(0.07 * fs), on + int((qt_max - 0.05) * fs))
    t_start = off + int(0.06 * fs)
    smag = _smooth(mag, int(0.02 * fs))
    noise = float(np.std(rind - _smooth(rind, int(0.02 * fs))))  # high-frequency residual per lead
    t_end = None
    if t_peak_stop - t_start > int(0.05 * fs):
        t_peak = t_start + int(np.argmax(smag[t_start:t_peak_stop]))
        proj = _smooth(_project(rind, t_peak), int(0.01 * fs))
        if proj[t_peak] > max(T_MIN_MV, 4 * noise) and t_stop > t_peak + int(0.04 * fs):
            t_m = t_peak + int(np.argmin(np.gradient(proj[t_peak:t_stop])))  # steepest descent
            t_r = min(t_stop, t_m + int(T_REFERENCE_S * fs))
            ts = np.arange(t_m, t_r + 1)
            area = 0.5 * (proj[t_m] - proj[ts]) * (2 * t_r - t_m - ts)
            k = int(ts[int(np.argmax(area))])
            if t_m < k < t_r:
                t_end = k
                for lead in T_LEADS:
                    feats[f"t_{lead}_mv"] = float(rel[LEAD_INDEX[lead], t_peak])
    if t_end is None:
        for k in ("qt_ms", "qtc_bazett_ms") + tuple(f"t_{lead}_mv" for lead in T_LEADS):
            feats[k] = float("nan")
            reasons[k] = "no T wave end found before the next beat"
    else:
        qt = (t_end - on) / fs
        feats["qt_ms"] = qt * 1000.0
        feats["qtc_bazett_ms"] = qt / np.sqrt(rr_med) * 1000.0

    # P wave and PR
    # the P search starts after the previous beat's T wave (at fast rates it sits inside 300 ms)
    prev_t_end = r_peak - int(rr_med * fs) + (t_end - r_peak if t_end is not None else int(0.6 * rr_med * fs))
    p_lo, p_hi = max(0, on - int(0.30 * fs), prev_t_end), on - int(0.04 * fs)
    p_onset = None
    if p_hi - p_lo > int(0.05 * fs):
        p_peak = p_lo + int(np.argmax(smag[p_lo:p_hi]))
        proj = _smooth(_project(rind, p_peak), int(0.01 * fs))
        # the level just before the P wave (the end of the TP segment) is its baseline
        before = proj[max(0, p_peak - int(0.16 * fs)):max(1, p_peak - int(0.08 * fs))]
        base = float(np.median(before))
        amp = float(proj[p_peak]) - base
        irregular = float(np.median(np.abs(np.diff(rr)))) / rr_med > IRREGULAR_RR if rr.size > 2 else False
        if amp >= max(P_MIN_MV, P_SNR * noise) and not (irregular and amp < 2 * P_MIN_MV):
            k, stop = p_peak, max(0, p_peak - int(0.12 * fs))
            while k > stop and proj[k] > base + P_ONSET_FRACTION * amp:
                k -= 1
            p_onset = k
    if p_onset is None:
        reasons["pr_ms"] = "no P wave (atrial fibrillation, flutter, or too noisy)"
    else:
        feats["pr_ms"] = (on - p_onset) / fs * 1000.0

    # axis from net areas; amplitudes
    area_i, area_avf = qrs[LEAD_INDEX["I"]].sum(), qrs[LEAD_INDEX["aVF"]].sum()
    feats["qrs_axis_deg"] = float(np.degrees(np.arctan2(area_avf, area_i)))
    for lead in AMPLITUDE_LEADS:
        seg = qrs[LEAD_INDEX[lead]]
        r_idx = int(np.argmax(seg))
        r = max(0.0, float(seg[r_idx]))
        feats[f"r_{lead}_mv"] = r
        feats[f"s_{lead}_mv"] = max(0.0, -float(seg[r_idx:].min() if r > 0.05 else seg.min()))
    feats["sokolow_lyon_mv"] = feats["s_V1_mv"] + max(feats["r_V5_mv"], feats["r_V6_mv"])

    def at(i):
        return float((i - r_peak) / fs)

    return Delineation(feats, reasons, n_beats, at(on), at(off), at(t_end) if t_end is not None else float("nan"),
                       at(p_onset) if p_onset is not None else float("nan"))
