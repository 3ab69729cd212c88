"""Modality distance: ECG-like images vs scikit-learn's bundled photographs."""
import numpy as np
import pytest

from heartbeit.eval.natural_images import load_image_dir, sample_image_patches, to_gray01
from heartbeit.eval.wasserstein import gap_ratio, modality_distances, sample_pairs, write_wasserstein


def ecg_like(n, size, seed):
    """White paper, a light grid and four dark traces with periodic spikes: what a rendered ECG looks like."""
    rng = np.random.default_rng(seed)
    out = np.ones((n, size, size), np.float32)
    out[:, ::8, :] = 0.85
    out[:, :, ::8] = 0.85
    x = np.arange(size)
    for k in range(n):
        for row in range(4):
            period = size / rng.uniform(3, 6)
            y = (row + 0.5) * size / 4 - rng.uniform(2, 5) * np.exp(-((x % period) - 3) ** 2 / 2)
            y += rng.normal(0, 0.4, size)
            out[k, np.clip(np.rint(y).astype(int), 0, size - 1), x] = 0.0
    return out


def test_natural_patches_are_seeded_grayscale():
    a = sample_image_patches(6, 64, seed=1)
    assert a.shape == (6, 64, 64) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, sample_image_patches(6, 64, seed=1))
    assert not np.array_equal(a, sample_image_patches(6, 64, seed=2))
    assert a.std(axis=(1, 2)).min() > 0.01  # real texture, not flat


def test_ecg_vs_natural_exceeds_within_ecg(tmp_path):
    ecg, nat = ecg_like(30, 64, 0), sample_image_patches(30, 64, seed=0)
    d = modality_distances(ecg, nat, n_pairs=40, patch=8, seed=0)
    assert set(d["pair_type"]) == {"within_ecg", "within_natural", "ecg_vs_natural"}
    assert (d["n_pairs"] == 40).all()
    m = d.set_index(["metric", "pair_type"])["mean"]
    for metric in ("intensity_w1", "patch_sliced_w2"):
        assert m[(metric, "ecg_vs_natural")] > 2 * m[(metric, "within_ecg")]
        assert gap_ratio(d, metric) > 1
    assert d.equals(modality_distances(ecg, nat, n_pairs=40, patch=8, seed=0))  # seeded
    files = write_wasserstein(d, tmp_path)
    assert {p.name for p in files} >= {"wasserstein.md", "wasserstein.tex", "wasserstein.csv", "wasserstein_long.parquet"}


def test_identical_images_have_zero_distance():
    ecg = ecg_like(1, 32, 0)
    d = modality_distances(np.repeat(ecg, 3, 0), np.repeat(ecg, 3, 0), n_pairs=5, patch=8)
    assert np.allclose(d["mean"], 0, atol=1e-6)


def test_pairs_never_pair_an_image_with_itself():
    p = sample_pairs(3, None, 500, np.random.default_rng(0))
    assert (p[:, 0] != p[:, 1]).all() and set(p.ravel()) == {0, 1, 2}
    with pytest.raises(ValueError):
        sample_pairs(1, None, 5, np.random.default_rng(0))


def test_shape_checks_and_image_dir(tmp_path):
    with pytest.raises(ValueError, match="grayscale stacks"):
        modality_distances(np.zeros((3, 32, 32)), np.zeros((3, 16, 16)))
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="b.jpg"):
        load_image_dir(tmp_path, 32)
    (tmp_path / "b.jpg").unlink()
    imgs = load_image_dir(tmp_path, 32)
    assert imgs.shape == (1, 32, 32)
    with pytest.raises(FileNotFoundError):
        load_image_dir(tmp_path / "none", 32)
    assert to_gray01(np.full((2, 2, 3), 255, np.uint8)).tolist() == [[1.0, 1.0], [1.0, 1.0]]
