"""Golden images: the renderer's output for fixed inputs, within a tolerance. Regenerate deliberately with
`python tests/unit/test_render_golden.py --bless` and look at the PNGs before committing them."""
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heartbeit.data.leads import LEADS, normalize_lead_name
from heartbeit.data.render.draw import render
from heartbeit.data.signal import preprocess

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def synthetic_image() -> np.ndarray:
    sig = np.load(GOLDEN / "synthetic_ecg_250hz.npy", allow_pickle=False).astype(np.float32) / 1000.0
    return render(preprocess(sig, 250.0), 250.0, 224)


def ptbxl_image(fixtures: Path) -> np.ndarray:
    import wfdb

    rec = wfdb.rdrecord(str(fixtures / "wfdb" / "ptbxl" / "00001_lr"))
    names = [normalize_lead_name(n) for n in rec.sig_name]
    x = rec.p_signal.T[[names.index(lead) for lead in LEADS]].astype(np.float32)
    return render(preprocess(x, rec.fs), rec.fs, 224, grid=True)


def assert_close_to_golden(img: np.ndarray, name: str) -> None:
    golden = np.asarray(Image.open(GOLDEN / name))
    assert golden.shape == img.shape and golden.dtype == np.uint8
    diff = np.abs(img.astype(int) - golden.astype(int))
    assert diff.mean() < 0.5, f"{name}: mean abs diff {diff.mean():.3f}"
    assert (diff > 32).mean() < 0.002, f"{name}: {(diff > 32).mean():.4f} of pixels differ by > 32 levels"


def test_synthetic_golden():
    assert_close_to_golden(synthetic_image(), "synthetic_ecg_3x4_224.png")


def test_ptbxl_golden(ecg_fixtures):
    assert_close_to_golden(ptbxl_image(ecg_fixtures), "ptbxl_00001_lr_3x4_224_grid.png")


def test_golden_test_detects_a_changed_renderer():
    img = synthetic_image()
    shifted = np.roll(img, 2, axis=0)
    with pytest.raises(AssertionError):
        assert_close_to_golden(shifted, "synthetic_ecg_3x4_224.png")


if __name__ == "__main__" and "--bless" in sys.argv:
    Image.fromarray(synthetic_image()).save(GOLDEN / "synthetic_ecg_3x4_224.png", compress_level=9)
    fixtures = GOLDEN.parents[2] / "shared" / "fixtures" / "ecg"
    if fixtures.is_dir():
        Image.fromarray(ptbxl_image(fixtures)).save(GOLDEN / "ptbxl_00001_lr_3x4_224_grid.png", compress_level=9)
    print(f"wrote golden images under {GOLDEN}")
