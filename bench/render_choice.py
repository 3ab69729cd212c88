"""Which image can show what the labels depend on, at what cost? The table behind the demo's render settings.

For each candidate (image size, layout, gain in mm/mV, ViT patch) it measures, in the same run:
- px/mV and the row's half-height in mV (a trace beyond it is clipped to its lead box);
- the STEMI ST shift *as drawn*: synthetic STEMI ECGs drawn the way the corpus draws them (severity uniform in
  [severity_min, 1], every territory, the profile's `stemi_st_min_mv`, site noise) and their twins without the
  injury current (same patient, beats and noise), both through the render stage's preprocessing; the shift is
  the twin difference at J + 60 ms minus the same at the PR segment, averaged over the territory's leads and
  beats, times px/mV. The median must reach 2 px;
- the share of normal ECGs' lead boxes whose QRS is clipped (the price of a higher gain);
- training images/s of every matrix architecture and of HeartBEiT pretraining at that size, one thread (the
  demo runs two single-threaded cells at a time; pretraining: two threads), with the precision and memory format the matrix would use
  (heartbeit.models.precision), via bench/train_step.py's step functions;
- the projected demo time: the fixed stages as measured by the last demo (results/demo_run.json), plus
  pretraining (steps x batch / images/s) plus the matrix (per architecture, the images each planned cell
  trains -- steps x batch from a finished demo matrix's cell.json files -- plus a third of a training image
  per evaluated image, over `jobs` parallel cells; the signal model's measured cell seconds as they are). The projection is a model; the demo's own run.json is the
  measurement.

    .venv/bin/python bench/render_choice.py [--quick] [--cells runs/demo/matrix/cells] [--json OUT]
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from heartbeit.config import load_config  # noqa: E402
from heartbeit.data.leads import LEAD_INDEX  # noqa: E402
from heartbeit.data.render.draw import layout_boxes  # noqa: E402
from heartbeit.data.signal import preprocess  # noqa: E402
from heartbeit.data.synth.ecg import STEMI_TERRITORIES, STEMI_TERRITORY_LEADS, simulate_ecg_detailed  # noqa: E402
from heartbeit.models.families import is_signal_arch  # noqa: E402

# (image size, layout, mm/mV, HeartBEiT model at that size); the first is the demo's earlier render.
CANDIDATES = [
    (64, "3x4+II", 10.0, "heartbeit_tiny_patch8_64"),
    (64, "3x4+II", 25.0, "heartbeit_tiny_patch8_64"),
    (64, "3x4", 20.0, "heartbeit_tiny_patch8_64"),
    (64, "3x4", 25.0, "heartbeit_tiny_patch8_64"),
    (64, "3x4", 32.0, "heartbeit_tiny_patch8_64"),  # the demo's choice
    (112, "3x4+II", 10.0, "heartbeit_tiny_patch8_112"),
    (112, "3x4", 15.0, "heartbeit_tiny_patch8_112"),
]


def _same_size(arch: str, size: int) -> str:
    """The matrix's architecture at another image size (the registry names ViTs by size)."""
    for old in ("_64", "_112"):
        if arch.endswith(old) and not is_signal_arch(arch):
            return arch[: -len(old)] + f"_{size}"
    return arch


def st_shift_mv(cfg, n: int) -> np.ndarray:
    """Drawn ST shift (mV) of n synthetic STEMI ECGs, as the module docstring says."""
    return st_shifts(cfg, n)[0]


def st_shifts(cfg, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(drawn shift, the generator's own mean territory ST elevation) in mV of n synthetic STEMI ECGs."""
    rng = np.random.default_rng(0)
    site = cfg.synth.sites[0]
    fs = float(cfg.ingest.corpus_fs or site.fs)
    smin = cfg.synth.severity_min
    out, raw = [], []
    for k in range(n):
        territory = STEMI_TERRITORIES[k % len(STEMI_TERRITORIES)]
        kw = dict(fs=fs, severity=smin + (1 - smin) * rng.random(), noise_mv=site.noise_mv, wander_mv=site.wander_mv,
                  powerline_mv=site.powerline_mv, powerline_hz=site.powerline_hz)
        sick = simulate_ecg_detailed(10_000 + k, stemi_territory=territory, stemi_st_min_mv=cfg.synth.stemi_st_min_mv, **kw)
        twin = simulate_ecg_detailed(10_000 + k, **kw)
        if not np.allclose(sick.r_peaks_s, twin.r_peaks_s):
            raise RuntimeError("the twin's beats differ: the shift would not be the injury current's alone")
        diff = preprocess(sick.signals, fs, cfg.render) - preprocess(twin.signals, fs, cfg.render)
        leads = [LEAD_INDEX[name] for name in STEMI_TERRITORY_LEADS[territory]]
        beats = sick.r_peaks_s[(sick.r_peaks_s > 0.5) & (sick.r_peaks_s < cfg.synth.duration_s - 1.0)]
        st = np.rint((beats + sick.j_point_s + 0.06) * fs).astype(int)
        pr = np.rint((beats + sick.qrs_onset_s - 0.02) * fs).astype(int)
        out.append(float(diff[leads][:, st].mean() - diff[leads][:, pr].mean()))
        raw.append(sick.st_mv)
    return np.array(out), np.array(raw)


def qrs_extents_mv(cfg, n: int) -> np.ndarray:
    """[n, 12] largest |amplitude| of each lead of n normal ECGs after preprocessing."""
    fs = float(cfg.ingest.corpus_fs or 250)
    sigs = np.stack([simulate_ecg_detailed(20_000 + k, fs=fs).signals for k in range(n)])
    return np.abs(preprocess(sigs, fs, cfg.render)).max(axis=-1)


def throughput(arch: str, size: int, batch: int, quick: bool) -> float:
    """Training images/s of one matrix cell's step (one thread)."""
    from train_step import classifier_step, time_steps

    from heartbeit.models.precision import numerics_for

    num = numerics_for(arch, "cpu", "auto")
    if is_signal_arch(arch):
        return float("nan")  # not an image model: its cost does not depend on the render
    step = classifier_step(arch, size, batch, torch.device("cpu"), num.precision, num.channels_last, False)
    times = time_steps(step, 1, 2 if quick else 4, torch.device("cpu"), min_time=1.0 if quick else 4.0)
    return batch / float(np.median(times))


def pretrain_throughput(model: str, size: int, cfg, quick: bool) -> float:
    """Pretraining images/s with both threads (the pretrain stage has the machine to itself)."""
    from train_step import mim_step, time_steps

    torch.set_num_threads(2)
    p = cfg.pretrain
    grid = (size // 8) ** 2
    masked = max(1, round(p.mask_patches * grid / 64))  # the same share of the grid as the profile's
    step = mim_step(model, cfg.tokenizer.vocab_size, masked, p.min_mask_block, size, p.batch_size,
                    torch.device("cpu"), p.precision, False)
    times = time_steps(step, 1, 2 if quick else 4, torch.device("cpu"), min_time=1.0 if quick else 4.0)
    torch.set_num_threads(1)
    return p.batch_size / float(np.median(times))


def planned_work(cells_dir: str, batch: int) -> tuple[dict[str, float], float] | None:
    """From a finished matrix: per image architecture, training images + a third of the evaluated images summed
    over its cells; and the signal models' measured cell seconds (their cost does not depend on the render)."""
    from heartbeit.records import CELL_RECORD, COMPLETE

    files = glob.glob(os.path.join(cells_dir, "*", CELL_RECORD))
    if not files:
        return None
    images: dict[str, float] = {}
    signal_s = 0.0
    for f in files:
        cell = json.loads(Path(f).read_text())
        if is_signal_arch(cell["arch"]):
            signal_s += json.loads(Path(f).with_name(COMPLETE).read_text())["seconds"]
            continue
        trained = cell["steps"] * batch
        evaluated = cell["sanity"].get("val_n", 0) * cell["epochs"] * 2  # validation per epoch + the test sets
        images[cell["arch"]] = images.get(cell["arch"], 0.0) + trained + evaluated / 3.0
    return images, signal_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer ECGs and timing steps")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--cells", default="runs/demo/matrix/cells", help="a finished matrix, for the projection")
    ap.add_argument("--run-json", default="results/demo_run.json", help="the last demo's stage times")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(profile=args.profile)
    n = 30 if args.quick else 150
    shifts, raw = st_shifts(cfg, n)
    extents = qrs_extents_mv(cfg, 20 if args.quick else 60)
    work = planned_work(args.cells, cfg.matrix.batch_size)
    fixed = None
    if Path(args.run_json).is_file():
        stages = json.loads(Path(args.run_json).read_text())["stages_s"]
        fixed = sum(v for k, v in stages.items() if k in ("synth", "ingest", "render", "tokenizer", "report"))
    rows, speed_cache = [], {}
    for size, layout, gain, model in CANDIDATES:
        box = layout_boxes(layout, size, cfg.synth.duration_s, gain)[0]
        half_mv = (box.y1 - box.y0) / 2 / box.px_per_mv
        row = {"image_size": size, "layout": layout, "mm_per_mv": gain, "px_per_mv": round(box.px_per_mv, 2),
               "row_half_mv": round(half_mv, 2), "st_shift_px_median": round(float(np.median(shifts)) * box.px_per_mv, 2),
               "st_shift_px_p25": round(float(np.quantile(shifts, 0.25)) * box.px_per_mv, 2),
               "qrs_clipped_share": round(float((extents > half_mv).mean()), 3)}
        if size not in speed_cache:
            archs = {a: _same_size(a, size) for a in cfg.matrix.architectures}
            speed = {a: round(throughput(real, size, cfg.matrix.batch_size, args.quick), 1) for a, real in archs.items()}
            speed_cache[size] = (speed, round(pretrain_throughput(model, size, cfg, args.quick), 1))
        speed, pre = speed_cache[size]
        row["pretrain_img_s"] = pre
        row["matrix_img_s"] = speed
        if work and fixed is not None:
            images, signal_s = work
            matrix_s = (sum(images.get(_same_size(a, 64), 0.0) / s for a, s in speed.items() if s == s)
                        + signal_s) / cfg.matrix.jobs
            pre_s = cfg.pretrain.steps * cfg.pretrain.batch_size / pre
            row["projected_demo_min"] = round((fixed + pre_s + matrix_s) / 60.0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    record = {"bench": "render_choice", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profile": args.profile,
              "stemi_ecgs": n, "st_shift_mv_median": round(float(np.median(shifts)), 3),
              "st_elevation_mv_median_before_preprocessing": round(float(np.median(raw)), 3), "candidates": rows,
              "note": "images/s at one thread on a shared 2-core machine; projection = model, see docstring"}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
