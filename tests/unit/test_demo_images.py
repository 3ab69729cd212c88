"""The demo's images can show what its labels depend on: the median synthetic STEMI's ST shift, as
drawn after the render stage's preprocessing, spans at least 2 px in the demo's render settings; and the bench
that measures it does measure it (a shift that scales with the gain, and none without an injury current)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from heartbeit.config import load_config
from heartbeit.data.render.draw import layout_boxes

ROOT = Path(__file__).resolve().parents[2]


def _render_choice():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_render_choice", ROOT / "bench" / "render_choice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo():
    return load_config(profile="demo")


def test_median_stemi_st_shift_spans_two_pixels_in_the_demo_images(demo):
    shifts = _render_choice().st_shift_mv(demo, 45)
    box = layout_boxes(demo.render.layout, demo.render.image_size, demo.synth.duration_s, demo.render.mm_per_mv)[0]
    assert np.median(shifts) * box.px_per_mv >= 2.0
    # the clinical 3x4+II printout at 10 mm/mV (the demo's earlier render) could not show it at this size
    old = layout_boxes("3x4+II", demo.render.image_size, demo.synth.duration_s, 10.0)[0]
    assert np.median(shifts) * old.px_per_mv < 1.0


def test_drawn_shift_is_the_injury_current_alone(demo, monkeypatch):
    bench = _render_choice()
    shifts = bench.st_shift_mv(demo, 6)
    assert (shifts > 0.03).all()  # every STEMI's drawn shift is an elevation
    # no injury current (STEMI drawn as its own twin): no shift at all
    real = bench.simulate_ecg_detailed
    monkeypatch.setattr(bench, "simulate_ecg_detailed",
                        lambda seed, stemi_territory=None, stemi_st_min_mv=0.0, **kw: real(seed, **kw))
    assert np.abs(bench.st_shift_mv(demo, 3)).max() < 1e-9
