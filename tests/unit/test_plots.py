"""Figures from fake cells: every figure written, non-trivial, valid PNG, byte-deterministic."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from heartbeit.eval.cells import long_metrics, read_cells
from heartbeit.eval.plots import fraction_figure, reliability_figure, roc_pr_figure, write_all_figures
from helpers.synthetic_cells import write_fake_cells

ARCHS = {"heartbeit_micro": "heartbeit", "resnet18": "resnet", "resnet1d": "signal"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_fake_cells(root, archs=ARCHS, tasks=("stemi",), fractions=(0.01, 0.25, 1.0), seeds=(0,), draws=(0, 1),
                     n_test=200, n_external=120)
    cells = read_cells(root)
    return cells, long_metrics(cells, n_resamples=50)


def test_all_figures_written_and_deterministic(data, tmp_path):
    cells, long = data
    files = write_all_figures(cells, long, tmp_path / "a")
    names = sorted(p.name for p in files)
    assert names == sorted(["fraction_stemi.png", "reliability_stemi_internal.png", "reliability_stemi_external.png"]
                           + [f"roc_pr_stemi_{e}_{f}pct.png" for e in ("internal", "external") for f in (1, 25, 100)])
    for p in files:
        assert p.stat().st_size > 20_000
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 500 and im.height > 400
            # not blank: many distinct colours drawn
            assert len(np.unique(np.asarray(im.convert("L")))) > 50
    again = write_all_figures(cells, long, tmp_path / "b")
    digest = lambda ps: [hashlib.sha256(p.read_bytes()).hexdigest() for p in ps]
    assert digest(files) == digest(again)


def test_degenerate_sets_skip_rather_than_crash(data, tmp_path):
    cells, long = data
    import copy
    broken = copy.deepcopy(cells)
    for c in broken:
        c.predictions["label"] = 0  # one class everywhere
    assert roc_pr_figure(broken, "stemi", 1.0, "internal", tmp_path / "x.png") is None
    assert fraction_figure(long, "hcm", tmp_path / "y.png") is None  # task without cells
    assert reliability_figure(broken, "stemi", "internal", tmp_path / "z.png") is not None  # calibration defined
