import numpy as np
import pytest

from heartbeit.data.leads import LEAD_INDEX, LEADS
from heartbeit.data.render.draw import (GRID_MAJOR, MatplotlibRenderer, layout_boxes, locate, render, render_batch)
from helpers.render_fixtures import simple_ecg

FS = 250.0
N = 2500


def ink_centroid(img, box, x):
    col = 255.0 - img[box.y0:box.y1, x].astype(float)
    return (col * (np.arange(box.y0, box.y1) + 0.5)).sum() / max(col.sum(), 1e-9)


def box_of(lead, layout="3x4+II", size=224, strip=False):
    boxes = [b for b in layout_boxes(layout, size) if b.lead == lead]
    return boxes[-1] if strip else boxes[0]


@pytest.mark.parametrize("layout,n_boxes", [("3x4+II", 13), ("3x4", 12), ("12x1", 12)])
@pytest.mark.parametrize("size", [64, 224, (96, 160)])
def test_boxes_tile_the_image(layout, n_boxes, size):
    boxes = layout_boxes(layout, size)
    h, w = (size, size) if isinstance(size, int) else size
    cover = np.zeros((h, w), int)
    for b in boxes:
        cover[b.y0:b.y1, b.x0:b.x1] += 1
        assert b.y0 <= b.baseline_y < b.y1
        assert b.t0 == pytest.approx(b.x0 / b.px_per_s) and b.t1 == pytest.approx(b.x1 / b.px_per_s)
    assert len(boxes) == n_boxes and (cover == 1).all()
    assert sorted({b.lead for b in boxes}) == sorted(LEADS)


def test_documented_scales_at_224():
    boxes = layout_boxes("3x4+II", 224)
    assert boxes[0].px_per_s == pytest.approx(22.4) and boxes[0].px_per_mv == pytest.approx(11.2)
    # clinical 3x4: columns of 2.5 s, I/II/III | aVR/aVL/aVF | V1-V3 | V4-V6, then the II strip
    assert [b.lead for b in boxes[:4]] == ["I", "aVR", "V1", "V4"]
    assert box_of("aVF").t0 == pytest.approx(2.5) and box_of("V6").t1 == pytest.approx(10.0)
    strip = box_of("II", strip=True)
    assert (strip.x0, strip.x1, strip.t1) == (0, 224, 10.0)
    assert locate("3x4+II", 224, 120, 5) == ("V1", pytest.approx(120.5 / 22.4))
    assert locate("3x4+II", 224, 100, 5)[0] == "aVR" and locate("3x4+II", 224, 10, 200)[0] == "II"


def test_flat_signal_draws_each_baseline_and_white_paper():
    img = render(np.zeros((12, N), np.float32), FS, 224)
    assert img.dtype == np.uint8 and img.shape == (224, 224)
    for b in layout_boxes():
        for x in (b.x0 + 3, (b.x0 + b.x1) // 2, b.x1 - 3):
            assert ink_centroid(img, b, x) == pytest.approx(b.baseline_y, abs=0.3)
    assert (img == 255).mean() > 0.9


def test_amplitude_and_time_map_to_the_documented_pixels():
    x = np.zeros((12, N), np.float32)
    x[LEAD_INDEX["V2"]] = 1.0  # +1 mV step on V2 only
    t = np.arange(N) / FS
    x[LEAD_INDEX["aVR"], np.abs(t - 3.0) < 0.02] = -2.0  # a spike at 3.0 s on aVR
    img = render(x, FS, 224)
    v2 = box_of("V2")
    mid = (v2.x0 + v2.x1) // 2
    assert ink_centroid(img, v2, mid) == pytest.approx(v2.baseline_y - v2.px_per_mv, abs=0.3)
    avr = box_of("aVR")
    col = int(3.0 * avr.px_per_s)
    assert img[int(avr.baseline_y + 1.8 * avr.px_per_mv), col] < 100  # spike drawn downwards at 3 s
    assert img[int(avr.baseline_y + 1.8 * avr.px_per_mv), col + 4] == 255
    lead_i = box_of("I")
    assert lead_i.x1 <= col  # lead I only shows 0-2.5 s, so the aVR spike is not under it


def test_traces_are_clipped_to_their_box():
    x = np.full((12, N), 10.0, np.float32)  # far above every box
    img = render(x, FS, 224)
    for b in layout_boxes():
        ink_rows = np.flatnonzero((img[b.y0:b.y1, b.x0 + 2:b.x1 - 2] < 250).any(axis=1)) + b.y0
        assert ink_rows.min() == b.y0 and ink_rows.max() <= b.y0 + 1  # saturates along the top edge


def test_lines_are_antialiased_and_batch_matches_single():
    batch = np.stack([simple_ecg(s, FS) for s in range(3)])
    imgs = render_batch(batch, FS, 128)
    values = np.unique(imgs)
    assert ((values > 20) & (values < 235)).sum() > 20  # grey levels at the span ends
    for i in range(3):
        np.testing.assert_array_equal(imgs[i], render(batch[i], FS, 128))


def test_grid_and_12x1_layout():
    x = simple_ecg(1, FS)
    g = render(x, FS, 224, grid=True)
    assert (g == int(GRID_MAJOR)).mean() > 0.05 and g.min() < 50
    img = render(x, FS, 224, layout="12x1")
    for lead in LEADS:
        b = box_of(lead, "12x1")
        assert (img[b.y0:b.y1] < 128).any()


def test_3x4_layout_trades_the_strip_for_height_and_gain_clips():
    """3x4: the three clinical rows share the whole height (a third more px/mV than 3x4+II); a higher gain
    (mm_per_mv) scales px/mV and clips a trace at its box instead of drawing into the next row."""
    tall, strip = box_of("V1", "3x4", 63), box_of("V1", "3x4+II", 64)
    assert tall.px_per_mv == pytest.approx(21 / 50 * 10) and strip.px_per_mv == pytest.approx(16 / 50 * 10)
    assert [b.lead for b in layout_boxes("3x4", 64)][:4] == ["I", "aVR", "V1", "V4"]
    assert layout_boxes("3x4", 64, mm_per_mv=32)[0].px_per_mv == pytest.approx(64 / 3 / 50 * 32)
    x = np.zeros((12, 2500), np.float32)
    x[LEADS.index("II"), 300:310] = 3.0  # a 3 mV spike at 1.2 s (lead II's column shows 0-2.5 s): beyond lead II's box at 32 mm/mV
    flat = render(np.zeros_like(x), 250.0, 64, layout="3x4", mm_per_mv=32)
    img = render(x, 250.0, 64, layout="3x4", mm_per_mv=32)
    ii = box_of("II", "3x4", 64)
    assert (img[ii.y0, ii.x0:ii.x1] < 128).any()  # clipped at the top edge of its own box
    changed = np.argwhere(img != flat)
    assert changed.size and (changed[:, 0] >= ii.y0).all() and (changed[:, 0] < ii.y1).all()  # no spill into row I
    from heartbeit.config import ConfigError
    from heartbeit.config.render import RenderConfig

    with pytest.raises(ConfigError, match="layout"):
        RenderConfig(layout="3x5").validate()
    with pytest.raises(ConfigError, match="mm_per_mv"):
        RenderConfig(mm_per_mv=0.0).validate()


def test_low_rate_and_short_records():
    x = simple_ecg(2, 50, duration_s=10)
    img = render(x, 50.0, 224)  # < 2 samples per column: upsampled internally
    assert (img < 128).sum() > 300
    short = render(simple_ecg(2, FS, duration_s=4.0), FS, 224)
    strip = box_of("II", strip=True)
    assert (short[strip.y0:strip.y1, int(4.5 * strip.px_per_s):] == 255).all()  # no ink after the record


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="12, n"):
        render(np.zeros((8, 100)), FS)
    bad = np.zeros((12, N), np.float32)
    bad[3, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        render(bad, FS)
    with pytest.raises(ValueError, match="layout"):
        render(np.zeros((12, N)), FS, layout="6x2")


def test_agrees_with_matplotlib_reference():
    x = simple_ecg(3, 500.0)
    ours = render(x, 500.0, 224)
    ref = MatplotlibRenderer(224)(x, 500.0)
    diffs = []
    for b in layout_boxes():
        for col in range(b.x0 + 1, b.x1 - 1):
            diffs.append(ink_centroid(ours, b, col) - ink_centroid(ref, b, col))
    diffs = np.abs(diffs)
    assert np.median(diffs) < 0.3 and np.percentile(diffs, 95) < 2.0


def test_rendered_stemi_lifts_the_st_segment_in_the_territory_leads():
    from heartbeit.data.signal import preprocess
    from heartbeit.data.synth.ecg import STEMI_TERRITORY_LEADS, simulate_ecg_detailed

    def st_elevation_px(sim, img):
        """per lead: pixels the ST segment (J + 60 ms) sits above the PR baseline, mean over beats."""
        out = {}
        for b in layout_boxes()[:12]:
            vals = []
            for r in sim.r_peaks_s:
                xs = int((r + sim.j_point_s + 0.06) * b.px_per_s)
                xp = int((r + sim.qrs_onset_s - 0.03) * b.px_per_s)
                if b.x0 <= xp and xs < b.x1:
                    vals.append(ink_centroid(img, b, xp) - ink_centroid(img, b, xs))
            out[b.lead] = float(np.mean(vals))
        return out

    for territory, leads in STEMI_TERRITORY_LEADS.items():
        for seed in (1, 2, 3):
            normal = simulate_ecg_detailed(seed, fs=FS)
            stemi = simulate_ecg_detailed(seed, fs=FS, stemi_territory=territory)
            a = st_elevation_px(normal, render(preprocess(normal.signals, FS), FS, 224))
            b = st_elevation_px(stemi, render(preprocess(stemi.signals, FS), FS, 224))
            shift = {k: b[k] - a[k] for k in a}
            inside = np.mean([shift[k] for k in leads])
            outside = np.mean([v for k, v in shift.items() if k not in leads])
            assert min(shift[k] for k in leads) > 0.5, (territory, seed, shift)
            assert inside > 1.0 and inside > outside + 1.0, (territory, seed, shift)
