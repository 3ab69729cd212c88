"""The image shards' format: member and file names, and how an image and a waveform are stored as bytes.
Written by the render stage (heartbeit.data.render_stage, which documents the folder), read by the loader,
the tokenizer's encoding, the report and `heartbeit predict` (which stores a waveform the same way).
"""
from __future__ import annotations

import io

import numpy as np

WAVE_EXT = "wave.npy"


def shard_relpath(split: str, index: int) -> str:
    return f"{split}/{split}-{index:06d}.tar"


def wave_relpath(relpath: str) -> str:
    """The waveform sibling of an image shard: `train/train-000003.tar` -> `train/train-000003.wave.tar`."""
    if not relpath.endswith(".tar") or relpath.endswith(".wave.tar"):
        raise ValueError(f"not an image shard name: {relpath!r}")
    return relpath[:-len(".tar")] + ".wave.tar"


def image_ext(encoding: str) -> str:
    return {"png": "png", "npy": "npy"}[encoding]


def encode_image(img: np.ndarray, encoding: str, png_level: int = 1) -> bytes:
    buf = io.BytesIO()
    if encoding == "png":
        from PIL import Image

        Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=png_level)
    elif encoding == "npy":
        np.save(buf, np.ascontiguousarray(img, dtype=np.uint8), allow_pickle=False)
    else:
        raise ValueError(f"unknown image encoding {encoding!r}")
    return buf.getvalue()


def wave_for_storage(filtered_mV: np.ndarray, fs: float, wave_hz: int, duration_s: float) -> np.ndarray:
    """[B, 12, n] filtered mV at `fs` -> int16 uV [B, 12, wave_hz * duration_s]: resampled (polyphase, its
    anti-alias filter sits below the new Nyquist), cropped or zero-padded at the end like the image's
    10 s window, clipped to the int16 range (+-32.8 mV, far beyond any physiological ECG)."""
    from .signal import resample

    x = resample(np.asarray(filtered_mV, dtype=np.float64), float(fs), float(wave_hz))
    n = int(round(wave_hz * duration_s))
    out = np.zeros((*x.shape[:-1], n), dtype=np.float64)
    out[..., :min(n, x.shape[-1])] = x[..., :n]
    return np.clip(np.rint(out * 1000.0), -32767, 32767).astype(np.int16)


def encode_wave(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(wave, dtype=np.int16), allow_pickle=False)
    return buf.getvalue()


def decode_wave(data: bytes) -> np.ndarray:
    """A `.wave.npy` member -> float32 mV [12, n] (stored as int16 uV)."""
    wave = np.load(io.BytesIO(data), allow_pickle=False)
    if wave.dtype != np.int16 or wave.ndim != 2 or wave.shape[0] != 12:
        raise ValueError(f"waveform must be int16 [12, n], got {wave.dtype} {wave.shape}")
    return wave.astype(np.float32) * np.float32(1e-3)


def decode_image(data: bytes, ext: str) -> np.ndarray:
    """uint8 [H, W] from a `.png` or `.npy` member."""
    if ext == "png":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("L") if im.mode != "L" else im)
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    raise ValueError(f"unknown image member extension {ext!r}")
