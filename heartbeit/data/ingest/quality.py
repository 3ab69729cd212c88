"""Quality gates: each check refuses a record with exactly one Reason.

Run in this order on the reader's float32 mV [12, n] signals at their native rate (order matters: a NaN
makes every later statistic meaningless; a flat lead would look like clipping):
  rate -> NaN/inf -> too short -> flat line -> clipping -> amplitude.
Then `to_corpus` crops to duration_s, resamples to corpus_fs (scipy.signal.resample_poly) and quantises
to int16 microvolts, and `check_plausible_ecg` asks whether the result looks like a heart at all (QRS
complexes at a plausible rate in most leads): noise, sines and random data pass the amplitude gates but not
this one. Duplicate recordings are found by ingest.py from the quantised waveform's keyed hash."""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import butter, find_peaks, resample_poly, sosfiltfilt

from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX, LEADS
from heartbeit.data.reasons import IngestError, Reason

_INDEPENDENT = [LEAD_INDEX[k] for k in INDEPENDENT_LEADS]


def check_rate(fs: float, name: str, min_fs: float, max_fs: float) -> None:
    if not np.isfinite(fs) or not (min_fs <= fs <= max_fs):
        raise IngestError(Reason.IMPLAUSIBLE_RATE, f"{name}: sampling rate {fs:g} Hz outside [{min_fs:g}, {max_fs:g}]")


def _longest_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    padded = np.concatenate(([0], mask.view(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[0::2]).max())


def hf_noise_mv(x: np.ndarray) -> np.ndarray:
    """Per-lead high-frequency noise sigma: robust spread (median absolute value; the second difference of an
    ECG is centred on zero) of the second difference / sqrt(6)."""
    d2 = np.abs(np.diff(x, n=2, axis=1))
    return 1.4826 * np.median(d2, axis=1) / np.sqrt(6.0)


def check_signals(signals: np.ndarray, fs: float, name: str, cfg) -> None:
    """Raise IngestError for the first failed gate; `cfg` is an IngestConfig."""
    check_rate(fs, name, cfg.min_fs, cfg.max_fs)
    if not np.isfinite(signals).all():
        raise IngestError(Reason.NAN, f"{name}: signal contains NaN or infinite samples")
    duration = signals.shape[1] / fs
    if duration < cfg.min_duration_s:
        raise IngestError(Reason.TOO_SHORT, f"{name}: {duration:.2f} s, need >= {cfg.min_duration_s:g} s")
    x = signals
    lo, hi = x.min(axis=1), x.max(axis=1)
    ptp = hi - lo
    flat = [LEADS[i] for i in np.flatnonzero(ptp < cfg.flat_ptp_mv)]
    if flat:
        raise IngestError(Reason.FLAT_LINE, f"{name}: flat lead(s) {', '.join(flat)}")
    # Clipping: a real waveform touches its extreme for a sample or two per beat; a saturated ADC holds it.
    tol = np.maximum(ptp * 1e-3, 1e-6)[:, None]
    min_run = max(3, int(0.01 * fs))
    for i in _INDEPENDENT:  # derived leads inherit clipping from I/II
        lead = LEADS[i]
        for pinned in (x[i] >= hi[i] - tol[i], x[i] <= lo[i] + tol[i]):
            if pinned.mean() >= cfg.clip_fraction and _longest_run(pinned) >= min_run:
                raise IngestError(Reason.CLIPPING, f"{name}: lead {lead} is pinned at its rail "
                                                   f"({pinned.mean():.1%} of samples)")
    lo_hi = np.percentile(x, [0.5, 99.5], axis=1)
    robust = lo_hi[1] - lo_hi[0]
    largest, median = float(robust.max()), float(np.median(robust))
    if not cfg.min_ptp_mv <= largest <= cfg.max_ptp_mv or median > cfg.max_median_ptp_mv:
        raise IngestError(Reason.IMPLAUSIBLE_AMPLITUDE,
                          f"{name}: leads span {median:.2f} mV (median) / {largest:.2f} mV (largest); plausible "
                          f"<= {cfg.max_median_ptp_mv:g} / {cfg.min_ptp_mv:g}-{cfg.max_ptp_mv:g} mV: wrong gain or units?")
    noise = float(np.median(hf_noise_mv(x[_INDEPENDENT])))
    if median > cfg.scaled_median_ptp_mv and noise > cfg.scaled_noise_mv:
        raise IngestError(Reason.IMPLAUSIBLE_AMPLITUDE,
                          f"{name}: tall ({median:.2f} mV median lead) and noisy ({noise * 1000:.0f} uV noise floor) "
                          f"together: waveform and noise scaled alike, a gain error")
    if float(np.abs(signals).max()) > cfg.max_abs_mv:
        raise IngestError(Reason.IMPLAUSIBLE_AMPLITUDE, f"{name}: samples beyond +-{cfg.max_abs_mv:g} mV")

def resample(signals: np.ndarray, fs: float, target_fs: int) -> np.ndarray:
    if fs == target_fs:
        return signals
    ratio = Fraction(target_fs) / Fraction(fs).limit_denominator(1000)
    return resample_poly(signals.astype(np.float64), ratio.numerator, ratio.denominator, axis=1)


def to_corpus(signals: np.ndarray, fs: float, cfg, name: str) -> np.ndarray:
    """Crop to duration_s, resample to corpus_fs, quantise to int16 microvolts [12, n]."""
    n_src = int(round(cfg.duration_s * fs))
    out = resample(signals[:, :n_src], fs, cfg.corpus_fs)
    out = out[:, : int(round(cfg.duration_s * cfg.corpus_fs))]
    uv = np.rint(np.asarray(out, dtype=np.float64) * 1000.0)
    if np.abs(uv).max() > 32767:
        raise IngestError(Reason.IMPLAUSIBLE_AMPLITUDE, f"{name}: amplitude beyond +-32.7 mV after resampling")
    return uv.astype(np.int16)


@functools.lru_cache(maxsize=8)
def _qrs_band(fs: float):
    return butter(2, [5.0, min(25.0, 0.45 * fs)], btype="band", fs=fs, output="sos")


def _band_envelope(x_mv: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(5-25 Hz band signal, its energy averaged over 80 ms), per lead."""
    y = sosfiltfilt(_qrs_band(float(fs)), np.asarray(x_mv, dtype=np.float64), axis=1)
    return y, uniform_filter1d(y * y, size=max(3, int(0.08 * fs)), axis=1)


def qrs_evidence(x_mv: np.ndarray, fs: float, peak_ratio: float, peak_times: list | None = None) -> np.ndarray:
    """Per lead: beats per minute of sharp QRS-band energy peaks (>= peak_ratio x the lead's median
    envelope); the peaks' sample indices are appended to `peak_times` when given.

    The 5-25 Hz band holds the QRS complex; its energy, averaged over 80 ms, rises by one to two orders of
    magnitude at each complex and stays low in between. Band-limited noise has no such contrast (its
    envelope peaks are a few times its median), and a slow sine has no energy in the band at all."""
    _, env = _band_envelope(x_mv, fs)
    floor = np.median(env, axis=1) + 1e-12
    minutes = x_mv.shape[1] / fs / 60.0
    bpm = np.zeros(len(env))
    for i, e in enumerate(env):
        peaks, _ = find_peaks(e, height=peak_ratio * floor[i], distance=max(1, int(0.2 * fs)))
        if peak_times is not None:
            peak_times.append(peaks)
        bpm[i] = len(peaks) / minutes
    return bpm


def synchrony(peak_times: list[np.ndarray], leads: np.ndarray, tolerance: int, n: int) -> float:
    """Mean share of one lead's peaks that another lead also has (within `tolerance` samples), over pairs of
    `leads`. One heart beats in every lead at once; impulsive noise spikes each lead on its own."""
    if len(leads) < 2:
        return 0.0
    hits = np.zeros((len(leads), n), dtype=np.uint8)
    for k, i in enumerate(leads):
        hits[k, peak_times[i]] = 1
    near = maximum_filter1d(hits, size=2 * tolerance + 1, axis=1).astype(bool)  # "lead k has a peak nearby"
    shares = [near[np.arange(len(leads)) != k][:, peak_times[i]].mean() for k, i in enumerate(leads)
              if len(peak_times[i])]
    return float(np.mean(shares)) if shares else 0.0


MIN_SIMILAR_BEATS = 6


def beat_similarity(x_mv: np.ndarray, fs: float) -> tuple[float, float]:
    """(beats per minute, median correlation of each beat with the median beat) over all leads together.

    Complexes are the peaks of the leads' summed, normalised band energy; each is the 120 ms around it in
    every lead. One heart makes complexes that look alike in all leads at once, even when some leads are
    small or wide (bundle branch block) and the rhythm is irregular (AF); noise peaks do not resemble each
    other (correlation <= 0.4 on Gaussian, uniform, heavy-tailed and lead-copied noise)."""
    y, env = _band_envelope(x_mv, fs)
    energy = (env / (np.median(env, axis=1, keepdims=True) + 1e-12)).mean(axis=0)
    half = int(0.06 * fs)
    peaks, _ = find_peaks(energy, height=0.3 * np.percentile(energy, 99), distance=max(1, int(0.2 * fs)))
    peaks = peaks[(peaks >= half) & (peaks < len(energy) - half)]
    bpm = len(peaks) / (x_mv.shape[1] / fs / 60.0)
    if len(peaks) < MIN_SIMILAR_BEATS:  # a few big noise spikes can look alike by chance
        return bpm, 0.0
    yn = y / (np.sqrt(np.mean(y * y, axis=1, keepdims=True)) + 1e-12)  # every lead counts alike
    beats = np.stack([yn[:, p - half:p + half].ravel() for p in peaks])
    beats -= beats.mean(axis=1, keepdims=True)
    template = np.median(beats, axis=0)
    corr = beats @ template / (np.linalg.norm(beats, axis=1) * np.linalg.norm(template) + 1e-12)
    return bpm, float(np.median(corr))


def check_plausible_ecg(wave_uv: np.ndarray, fs: float, name: str, cfg) -> None:
    """Refuse a waveform without QRS complexes at a plausible rate: it needs sharp complexes at the same
    moments in at least `qrs_min_leads` leads, or complexes that resemble each other across all leads
    (>= qrs_min_similarity; this catches wide or small complexes that are not sharp in enough single leads)."""
    if cfg.qrs_min_leads <= 0:
        return
    # QRS energy lives below 25 Hz: every k-th sample down to ~125 Hz keeps it and cuts the cost by k (the
    # little aliased content above 62 Hz lands outside the 5-25 Hz band or is noise either way).
    step = max(1, int(fs // 125))
    x = wave_uv[:, ::step].astype(np.float64) / 1000.0
    times: list[np.ndarray] = []
    bpm = qrs_evidence(x, fs / step, cfg.qrs_peak_ratio, times)
    leads = np.flatnonzero((bpm >= cfg.qrs_min_bpm) & (bpm <= cfg.qrs_max_bpm))
    good = len(leads)
    # One heart beats in every lead at once. Synchrony of noise peaks stays <= 0.19 (60 draws each of Gaussian,
    # uniform, int16, lead-copied and heavy-tailed noise at 250/500 Hz); severe low-EF ECGs (small, wide QRS;
    # synthetic LVEF 15-26 %) reach 0.33-0.5 with only 4-11 leads sharp enough, so the bar is 0.3 with the
    # required leads, or 0.4 with half of them.
    together = synchrony(times, leads, int(0.08 * fs / step), x.shape[1])
    if (good >= cfg.qrs_min_leads and together >= 0.3) or (good >= max(3, cfg.qrs_min_leads // 2) and together >= 0.4):
        return
    rate, similarity = beat_similarity(x, fs / step)
    # (band-limited noise aligned on its own energy peaks looks a little alike too: at least a third of the
    # required leads must still show sharp complexes)
    if similarity >= cfg.qrs_min_similarity and cfg.qrs_min_bpm <= rate <= cfg.qrs_max_bpm \
            and good >= max(1, cfg.qrs_min_leads // 3):
        return
    raise IngestError(Reason.NOT_ECG, f"{name}: QRS complexes at a plausible rate in {good} of 12 leads (need "
                                      f"{cfg.qrs_min_leads}) and beats alike at r = {similarity:.2f} (need "
                                      f"{cfg.qrs_min_similarity:g}): noise, a test signal or not an ECG")
