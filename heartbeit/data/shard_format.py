"""The image shards' format: member and file names, and how an image and a waveform are stored as bytes.
Written by the render stage (heartbeit.data.render.stage, which documents the folder), read by the loader,
the tokenizer's encoding, the report and `heartbeit predict` (which stores a waveform the same way).

Also the in-place decoders the loader uses: a member straight into a preallocated batch slot.
"""
from __future__ import annotations

import io

import imagecodecs
import numpy as np
from PIL import Image

from heartbeit.records import IMAGE_SHARD_PATTERN, SHARD_SUFFIX, WAVE_SHARD_SUFFIX

WAVE_EXT = "wave.npy"


def shard_relpath(split: str, index: int) -> str:
    return IMAGE_SHARD_PATTERN.format(split=split, index=index)


def wave_relpath(relpath: str) -> str:
    """The waveform sibling of an image shard: `train/train-000003.tar` -> `train/train-000003.wave.tar`."""
    if not relpath.endswith(SHARD_SUFFIX) or relpath.endswith(WAVE_SHARD_SUFFIX):
        raise ValueError(f"not an image shard name: {relpath!r}")
    return relpath[:-len(SHARD_SUFFIX)] + WAVE_SHARD_SUFFIX


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
    from heartbeit.data.signal import resample

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


def decode_png_into(data: bytes, out: np.ndarray) -> None:
    """Decode a greyscale PNG member into `out` (uint8 [H, W]) with libpng (imagecodecs), which holds no GIL
    while it works, so decode threads run in parallel: two threads decode 1.9x one, where PIL (its PNG
    chunks are parsed in Python under the GIL) reaches 1.4x; on one core libpng is 1.4x PIL too
    (bench/loader.py)."""
    try:
        pixels = imagecodecs.png_decode(data)
    except RuntimeError as exc:  # imagecodecs.PngError: truncated or corrupt PNG data
        raise ValueError(f"unreadable PNG ({type(exc).__name__}: {exc})"[:300]) from None
    if pixels.ndim == 3:  # a grey+alpha or colour PNG (not what `heartbeit render` writes): luminance
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
    if pixels.dtype != np.uint8:
        raise ValueError(f"{pixels.dtype} PNG; image shards hold 8-bit greyscale")
    _fill(out, pixels, "image")


def _fill(out: np.ndarray, value: np.ndarray, what: str) -> None:
    if value.shape != out.shape:
        raise ValueError(f"{what} is {value.shape}, the first {what} of its batch is {out.shape}")
    out[...] = value


def decode_member(data: bytes, ext: str, out: np.ndarray) -> None:
    """An image member (`png`, or `npy` uint8 [H, W]) into `out`; ValueError names the problem."""
    if ext == "png":
        decode_png_into(data, out)
    elif ext == "npy":
        _fill(out, np.load(io.BytesIO(data), allow_pickle=False), "image")
    else:
        raise ValueError(f"unknown image member extension {ext!r}")


def decode_wave_into(data: bytes, out: np.ndarray) -> None:
    """A `.wave.npy` member (int16 uV [12, n]) into `out` (float32 mV [12, n])."""
    _fill(out, decode_wave(data), "waveform")


MODALITIES = ("image", "wave")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def member_shape(data: bytes, ext: str) -> tuple[int, int]:
    """(H, W) of an image member; a PNG's from its IHDR chunk (the first chunk, by the PNG standard)."""
    if ext == "png":
        if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
            raise ValueError("unreadable PNG (no PNG signature and IHDR chunk at its start)")
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    return tuple(np.load(io.BytesIO(data), allow_pickle=False).shape)
