import numpy as np
import pytest

from heartbeit.config import RenderConfig
from heartbeit.data.signal import bandpass, median_baseline, preprocess, remove_baseline, resample

FS = 250.0
T = np.arange(int(10 * FS)) / FS


def tone(hz, amp=1.0):
    return amp * np.sin(2 * np.pi * hz * T)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x[..., 250:-250]))))  # ignore the edges


@pytest.mark.parametrize("hz,kept", [(0.1, False), (5.0, True), (15.0, True), (60.0, False), (100.0, False)])
def test_bandpass_passes_band_and_cuts_outside(hz, kept):
    out = bandpass(tone(hz), FS, 0.5, 40.0, 4)
    gain = rms(out) / rms(tone(hz))
    assert (gain > 0.95) if kept else (gain < 0.05), gain


def test_bandpass_is_zero_phase():
    x = tone(8.0)
    out = bandpass(x, FS)
    lag = np.argmax(np.correlate(out[500:1500], x[500:1500], "full")) - 999
    assert lag == 0
    assert np.allclose(out[500:-500], x[500:-500], atol=0.02)


def test_bandpass_high_edge_above_nyquist_is_highpass_only():
    fs = 50.0
    t = np.arange(1000) / fs
    x = np.sin(2 * np.pi * 20 * t)  # 20 Hz at 50 Hz: 40 Hz edge is above Nyquist -> kept
    assert rms(bandpass(x, fs)) > 0.95 * rms(x)
    with pytest.raises(ValueError, match="low edge"):
        bandpass(x, fs, low_hz=30.0)


def test_median_baseline_removes_drift_and_keeps_spikes():
    drift = 0.8 * np.sin(2 * np.pi * 0.15 * T) + 0.3 * T / 10
    spikes = np.zeros_like(T)
    spikes[::200] = 1.5  # narrow QRS-like spikes
    spikes = np.convolve(spikes, np.hanning(7), "same")
    x = drift + spikes
    clean = remove_baseline(x, FS)
    assert np.abs(clean - spikes)[100:-100].max() < 0.05
    # the decimated median agrees with the full-rate one (away from the padded ends)
    assert np.abs(median_baseline(x, FS) - median_baseline(x, FS, baseline_fs=0))[100:-100].max() < 0.05


def test_resample_rational_and_preserves_tones():
    x = tone(5.0)[None]
    y = resample(x, 250, 500)
    assert y.shape == (1, 5000)
    t = np.arange(5000) / 500
    assert np.abs(y[0, 100:-100] - np.sin(2 * np.pi * 5 * t)[100:-100]).max() < 0.01
    assert resample(x, 250, 250) is x
    assert resample(x, 500, 100).shape == (1, 500)


def test_preprocess_vectorised_over_batches_and_leads():
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(3, 12, 2500)) + np.sin(2 * np.pi * 0.1 * T)).astype(np.float32)
    cfg = RenderConfig()
    out = preprocess(batch, FS, cfg)
    assert out.dtype == np.float32 and out.shape == batch.shape
    for b in range(3):
        assert np.allclose(out[b], preprocess(batch[b], FS, cfg), atol=1e-5)
    assert np.allclose(out[1, 4], preprocess(batch[1, 4:5], FS, cfg)[0], atol=1e-5)
    # resampling through the config
    assert preprocess(batch[0], FS, RenderConfig(resample_hz=500)).shape == (12, 5000)
    with pytest.raises(ValueError, match="leads"):
        preprocess(np.zeros(10), FS)
