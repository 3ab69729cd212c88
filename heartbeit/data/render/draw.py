"""Draw a 12-lead ECG as one grayscale image, fast.

Layouts (fixed; every pixel maps back to a lead and a time through `layout_boxes`):

- ``3x4+II`` (default, the clinical printout): three rows of four 2.5 s columns -- I/II/III |
  aVR/aVL/aVF | V1/V2/V3 | V4/V5/V6, each column showing its own 2.5 s of the simultaneous recording --
  and a fourth row with the full-length lead II rhythm strip.
- ``3x4``: the same three rows without the rhythm strip, so each lead gets a third more height (px/mV) at
  the same image size -- what a small image needs to resolve a 0.1-0.3 mV ST shift (configs/demo.yaml).
- ``12x1``: one full-length row per lead, in LEADS order.

Scales (documented, fixed for a given image size): the image width always spans `duration_s` (10 s), so
seconds-per-pixel = duration_s / W. Vertically the image models ECG paper at `mm_per_mv` (10 mm/mV): one
row is ROW_MM[layout] millimetres of paper (50 mm for 3x4+II, i.e. +-2.5 mV around the row's centre line;
40 mm for 12x1, +-2 mV), so mV-per-pixel = ROW_MM / (mm_per_mv * row_height_px). For 224x224 3x4+II:
22.4 px/s and 11.2 px/mV. Traces are clipped to their lead box. There is no text: positions are fixed, so
a model does not need labels, and `layout_boxes` names every box.

How it is fast: for each pixel column the trace covers a vertical span: min..max of the samples inside
the column plus the nearest sample beyond each edge (which joins neighbouring columns). A plan cached per
(geometry, fs, length) lays every (row band, column) cell's samples out as a [depth, cells] index, so all
spans of a batch are one gather and two element-wise reductions over contiguous rows. Only the pixels a
span touches are then painted: ink = the overlap of pixel row [r, r+1) with the span widened by the line
width, which anti-aliases the span ends. No per-sample or per-pixel Python loop. `bench/render.py`
measures it against matplotlib (MatplotlibRenderer below).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from heartbeit.config.render import LAYOUTS

from heartbeit.data.leads import LEAD_INDEX, LEADS

PAPER_SPEED_MM_S = 25.0  # only used to place the 5 mm / 1 mm grid
ROW_MM = {"3x4+II": 50.0, "3x4": 50.0, "12x1": 40.0}
_GRID_3X4 = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
INK = 0.0  # trace grey level
GRID_MAJOR = 190.0
GRID_MINOR = 228.0


@dataclass(frozen=True)
class LeadBox:
    """Where one lead is drawn. Pixel boxes are half-open: columns x0..x1-1, rows y0..y1-1. Column x
    shows times [x, x+1) / px_per_s; a value v (mV) is drawn at row baseline_y - v * px_per_mv."""

    lead: str
    x0: int
    y0: int
    x1: int
    y1: int
    t0: float
    t1: float
    px_per_s: float
    px_per_mv: float
    baseline_y: float

    def to_dict(self) -> dict:
        return asdict(self)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


@lru_cache(maxsize=64)
def _boxes(layout: str, h: int, w: int, duration_s: float, mm_per_mv: float) -> tuple[tuple[LeadBox, ...], ...]:
    """Boxes grouped by horizontal band (row of the layout), left to right."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if h < 16 or w < 16:
        raise ValueError(f"image size must be at least 16x16, got {h}x{w}")
    if layout == "3x4+II":
        rows = (*_GRID_3X4, ("II",))
    elif layout == "3x4":
        rows = _GRID_3X4
    else:
        rows = tuple((lead,) for lead in LEADS)
    y_edges = np.round(np.linspace(0, h, len(rows) + 1)).astype(int)
    px_per_s = w / duration_s
    px_per_mv = (h / len(rows)) / ROW_MM[layout] * mm_per_mv
    bands = []
    for k, row in enumerate(rows):
        x_edges = np.round(np.linspace(0, w, len(row) + 1)).astype(int)
        y0, y1 = int(y_edges[k]), int(y_edges[k + 1])
        bands.append(tuple(
            LeadBox(lead, int(x_edges[j]), y0, int(x_edges[j + 1]), y1, x_edges[j] / px_per_s,
                    x_edges[j + 1] / px_per_s, px_per_s, px_per_mv, (y0 + y1) / 2.0)
            for j, lead in enumerate(row)
        ))
    return tuple(bands)


def layout_boxes(layout: str = "3x4+II", size: int | tuple[int, int] = 224, duration_s: float = 10.0,
                 mm_per_mv: float = 10.0) -> list[LeadBox]:
    """Every lead box of a layout (13 for 3x4+II: lead II appears twice, in its column and the strip)."""
    h, w = _hw(size)
    return [box for band in _boxes(layout, h, w, float(duration_s), float(mm_per_mv)) for box in band]


def locate(layout: str, size, x: int, y: int, duration_s: float = 10.0, mm_per_mv: float = 10.0):
    """(lead, time in s) drawn at pixel (x, y), or None outside every box."""
    for box in layout_boxes(layout, size, duration_s, mm_per_mv):
        if box.x0 <= x < box.x1 and box.y0 <= y < box.y1:
            return box.lead, (x + 0.5) / box.px_per_s
    return None


@dataclass(frozen=True)
class _Plan:
    """Per (geometry, fs, n): which samples each (band, column) cell spans, laid end to end."""

    gather: np.ndarray  # [depth, bands * W] flat (lead * n + sample) index of each cell's i-th sample
    valid: np.ndarray  # [W] column lies inside the record
    band_top: np.ndarray  # [bands]
    band_bottom: np.ndarray  # [bands]
    baseline: np.ndarray  # [bands]
    px_per_mv: float


@lru_cache(maxsize=64)
def _plan(layout: str, h: int, w: int, duration_s: float, mm_per_mv: float, fs: float, n: int) -> _Plan:
    bands = _boxes(layout, h, w, duration_s, mm_per_mv)
    px_per_s = w / duration_s
    pos = np.arange(w + 1) / px_per_s * fs  # column edges in sample units
    # A cell spans the samples inside its column plus the nearest sample beyond each edge, so the spans
    # of neighbouring columns overlap and the drawn trace is continuous.
    first = np.clip(np.floor(pos[:-1]).astype(np.int64), 0, n - 1)
    last = np.clip(np.ceil(pos[1:]).astype(np.int64), 0, n - 1)
    valid = pos[:-1] <= n - 1
    lead = np.zeros((len(bands), w), dtype=np.int64)
    for k, band in enumerate(bands):
        for box in band:
            lead[k, box.x0:box.x1] = LEAD_INDEX[box.lead]
    # [depth, cells] layout: row i holds every cell's i-th sample (short cells repeat their last one,
    # which leaves min and max unchanged), so min/max are `depth` element-wise passes over contiguous
    # rows -- several times faster than reduceat over ragged segments.
    counts = np.broadcast_to(last - first + 1, lead.shape).ravel()
    depth = int(counts.max())
    i = np.minimum(np.arange(depth)[:, None], counts[None, :] - 1)
    sample = np.broadcast_to(first, lead.shape).ravel()[None, :] + i
    return _Plan(
        gather=lead.ravel()[None, :] * n + sample,
        valid=valid,
        band_top=np.array([b[0].y0 for b in bands], dtype=np.float32),
        band_bottom=np.array([b[0].y1 for b in bands], dtype=np.float32),
        baseline=np.array([b[0].baseline_y for b in bands], dtype=np.float32),
        px_per_mv=bands[0][0].px_per_mv,
    )


@lru_cache(maxsize=16)
def grid_background(layout: str = "3x4+II", size: int | tuple[int, int] = 224, duration_s: float = 10.0,
                    mm_per_mv: float = 10.0) -> np.ndarray:
    """ECG-paper grid: 5 mm major lines (0.2 s, 0.5 mV at mm_per_mv=10) and 1 mm minor lines where they
    are at least 3 px apart, anchored on t=0 and on each row's centre line. Read-only uint8 [H, W]."""
    h, w = _hw(size)
    bands = _boxes(layout, h, w, float(duration_s), float(mm_per_mv))
    img = np.full((h, w), 255.0, dtype=np.float32)
    px_per_mm_x = (w / duration_s) / PAPER_SPEED_MM_S
    px_per_mm_y = bands[0][0].px_per_mv / mm_per_mv
    for step_mm, level in ((1.0, GRID_MINOR), (5.0, GRID_MAJOR)):
        if step_mm * min(px_per_mm_x, px_per_mm_y) < 3 and step_mm == 1.0:
            continue
        xs = np.floor(np.arange(0, w, step_mm * px_per_mm_x)).astype(int)
        img[:, xs] = np.minimum(img[:, xs], level)
        for band in bands:
            y0, y1, base = band[0].y0, band[0].y1, band[0].baseline_y
            k = np.arange(np.ceil((y0 - base) / (step_mm * px_per_mm_y)), (y1 - base) / (step_mm * px_per_mm_y))
            ys = np.clip(np.floor(base + k * step_mm * px_per_mm_y).astype(int), y0, y1 - 1)
            img[ys, :] = np.minimum(img[ys, :], level)
    out = img.astype(np.uint8)
    out.setflags(write=False)
    return out


def _spans(x: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """min and max of the trace over each (band, column) cell: [B, bands * W] float32 in mV."""
    flat = x.reshape(x.shape[0], -1)
    cells = np.take(flat, plan.gather, axis=1)  # [B, depth, cells]
    return cells.min(axis=1), cells.max(axis=1)


@lru_cache(maxsize=8)
def _cell_offsets(batch: int, bands: int, h: int, w: int) -> np.ndarray:
    """Flat pixel offset of (image b, column x) for every (b, band, x) cell; rows are added later."""
    b = np.arange(batch, dtype=np.intp)[:, None, None]
    x = np.arange(w, dtype=np.intp)[None, None, :]
    return np.broadcast_to(b * h * w + x, (batch, bands, w)).ravel()


def render_batch(signals_mV: np.ndarray, fs: float, size: int | tuple[int, int] = 224, layout: str = "3x4+II",
                 grid: bool = False, mm_per_mv: float = 10.0, duration_s: float = 10.0,
                 line_width: float | None = None) -> np.ndarray:
    """Render a batch [B, 12, n] (mV, same fs and length) -> uint8 [B, H, W]: white paper, dark trace."""
    x = np.asarray(signals_mV, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != len(LEADS):
        raise ValueError(f"expected signals shaped [batch, 12, n], got {x.shape}")
    if x.shape[2] < 2:
        raise ValueError("signals need at least 2 samples")
    if not np.isfinite(x).all():
        raise ValueError("signals contain NaN or inf")
    h, w = _hw(size)
    px_per_s = w / duration_s
    if fs < 2 * px_per_s:
        # fewer than two samples per pixel column: upsample so steep segments stay sloped, not stepped
        from scipy.signal import resample_poly

        up = int(np.ceil(2 * px_per_s / fs))
        x, fs = resample_poly(x, up, 1, axis=-1).astype(np.float32), fs * up
    plan = _plan(layout, h, w, float(duration_s), float(mm_per_mv), float(fs), int(x.shape[2]))
    lw = float(line_width) if line_width else max(1.0, h / 224.0)
    lo, hi = _spans(x, plan)
    bands = len(plan.baseline)
    base = np.repeat(plan.baseline, w)
    # rows grow downwards; a trace beyond its box is clipped (saturates) and runs along the box's edge
    band_top, band_bottom = np.repeat(plan.band_top, w), np.repeat(plan.band_bottom, w)
    top = np.clip(base - hi * plan.px_per_mv - lw / 2, band_top, band_bottom - lw)
    bottom = np.clip(base - lo * plan.px_per_mv + lw / 2, band_top + lw, band_bottom)
    bottom = np.where(np.tile(plan.valid, bands), bottom, top)  # past the end of the record: no ink
    top, bottom = top.ravel(), bottom.ravel()
    r0 = np.floor(top).astype(np.intp)
    length = np.maximum(np.ceil(bottom).astype(np.intp) - r0, 0)
    first = np.zeros(length.size, dtype=np.intp)
    np.cumsum(length[:-1], out=first[1:])
    row = np.repeat(r0 - first, length) + np.arange(int(first[-1] + length[-1]), dtype=np.intp)
    row_f = row.astype(np.float32)
    ink = np.minimum(row_f + 1, np.repeat(bottom, length)) - np.maximum(row_f, np.repeat(top, length))
    np.clip(ink, 0.0, 1.0, out=ink)
    n_batch = x.shape[0]
    pixel = row * w + np.repeat(_cell_offsets(n_batch, bands, h, w), length)
    if grid:
        paper = grid_background(layout, (h, w), float(duration_s), float(mm_per_mv))
        img = np.broadcast_to(paper, (n_batch, h, w)).reshape(-1).copy()
    else:
        img = np.full(n_batch * h * w, 255, dtype=np.uint8)
    background = img[pixel].astype(np.float32)
    img[pixel] = (background + (INK - background) * ink + 0.5).astype(np.uint8)
    return img.reshape(n_batch, h, w)


def render(signals_mV: np.ndarray, fs: float, size: int | tuple[int, int] = 224, layout: str = "3x4+II",
           grid: bool = False, mm_per_mv: float = 10.0, duration_s: float = 10.0,
           line_width: float | None = None) -> np.ndarray:
    """Render one ECG [12, n] in millivolts at `fs` Hz -> uint8 [H, W]."""
    x = np.asarray(signals_mV)
    if x.ndim != 2:
        raise ValueError(f"expected signals shaped [12, n], got {x.shape}")
    return render_batch(x[None], fs, size, layout, grid, mm_per_mv, duration_s, line_width)[0]


def render_kwargs(cfg) -> dict:
    """render()/render_batch() keyword arguments from a RenderConfig."""
    return dict(size=cfg.image_size, layout=cfg.layout, grid=cfg.grid, mm_per_mv=cfg.mm_per_mv,
                duration_s=cfg.duration_s, line_width=cfg.line_width or None)


class MatplotlibRenderer:
    """The usual way to draw an ECG image (matplotlib Line2D per lead box, Agg canvas), with the figure
    created once and reused between images -- the fair speed baseline for `bench/render.py`, and an
    independent reference for the tests. Same layout, scales and clipping as `render`; no grid."""

    def __init__(self, size: int | tuple[int, int] = 224, layout: str = "3x4+II", mm_per_mv: float = 10.0,
                 duration_s: float = 10.0, line_width: float | None = None, dpi: int = 100):
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.h, self.w = _hw(size)
        self.boxes = layout_boxes(layout, (self.h, self.w), duration_s, mm_per_mv)
        self.fig = Figure(figsize=(self.w / dpi, self.h / dpi), dpi=dpi, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, self.w)
        ax.set_ylim(self.h, 0)
        ax.axis("off")
        lw_pt = (float(line_width) if line_width else max(1.0, self.h / 224.0)) * 72.0 / dpi
        self.lines = [ax.plot([], [], color="black", linewidth=lw_pt, antialiased=True)[0] for _ in self.boxes]
        self._cache: dict = {}

    def __call__(self, signals_mV: np.ndarray, fs: float) -> np.ndarray:
        x = np.asarray(signals_mV, dtype=np.float32)
        n = x.shape[1]
        key = (float(fs), n)
        if key not in self._cache:
            t = np.arange(n) / fs
            self._cache[key] = [np.flatnonzero((t >= b.t0) & (t <= b.t1)) for b in self.boxes]
        for line, box, idx in zip(self.lines, self.boxes, self._cache[key]):
            xs = idx / fs * box.px_per_s
            ys = np.clip(box.baseline_y - x[LEAD_INDEX[box.lead], idx] * box.px_per_mv, box.y0, box.y1)
            line.set_data(xs, ys)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., 0].copy()
