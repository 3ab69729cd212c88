"""Natural images for the modality-distance comparison, without any download.

Default source: the two photographs shipped inside the scikit-learn wheel (`load_sample_images`:
china.jpg and flower.jpg, 427x640), cut into many seeded random square crops of varying scale, each
resized to the model's input size and converted to grayscale. Alternatively, every image in a
user-given directory (centre square crop, resized)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def to_gray01(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) uint8/float → (H, W) float32 in [0, 1] using ITU-R BT.601 luma."""
    a = np.asarray(image)
    scale = 255.0 if a.dtype == np.uint8 or a.max() > 1.0 else 1.0
    a = a.astype(np.float32) / scale
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {np.asarray(image).shape}")
    return np.clip(a, 0.0, 1.0)


def _resize(gray: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(np.round(gray * 255).astype(np.uint8), mode="L")
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def sample_image_patches(n: int, size: int, seed: int = 0, min_scale: float = 0.25) -> np.ndarray:
    """`n` grayscale (size, size) crops in [0, 1] of scikit-learn's bundled photographs. Each crop's
    side is uniform in [min_scale, 1] x the shorter image side, so crops mix textures and scenes."""
    from sklearn.datasets import load_sample_images

    photos = [to_gray01(im) for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape
        side = int(rng.uniform(min_scale, 1.0) * min(h, w))
        side = max(side, min(size, h, w))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out[i] = _resize(photo[top:top + side, left:left + side], size)
    return out


def load_image_dir(directory: str | Path, size: int, limit: int | None = None) -> np.ndarray:
    """Every image file in `directory` (sorted by name): centre square crop, resized, grayscale [0, 1]."""
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if directory.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{directory}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    files = files[:limit] if limit else files
    out = []
    for path in files:
        try:
            with Image.open(path) as im:
                gray = to_gray01(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise ValueError(f"{path}: not a readable image ({e.__class__.__name__})") from e
        h, w = gray.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        out.append(_resize(gray[top:top + side, left:left + side], size))
    return np.stack(out)
