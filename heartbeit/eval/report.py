"""`heartbeit report`: one command from the matrix's finished cells and the image shards to
`results/REPORT.md` (+ `REPORT.html`, `report.json`), with everything it embeds:

  results/tables/     metrics with CIs, paired tests, calibration, subgroups (heartbeit.eval.tables),
                      the data summary and the Wasserstein modality-distance table
  results/figures/    ROC/PR, fraction and reliability figures (heartbeit.eval.plots)
  results/saliency/   Grad-CAM (+ FullGrad for CNNs) overlays, per-lead and lead x time tables and
                      figures per task x model, and the synthetic-STEMI territory analysis

Atomicity: each part is built in a staging folder inside the results folder and swapped into place
(`tables/`, `figures/`, `saliency/` one rename each); `report.json`, `REPORT.md` and `REPORT.html` are written
last, atomically, so a report never links to a part that is not there. The output has no timestamp: the
same inputs give the same files.

Which cells count: those with the matrix's completion record (`complete.json`) plus `cell.json` and
`predictions.parquet`. Saliency needs `model.safetensors` (the selected weights); a cell without it is
named in the report's "Missing" section. Signal-domain cells have no image and no saliency.
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate
from tqdm import tqdm

from heartbeit.utils.io import atomic_write_json, atomic_write_text, code_version, swap_into_place

from . import saliency as sal
from .ablation import split_cells, write_ablation
from .cells import FAMILY_ORDER, Cell, finished_cell_dirs, long_metrics, read_cell
from .sanity_report import NOTE as SANITY_NOTE, sanity_tables
from .tables import (MISSING, calibration_table, fraction_label, fraction_table, model_label, paired_table,
                     robustness_table, subgroup_table, write_long, write_table)

log = logging.getLogger("heartbeit.report")

COMPLETE = "complete.json"
MODEL_FILE = "model.safetensors"
PARTS = ("tables", "figures", "saliency")


# ------------------------------------------------------------------------------------------- inputs


@dataclass
class CellSet:
    cells: list[Cell] = field(default_factory=list)
    dirs: dict[str, Path] = field(default_factory=dict)  # cell_id -> folder
    problems: list[str] = field(default_factory=list)


def load_cells(cells_dir: str | Path) -> CellSet:
    """Finished cells (see the module note); unreadable or incomplete ones are listed, not fatal."""
    out = CellSet()
    cells_dir = Path(cells_dir)
    if not cells_dir.is_dir():
        out.problems.append(f"no cells folder at `{cells_dir}` (run `heartbeit matrix run` first)")
        return out
    dirs = finished_cell_dirs(cells_dir)
    incomplete = [d for d in dirs if not (d / COMPLETE).is_file()]
    if incomplete:
        out.problems.append(f"{len(incomplete)} cell folder(s) without `{COMPLETE}` (unfinished) were left out")
    for d in dirs:
        if not (d / COMPLETE).is_file():
            continue
        try:
            cell = read_cell(d, hold=False)  # predictions are read where used (bounded memory)
        except ValueError as exc:
            out.problems.append(f"unreadable cell left out: {exc}")
            log.warning("%s", exc)
            continue
        out.cells.append(cell)
        out.dirs[str(cell.meta["cell_id"])] = d
    if not out.cells:
        out.problems.append(f"no finished cells in `{cells_dir}` (run `heartbeit matrix run` first)")
    return out


@dataclass
class ImageSet:
    root: Path
    manifest: pd.DataFrame | None = None
    layout: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.manifest is not None and self.layout is not None

    @property
    def boxes(self) -> list:
        return sal.as_boxes(self.layout["boxes"])

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.layout["image_size"]
        return int(h), int(w)


def open_images(images_dir: str | Path) -> ImageSet:
    root = Path(images_dir)
    out = ImageSet(root)
    manifest, layout = root / "manifest.parquet", root / "layout.json"
    if not root.is_dir():
        out.problems.append(f"no image shards at `{root}` (run `heartbeit render` first): no data summary, "
                            "saliency or Wasserstein table")
        return out
    try:
        out.manifest = pd.read_parquet(manifest)
        missing = [c for c in ("ecg_uid", "split", "site", "key", "shard") if c not in out.manifest]
        if missing:
            raise ValueError(f"columns {missing} missing")
    except Exception as exc:  # missing or damaged file: say which
        out.manifest = None
        out.problems.append(f"`{manifest}` unreadable ({exc.__class__.__name__}: {exc})")
    try:
        out.layout = json.loads(layout.read_text())
        out.boxes  # noqa: B018  (validates the boxes)
    except Exception as exc:
        out.layout = None
        out.problems.append(f"`{layout}` unreadable ({exc.__class__.__name__}: {exc})")
    return out


def pick_rows(manifest: pd.DataFrame, mask, n: int, seed: int, purpose: str) -> pd.DataFrame:
    """`n` rows of `manifest[mask]` in a keyed pseudo-random order (a fixed function of each key)."""
    from heartbeit.data.splits import keyed_uniform

    part = manifest[mask & (manifest["shard"].astype(str) != "")]
    if part.empty or n <= 0:
        return part.iloc[:0]
    order = np.argsort(keyed_uniform(part["key"].astype(str).tolist(), seed, purpose), kind="stable")
    return part.iloc[order[:n]]


def _read_members(images: ImageSet, rows: pd.DataFrame, tar_of, exts: tuple[str, ...], decode, what: str) -> dict:
    """{row position: decode(bytes, ext)} for the manifest rows' members with one of `exts`, read straight
    from the tar `tar_of(shard)` of each row's shard."""
    wanted = {str(k): i for i, k in enumerate(rows["key"].astype(str))}
    found: dict[int, np.ndarray] = {}
    for shard in sorted(rows["shard"].astype(str).unique()):
        path = images.root / tar_of(shard)
        try:
            with tarfile.open(path, "r") as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if member.isfile() and key in wanted and ext in exts:
                        found[wanted[key]] = decode(tar.extractfile(member).read(), ext)
        except (OSError, tarfile.TarError) as exc:
            raise ValueError(f"{path}: unreadable {what} shard ({exc.__class__.__name__})") from exc
    missing = len(wanted) - len(found)
    if missing:
        raise ValueError(f"{images.root}: {missing} {what}(s) listed in manifest.parquet are not in their shard")
    return found


def read_images(images: ImageSet, rows: pd.DataFrame) -> np.ndarray:
    """uint8 [N, H, W] for the manifest rows, in their order, read straight from the shard tars."""
    from heartbeit.data.shards import decode_image

    found = _read_members(images, rows, str, ("png", "npy"), decode_image, "image")
    return np.stack([found[i] for i in range(len(found))]) if found else np.zeros((0, *images.size), np.uint8)


def read_waves(images: ImageSet, rows: pd.DataFrame) -> np.ndarray:
    """float32 mV [N, 12, L] for the manifest rows, in their order, from the shards' waveform siblings."""
    from heartbeit.data.shards import WAVE_EXT, decode_wave, wave_relpath

    found = _read_members(images, rows, wave_relpath, (WAVE_EXT,), lambda data, _: decode_wave(data), "waveform")
    return np.stack([found[i] for i in range(len(found))])


# -------------------------------------------------------------------------------------------- models


def load_cell_model(cell_dir: str | Path, arch: str, img_size: int):
    """The cell's selected weights in a freshly built timm model (safetensors: nothing is unpickled)."""
    from safetensors.torch import load_file

    from heartbeit.models.zoo import build_classifier

    path = Path(cell_dir) / MODEL_FILE
    model = build_classifier(arch, num_classes=2, img_size=img_size)
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load the weights into {arch} ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from exc
    return model.eval()


def predict(model, arch: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(class 1) for uint8 images [N, H, W], or float mV waveforms [N, 12, L] for a signal model."""
    import torch

    from heartbeit.models.zoo import is_signal_arch

    mean, std = sal._normalization(arch)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start:start + batch_size])
            x = x.float() if is_signal_arch(arch) else x[:, None].float() / 255.0
            out.append(torch.softmax(model((x - mean) / std).float(), dim=1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def first_runs(cells: list[Cell], task: str, fraction: float) -> dict[tuple[str, str], Cell]:
    """The lowest (seed, draw) cell of each (arch, init) for a task at a fraction."""
    out: dict[tuple[str, str], Cell] = {}
    for c in sorted(cells, key=lambda c: (int(c.meta["seed"]), int(c.meta.get("draw", 0)))):
        m = c.meta
        if m["task"] == task and float(m["fraction"]) == float(fraction):
            out.setdefault((m["arch"], m["init"]), c)
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[1].meta["arch_family"], 99), kv[0])))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


# ------------------------------------------------------------------------------------------ saliency


@dataclass
class SaliencyResult:
    importance: pd.DataFrame = field(default_factory=pd.DataFrame)
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)
    territory: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: dict | None = None  # the territory analysis' model
    figures: dict = field(default_factory=dict)  # task -> [(relpath, caption)]
    territory_figures: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)  # task -> display DataFrame
    notes: list[str] = field(default_factory=list)


def _cells_of(cells: list[Cell], families: tuple[str, ...]) -> list[Cell]:
    return [c for c in cells if (c.meta.get("arch_family") or sal.family_of(c.meta["arch"])) in families]


def _image_cells(cells: list[Cell]) -> list[Cell]:
    """Cells of image models (the signal-domain baseline is read on its waveforms instead)."""
    return _cells_of(cells, sal.IMAGE_FAMILIES)


def _signal_cells(cells: list[Cell]) -> list[Cell]:
    return _cells_of(cells, ("signal",))


def _methods(model, cfg) -> list[str]:
    return ["gradcam", "fullgrad"] if cfg.report.fullgrad and sal.supports_fullgrad(model) else ["gradcam"]


METHOD_LABEL = {"gradcam": "Grad-CAM", "fullgrad": "FullGrad", "inputxgrad": "input×gradient"}


def saliency_part(cellset: CellSet, images: ImageSet, cfg, out_dir: Path, long: pd.DataFrame | None) -> SaliencyResult:
    """Per task: the models of the largest fraction (first seed/draw) on sampled positive ECGs; then
    the synthetic-STEMI territory analysis. Files go to `out_dir` (the saliency part's folder)."""
    res = SaliencyResult()
    rc = cfg.report
    cells = _image_cells(cellset.cells)
    if not cells:
        res.notes.append("no image-model cells: no saliency")
        return res
    if not images.usable:
        res.notes.append("no usable image shards (manifest.parquet + layout.json): no saliency")
        return res
    boxes = images.boxes
    h, w = images.size
    imp_rows, prof_rows = [], []
    tasks = sorted({c.meta["task"] for c in cells})
    for task in tasks:
        fraction = max(float(c.meta["fraction"]) for c in cells if c.meta["task"] == task)
        runs = first_runs(cells, task, fraction)
        with_model = {k: c for k, c in runs.items() if (cellset.dirs[str(c.meta["cell_id"])] / MODEL_FILE).is_file()}
        for k in runs.keys() - with_model.keys():
            res.notes.append(f"{task}: {model_label(*k)} at {fraction_label(fraction)} has no `{MODEL_FILE}`: "
                             "no saliency for it")
        if not with_model:
            continue
        m = images.manifest
        if task not in m:
            res.notes.append(f"{task}: the image manifest has no `{task}` labels: no saliency")
            continue
        n = max(rc.saliency_lead_samples, rc.saliency_samples)
        rows = pick_rows(m, (m["split"].astype(str) == rc.saliency_split) & (m[task] == 1), n, rc.seed,
                         f"saliency:{task}")
        if rows.empty:
            res.notes.append(f"{task}: no positive ECG in the {rc.saliency_split} split: no saliency")
            continue
        ecgs = read_images(images, rows)
        figs = res.figures.setdefault(task, [])
        for (arch, init), cell in tqdm(with_model.items(), desc=f"saliency {task}", unit="model"):
            model = load_cell_model(cellset.dirs[str(cell.meta["cell_id"])], arch, h)
            scores = predict(model, arch, ecgs)
            grid = "x".join(map(str, sal.cam_resolution(model, arch, (h, w))))
            for method in _methods(model, cfg):
                maps = sal.saliency_maps(model, arch, ecgs, target_class=1, method=method, batch_size=rc.saliency_batch)
                tag = dict(task=task, arch=arch, arch_family=cell.meta["arch_family"], init=init,
                           fraction=fraction, cell_id=str(cell.meta["cell_id"]), method=method,
                           resolution=grid if method == "gradcam" else "pixel")
                imp = sal.lead_importance(maps, boxes)
                imp_rows.append(imp.assign(**tag))
                prof = sal.time_profile(maps, boxes)
                prof_rows.append(prof.assign(**tag))
                stem = _slug(f"{task}_{arch}_{init}_{method}")
                label = f"{arch} ({init}), {METHOD_LABEL[method]}"
                path = sal.lead_time_figure(
                    prof, out_dir / f"lead_time_{stem}.png",
                    f"{task}: saliency by lead and time, {label}; mean over {int(imp['n_images'].iloc[0])} "
                    f"positive {rc.saliency_split} ECGs, {fraction_label(fraction)} of training data")
                if path is not None:
                    figs.append((_rel(path, out_dir), f"{task} — {label}: saliency mass by lead and time"))
                for i in range(min(rc.saliency_samples, len(ecgs))):
                    p = sal.overlay_figure(
                        ecgs[i], maps[i], boxes, out_dir / "overlays" / f"{stem}_{i:02d}.png",
                        f"{task} positive #{i + 1} ({rc.saliency_split} split) — {label}\n"
                        f"P({task}) = {scores[i]:.2f}; trained on {fraction_label(fraction)}", METHOD_LABEL[method])
                    figs.append((_rel(p, out_dir), f"{task} — {label}: positive #{i + 1}"))
        imp_rows += _signal_importance(cellset, images, task, fraction, rows, res)
    if imp_rows:
        res.importance = pd.concat(imp_rows, ignore_index=True)
        res.profile = pd.concat(prof_rows, ignore_index=True)
        write_long(res.importance, out_dir, "lead_importance_long")
        write_long(res.profile, out_dir, "lead_time_long")
        for task in sorted(res.importance["task"].unique()):
            table = lead_table(res.importance[res.importance["task"] == task])
            res.tables[task] = table
            write_table(table, out_dir, f"lead_importance_{_slug(task)}",
                        title=f"Share of saliency mass per lead region — {task}",
                        note=LEAD_NOTE)
    territory_part(cellset, images, cfg, out_dir, long, res)
    return res


def _signal_importance(cellset: CellSet, images: ImageSet, task: str, fraction: float, rows: pd.DataFrame,
                       res: SaliencyResult) -> list[pd.DataFrame]:
    """Per-lead input×gradient of the signal-domain model(s) on the same sampled positive ECGs' waveforms."""
    runs = {k: c for k, c in first_runs(_signal_cells(cellset.cells), task, fraction).items()
            if (cellset.dirs[str(c.meta["cell_id"])] / MODEL_FILE).is_file()}
    if not runs:
        return []
    try:
        waves = read_waves(images, rows)
    except ValueError as exc:
        res.notes.append(f"{task}: no waveforms for the signal model's attribution ({exc})")
        return []
    out = []
    for (arch, init), cell in runs.items():
        model = load_cell_model(cellset.dirs[str(cell.meta["cell_id"])], arch, 0)
        imp = sal.signal_lead_importance(sal.signal_attributions(model, waves))
        out.append(imp.assign(task=task, arch=arch, arch_family="signal", init=init, fraction=fraction,
                              cell_id=str(cell.meta["cell_id"]), method="inputxgrad", resolution="sample"))
    return out


LEAD_NOTE = ("Cells: mean share of each image's saliency mass (%) and, in brackets, the enrichment over a uniform "
             "map (mass share / area share; > 1 = more than chance). 'II rhythm' is the 10 s strip; "
             "per lead totals in lead_importance_long (column lead). Grad-CAM columns name the grid the model's "
             "target layer sees (e.g. 2x2): attribution finer than one grid cell is interpolation. The signal "
             "model's column is |input × gradient| summed per lead of its waveform input (chance = 1/12 per lead; "
             "it has no II rhythm strip).")


def lead_table(imp: pd.DataFrame) -> pd.DataFrame:
    """Regions as rows (layout order), one column per model x method: "12.3% (×1.48)"."""
    regions = list(dict.fromkeys(imp["region"]))
    area = imp.drop_duplicates("region").set_index("region")["area_share"]
    out = pd.DataFrame({"Region": regions, "Area %": [f"{area[r] * 100:.1f}" for r in regions]})
    for (arch, init, method, resolution), part in imp.groupby(["arch", "init", "method", "resolution"], sort=False):
        part = part.set_index("region")
        col = f"{arch} ({init}) {METHOD_LABEL[method]}" + (f" {resolution}" if method == "gradcam" else "")
        out[col] = [MISSING if r not in part.index or not math.isfinite(part.loc[r, "mass_share"]) else
                    f"{part.loc[r, 'mass_share'] * 100:.1f}% (×{part.loc[r, 'enrichment']:.2f})" for r in regions]
    return out


def _rel(path: Path, part_dir: Path) -> str:
    """Link target relative to the results folder: `<part>/...` (a staging folder is renamed to <part>)."""
    return f"{part_dir.name.split('.staging')[0]}/{Path(path).relative_to(part_dir).as_posix()}"


def synthetic_stemi(territory: str, n: int, images: ImageSet, cfg, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic ECGs with a STEMI of `territory`, filtered and drawn exactly as the image shards
    (layout, size, scales from layout.json; filter settings from the render config): (uint8 images
    [n, H, W], float32 mV waveforms [n, 12, L] as the shards store them for signal models)."""
    from heartbeit.data.render import render_batch
    from heartbeit.data.shards import wave_for_storage
    from heartbeit.data.signal import preprocess
    from heartbeit.data.synth import STEMI_TERRITORIES, simulate_ecg

    lay = images.layout
    site = next((s for s in cfg.synth.sites if not s.external), None)
    noise = dict(noise_mv=site.noise_mv, wander_mv=site.wander_mv, powerline_hz=site.powerline_hz,
                 powerline_mv=site.powerline_mv) if site else {}
    fs = float(cfg.render.resample_hz or cfg.ingest.corpus_fs)
    duration = float(lay.get("duration_s", cfg.render.duration_s))
    seeds = np.random.SeedSequence([int(seed), 0x57E, STEMI_TERRITORIES.index(territory)]).generate_state(n)
    sig = np.stack([simulate_ecg(int(s), fs=fs, duration_s=duration, stemi_territory=territory,
                                 severity=cfg.report.territory_severity, **noise) for s in seeds])
    filtered = preprocess(sig, fs, cfg.render, fs_out=fs)
    imgs = render_batch(filtered, fs, size=tuple(lay["image_size"]), layout=lay["layout"],
                        grid=bool(lay.get("grid", False)), mm_per_mv=float(lay.get("mm_per_mv", 10.0)),
                        duration_s=duration, line_width=cfg.render.line_width or None)
    wave_hz = cfg.render.wave_hz or int(fs)
    waves = wave_for_storage(filtered, fs, wave_hz, duration).astype(np.float32) / 1000.0
    return imgs, waves


def best_stemi_cell(cells: list[Cell], long: pd.DataFrame | None, dirs: dict) -> tuple[Cell | None, str]:
    """Highest internal-test AUROC among the stemi image models at the largest fraction (first
    seed/draw) that kept their weights; the note says when a better-scoring cell had none."""
    stemi = [c for c in cells if c.meta["task"] == "stemi"]
    if not stemi:
        return None, "no stemi cells"
    fraction = max(float(c.meta["fraction"]) for c in stemi)
    runs = first_runs(stemi, "stemi", fraction)
    auroc = {}
    if long is not None and not long.empty:
        part = long[(long["task"] == "stemi") & (long["eval_set"] == "internal") & (long["site"] == "all")]
        auroc = dict(zip(part["cell_id"].astype(str), part["auroc"]))
    ranked = sorted(runs.values(), key=lambda c: -np.nan_to_num(auroc.get(str(c.meta["cell_id"]), np.nan), nan=-1))
    for i, c in enumerate(ranked):
        if (dirs[str(c.meta["cell_id"])] / MODEL_FILE).is_file():
            note = "" if i == 0 else f"{i} better-scoring model(s) had no `{MODEL_FILE}`"
            return c, note
    return None, f"no stemi model at {fraction_label(fraction)} kept `{MODEL_FILE}`"


def territory_part(cellset: CellSet, images: ImageSet, cfg, out_dir: Path, long, res: SaliencyResult) -> None:
    from scipy import stats

    from heartbeit.data.synth import STEMI_TERRITORY_LEADS

    rc = cfg.report
    cells = _image_cells(cellset.cells)
    best, note = best_stemi_cell(cells, long, cellset.dirs)
    if note:
        res.notes.append(f"territory analysis: {note}")
    if best is None or rc.territory_samples < 2:
        return
    fraction = float(best.meta["fraction"])
    runs = {k: c for k, c in first_runs(cells, "stemi", fraction).items()
            if (cellset.dirs[str(c.meta["cell_id"])] / MODEL_FILE).is_file()}
    boxes = images.boxes
    h, _ = images.size
    synthetic = {t: synthetic_stemi(t, rc.territory_samples, images, cfg, rc.seed) for t in STEMI_TERRITORY_LEADS}
    rows = []
    auroc = {}
    if long is not None and not long.empty:
        part = long[(long["task"] == "stemi") & (long["eval_set"] == "internal") & (long["site"] == "all")]
        auroc = dict(zip(part["cell_id"].astype(str), part["auroc"]))
    for (arch, init), cell in tqdm(runs.items(), desc="territory", unit="model"):
        model = load_cell_model(cellset.dirs[str(cell.meta["cell_id"])], arch, h)
        is_best = cell is best
        all_ratios = []
        for territory, (ecgs, _) in synthetic.items():
            maps = sal.saliency_maps(model, arch, ecgs, target_class=1, batch_size=rc.saliency_batch)
            ratios = sal.territory_ratios(maps, boxes, STEMI_TERRITORY_LEADS[territory])
            p = predict(model, arch, ecgs)
            rows.append(_ratio_row(arch, init, cell, is_best, territory, ratios, p, auroc, stats))
            all_ratios.append((ratios, p))
            if is_best:
                path = sal.overlay_figure(
                    ecgs[0], maps[0], boxes, out_dir / "territory" / f"{_slug(territory)}.png",
                    f"Synthetic {territory} STEMI (leads {', '.join(STEMI_TERRITORY_LEADS[territory])}) — "
                    f"{arch} ({init}), Grad-CAM\nP(stemi) = {p[0]:.2f}; territory ratio {ratios[0]:.2f}")
                res.territory_figures.append((_rel(path, out_dir), f"synthetic {territory} STEMI"))
        r = np.concatenate([a for a, _ in all_ratios])
        p = np.concatenate([b for _, b in all_ratios])
        rows.append(_ratio_row(arch, init, cell, is_best, "all", r, p, auroc, stats))
    # the signal model on the same synthetic ECGs' waveforms (input×gradient per lead), for comparison
    signal_runs = {k: c for k, c in first_runs(_signal_cells(cellset.cells), "stemi", fraction).items()
                   if (cellset.dirs[str(c.meta["cell_id"])] / MODEL_FILE).is_file()}
    for (arch, init), cell in signal_runs.items():
        model = load_cell_model(cellset.dirs[str(cell.meta["cell_id"])], arch, 0)
        parts = []
        for territory, (_, waves) in synthetic.items():
            ratios = sal.signal_territory_ratios(sal.signal_attributions(model, waves), STEMI_TERRITORY_LEADS[territory])
            p = predict(model, arch, waves)
            rows.append(_ratio_row(arch, init, cell, False, territory, ratios, p, auroc, stats))
            parts.append((ratios, p))
        rows.append(_ratio_row(arch, init, cell, False, "all", np.concatenate([a for a, _ in parts]),
                               np.concatenate([b for _, b in parts]), auroc, stats))
    res.territory = pd.DataFrame(rows)
    write_long(res.territory, out_dir, "territory_long")
    write_table(territory_table(res.territory), out_dir, "territory",
                title="Synthetic STEMI: saliency on the injured territory's leads vs a uniform spread",
                note=TERRITORY_NOTE)
    overall = res.territory[(res.territory["best"]) & (res.territory["territory"] == "all")].iloc[0]
    res.best = {"arch": best.meta["arch"], "init": best.meta["init"], "cell_id": str(best.meta["cell_id"]),
                "fraction": fraction, "internal_auroc": _float(auroc.get(str(best.meta["cell_id"]))),
                "territory_ratio": _float(overall["ratio_mean"]), "ratio_low": _float(overall["ratio_low"]),
                "ratio_high": _float(overall["ratio_high"]), "n_images": int(overall["n_images"]),
                "n_zero_maps": int(overall["n_zero_maps"])}


TERRITORY_NOTE = ("Ratio = share of Grad-CAM mass inside every box drawing a territory lead / those boxes' share of "
                  "the image area (a uniform map gives 1; > 1 = the model looks at the injured territory). Mean over "
                  "synthetic ECGs of known territory rendered with the run's layout and size; 95% CI (t); 'share > 1' = "
                  "fraction of ECGs with ratio > 1; P(stemi) = the model's mean score on them. The signal model's "
                  "rows use |input × gradient| on the same ECGs' waveforms: territory leads' share over their share "
                  "of the 12 leads.")


def _float(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _ratio_row(arch, init, cell, is_best, territory, ratios, p, auroc, stats) -> dict:
    r = ratios[np.isfinite(ratios)]
    mean = float(r.mean()) if len(r) else float("nan")
    if len(r) > 1 and r.std(ddof=1) > 0:
        low, high = stats.t.interval(0.95, len(r) - 1, loc=mean, scale=r.std(ddof=1) / math.sqrt(len(r)))
    else:
        low = high = float("nan")
    return {"arch": arch, "init": init, "cell_id": str(cell.meta["cell_id"]), "fraction": float(cell.meta["fraction"]),
            "internal_auroc": auroc.get(str(cell.meta["cell_id"]), float("nan")), "best": bool(is_best),
            "territory": territory, "n_images": int(len(r)), "n_zero_maps": int(len(ratios) - len(r)),
            "ratio_mean": mean, "ratio_low": float(low),
            "ratio_high": float(high), "share_above_1": float((r > 1).mean()) if len(r) else float("nan"),
            "p_stemi_mean": float(np.mean(p)) if len(p) else float("nan")}


def territory_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in df.itertuples(index=False):
        ci = f" [{r.ratio_low:.2f}, {r.ratio_high:.2f}]" if math.isfinite(r.ratio_low) else ""
        how = " input×gradient" if sal.family_of(r.arch) == "signal" else ""
        rows.append({"Model": f"{r.arch} ({r.init}){how}" + (" ★ best" if r.best else ""),
                     "Internal AUROC": f"{r.internal_auroc:.3f}" if math.isfinite(r.internal_auroc) else MISSING,
                     "Territory": r.territory, "n": r.n_images, "Zero maps": r.n_zero_maps,
                     "Ratio": f"{r.ratio_mean:.2f}{ci}" if math.isfinite(r.ratio_mean) else MISSING,
                     "Share > 1": f"{r.share_above_1:.2f}" if math.isfinite(r.share_above_1) else MISSING,
                     "P(stemi)": f"{r.p_stemi_mean:.2f}"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- data, W


def data_tables(manifest: pd.DataFrame, tasks) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ECGs per split x site (plus patients per split), and positives / labelled per task x split."""
    m = manifest.copy()
    m["split"] = m["split"].astype(str)
    counts = pd.crosstab(m["site"].astype(str), m["split"], margins=True, margins_name="total")
    counts = counts.reset_index().rename(columns={"site": "Site"})
    counts["Site"] = counts["Site"].astype(str)
    if "patient_hash" in m:
        patients = m.groupby("split")["patient_hash"].nunique()
        row = {"Site": "patients"}
        row.update({s: int(patients.get(s, 0)) for s in counts.columns[1:] if s != "total"})
        row["total"] = int(m["patient_hash"].nunique())
        counts = pd.concat([counts, pd.DataFrame([row])], ignore_index=True)
    counts.columns.name = None
    label_rows = []
    for task in tasks:
        if task not in m:
            continue
        row = {"Task": task}
        for split, part in m.groupby("split", sort=True):
            y = pd.to_numeric(part[task], errors="coerce")
            row[split] = f"{int((y == 1).sum())} / {int(y.notna().sum())}"
        label_rows.append(row)
    return counts, pd.DataFrame(label_rows)


def wasserstein_part(images: ImageSet, cfg, out_dir: Path) -> tuple[pd.DataFrame | None, str]:
    from .natural_images import load_image_dir, sample_image_patches
    from .wasserstein import modality_distances, wasserstein_table, write_wasserstein

    rc = cfg.report
    if rc.wasserstein_images == 0 or rc.wasserstein_pairs == 0:
        return None, "Wasserstein table switched off (report.wasserstein_images / wasserstein_pairs = 0)"
    if not images.usable:
        return None, "no usable image shards: no Wasserstein table"
    h, w = images.size
    if h != w:
        return None, f"images are {h}x{w}; the natural-image crops are square: no Wasserstein table"
    m = images.manifest
    rows = pick_rows(m, m["split"].notna(), rc.wasserstein_images, rc.seed, "wasserstein")
    if len(rows) < 2:
        return None, "fewer than 2 rendered ECG images: no Wasserstein table"
    ecg = read_images(images, rows).astype(np.float32) / 255.0
    if rc.natural_images_dir:
        natural = load_image_dir(rc.natural_images_dir, h, limit=len(ecg))
        source = f"images in `{rc.natural_images_dir}`"
    else:
        natural = sample_image_patches(len(ecg), h, seed=rc.seed)
        source = "random crops of scikit-learn's bundled photographs (china.jpg, flower.jpg)"
    if len(natural) < 2:
        return None, "fewer than 2 natural images: no Wasserstein table"
    dist = modality_distances(ecg, natural, n_pairs=rc.wasserstein_pairs, seed=rc.seed, patch=rc.wasserstein_patch)
    write_wasserstein(dist, out_dir)
    return wasserstein_table(dist), (f"{len(ecg)} ECG images sampled from the shards vs {len(natural)} natural images "
                                     f"({source}), {h}x{w} grayscale; {rc.wasserstein_pairs} pairs per type; "
                                     f"patches {rc.wasserstein_patch}x{rc.wasserstein_patch}.")


# ------------------------------------------------------------------------------------------ document


_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>')]


def inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


class Document:
    """The report as blocks, written once as Markdown and once as HTML (no Markdown parser needed)."""

    def __init__(self, title: str):
        self.title = title
        self.md: list[str] = [f"# {title}\n"]
        self.html: list[str] = [f"<h1>{inline_html(title)}</h1>"]
        self.links: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{inline_html(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{inline_html(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")
        self.html.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>")

    def code(self, text: str) -> None:
        self.md.append(f"```\n{text}\n```\n")
        self.html.append(f"<pre><code>{html.escape(text)}</code></pre>")

    def table(self, df: pd.DataFrame, caption: str = "") -> None:
        if df is None or df.empty:
            return
        rows = df.astype(object).where(df.notna(), MISSING).values.tolist()
        headers = [str(c) for c in df.columns]
        if caption:
            self.md.append(f"*{caption}*\n")
        self.md.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True) + "\n")
        cap = f"<caption>{inline_html(caption)}</caption>" if caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
        self.html.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, relpath: str, caption: str) -> None:
        self.links.append(relpath)
        self.md.append(f"![{caption}]({relpath})\n")
        self.html.append(f'<figure><img src="{html.escape(relpath)}" alt="{html.escape(caption)}">'
                         f"<figcaption>{inline_html(caption)}</figcaption></figure>")

    def link_list(self, relpaths: list[str]) -> None:
        self.links.extend(relpaths)
        self.bullets([f"[{p}]({p})" for p in relpaths])

    def markdown(self) -> str:
        return "\n".join(self.md)

    def to_html(self) -> str:
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:.85em}"
                 "th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left}th{background:#eee}"
                 "caption{text-align:left;font-style:italic;padding:.3em 0}"
                 "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:.85em;color:#444}"
                 "pre{background:#f4f4f4;padding:.6em;overflow-x:auto}code{background:#f4f4f4}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(self.html) + "\n</body></html>\n")


# ------------------------------------------------------------------------------------------- the run


def _eval_sets(long: pd.DataFrame, task: str) -> list[str]:
    """Internal test set first, then external validation."""
    present = set(long[long["task"] == task]["eval_set"])
    return [e for e in ("internal", "external") if e in present] + sorted(present - {"internal", "external"})


def _files(part_dir: Path, suffix: str) -> list[str]:
    return sorted(_rel(p, part_dir) for p in part_dir.rglob(f"*{suffix}")) if part_dir.is_dir() else []


def score_cache(cfg) -> Path:
    """Where each cell's metric rows are kept between report runs (and written by `report --score-only`
    array tasks): <workdir>/report/scores."""
    return Path(cfg.workdir) / "report" / "scores"


def run_report(cfg, cells_dir: str | Path | None = None, images_dir: str | Path | None = None,
               out_dir: str | Path | None = None, command: str = "heartbeit report") -> dict:
    """Build every part and REPORT.md/.html. Returns a summary (also written as report.json)."""
    cells_dir = Path(cells_dir) if cells_dir else Path(cfg.workdir) / "matrix" / "cells"
    images_dir = Path(images_dir) if images_dir else Path(cfg.workdir) / "images"
    root = Path(out_dir) if out_dir else Path(cfg.results_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = {part: root / f"{part}.staging-{os.getpid()}" for part in PARTS}
    for path in staging.values():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    try:
        summary = _build(cfg, cells_dir, images_dir, root, staging, command)
        for part, path in staging.items():
            swap_into_place(path, root / part)
    finally:
        for path in staging.values():
            shutil.rmtree(path, ignore_errors=True)
    doc = summary.pop("_doc")
    missing_links = [p for p in doc.links if not (root / p).is_file()]
    if missing_links:  # a bug, not bad input: every linked file was written above
        raise RuntimeError(f"REPORT.md would link missing files: {missing_links[:5]}")
    atomic_write_json(root / "report.json", summary)
    atomic_write_text(root / "REPORT.html", doc.to_html())
    atomic_write_text(root / "REPORT.md", doc.markdown())
    log.info("report: %s", root / "REPORT.md")
    return summary


def _build(cfg, cells_dir: Path, images_dir: Path, root: Path, staging: dict, command: str) -> dict:
    from .plots import write_all_figures
    from .tables import write_all_tables

    rc = cfg.report
    cellset = load_cells(cells_dir)
    cellset.cells, ablation_cells = split_cells(cellset.cells)  # not the main model: their own section
    images = open_images(images_dir)
    cells = cellset.cells
    problems = list(cellset.problems) + list(images.problems)
    doc = Document("HeartBEiT Bench report")
    summary: dict = {"profile": cfg.profile, "command": command, "code_version": code_version(),
                     "cells": len(cells), "cells_dir": str(cells_dir), "images_dir": str(images_dir)}
    doc.para(f"Profile **{cfg.profile}**, code `{code_version()}`. Regenerate this report with:")
    doc.code(command)
    doc.para(f"Cells: `{cells_dir}` ({len(cells)} finished). Images: `{images_dir}`.")

    # -- tables and figures
    tables = None
    if cells:
        log.info("tables from %d cells", len(cells))
        long = long_metrics(cells, ci=rc.ci, n_resamples=rc.bootstrap, seed=rc.seed, min_n=rc.min_n,
                            ece_bins=rc.ece_bins, workers=rc.workers, cache_dir=score_cache(cfg))
        tables = write_all_tables(cells, staging["tables"], ci=rc.ci, n_resamples=rc.bootstrap, seed=rc.seed,
                                  min_n=rc.min_n, min_per_class=rc.min_per_class, ece_bins=rc.ece_bins, long=long)
        write_all_figures(cells, tables["long"], staging["figures"], n_bins=rc.ece_bins)
    long = tables["long"] if tables else None

    # -- data
    doc.heading("Data")
    tasks = sorted({c.meta["task"] for c in cells}) or list(cfg.matrix.tasks)
    if images.manifest is not None:
        counts, labels = data_tables(images.manifest, tasks)
        write_table(counts, staging["tables"], "data_counts", title="ECGs per site and split (last row: patients)")
        write_table(labels, staging["tables"], "data_labels", title="Positives / labelled ECGs per task and split")
        doc.para("ECGs per site and split from the image manifest (splits are by patient; external sites are "
                 "held out whole). The last row counts patients.")
        doc.table(counts)
        doc.table(labels, "Positives / labelled ECGs per task and split")
        summary["data"] = {"ecgs": int(len(images.manifest)),
                           "splits": {str(k): int(v) for k, v in images.manifest["split"].value_counts().sort_index().items()}}
    else:
        doc.para("No image manifest: data counts unavailable.")
    if images.layout is not None:
        lay = images.layout
        doc.para(f"Images: layout `{lay.get('layout')}`, {lay['image_size'][0]}x{lay['image_size'][1]} px, "
                 f"{lay.get('duration_s', '?')} s across the width ({float(lay.get('px_per_s', 0)):.1f} px/s, "
                 f"{float(lay.get('px_per_mv', 0)):.1f} px/mV).")

    # -- seeds and models
    doc.heading("Models, initialisation and seeds")
    if cells:
        meta = pd.DataFrame([c.meta for c in cells])
        models = (meta.groupby(["arch_family", "arch", "init"], sort=False)
                  .agg(cells=("cell_id", "count"), tasks=("task", lambda s: ", ".join(sorted(set(s)))),
                       fractions=("fraction", lambda s: ", ".join(fraction_label(f) for f in sorted(set(s)))))
                  .reset_index())
        rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
        models = models.sort_values(["arch_family", "arch"], key=lambda s: s.map(rank) if s.name == "arch_family" else s)
        models.columns = ["Family", "Architecture", "Init", "Cells", "Tasks", "Fractions"]
        doc.para("Init: `pretrained` = HeartBEiT masked-image-modeling export; `imagenet` = ImageNet weights from a "
                 "local folder; `random` = random initialisation (no weights were found or none apply).")
        doc.table(models.reset_index(drop=True))
        if cfg.matrix.allow_random_init:  # the preflight let ImageNet baselines start from random init
            from heartbeit.config.preflight import missing_weights

            summary["allow_random_init"] = missing_weights(cfg.matrix)
            doc.para("**matrix.allow_random_init: true** — ImageNet baselines without weights in "
                     "`matrix.imagenet_weights_dir` trained from random init, unlike the paper: "
                     + (", ".join(f"`{a}`" for a in summary["allow_random_init"]) or "none here") + ".")
        summary["inits"] = {f"{r.Architecture}": r.Init for r in models.itertuples(index=False)}
        seeds = sorted({int(s) for s in meta["seed"]})
        draws = sorted({int(d) for d in meta.get("draw", pd.Series([0]))})
        summary["seeds"] = seeds
        summary["draws"] = draws
        loaded = [{"Architecture": m["arch"], "Init": m.get("init", ""), "File": (m.get("weights") or {}).get("file", ""),
                   "Tensors loaded": (m.get("weights") or {}).get("tensors_loaded", 0),
                   "New (random) tensors": ", ".join((m.get("weights") or {}).get("new_tensors", []))}
                  for m in meta.drop_duplicates(["arch", "init"]).to_dict("records") if m.get("init") != "random"]
        if loaded:
            doc.para("Weights were loaded strictly (every tensor of the architecture matched; only the classifier "
                     "head may be new); what truly loaded, per model:")
            doc.table(pd.DataFrame(loaded))
        counts, flagged, sanity_summary = sanity_tables([c.meta for c in cells])
        summary["sanity"] = sanity_summary
        doc.heading("Cell sanity", 3)
        doc.para(SANITY_NOTE)
        doc.table(counts, "Verdicts per model")
        if len(flagged):
            write_table(flagged, staging["tables"], "sanity_flagged", title="Cells with a sanity verdict")
            doc.table(flagged, "Cells with a sanity verdict (all are kept in every table)")
        else:
            doc.para("No cell collapsed, had a non-finite loss or stayed at chance on validation.")
    else:
        seeds, draws = [], []
    doc.bullets([f"training seeds: {', '.join(map(str, seeds)) or MISSING}; training draws: "
                 f"{', '.join(map(str, draws)) or MISSING}",
                 f"synthetic data seed {cfg.synth.seed}; split seed {cfg.render.split_seed}; "
                 f"report seed {rc.seed} (bootstrap, ECG sampling, synthetic STEMI ECGs)",
                 f"CIs: {rc.ci:.0%}; AUPRC bootstrap {rc.bootstrap} resamples; metrics need ≥ {rc.min_n} ECGs; "
                 f"subgroups flagged below {rc.min_per_class} per class; ECE with {rc.ece_bins} bins"])

    # -- results
    if tables:
        def figure(name: str, caption: str) -> None:
            if (staging["figures"] / name).is_file():
                doc.image(f"figures/{name}", caption)

        for task in sorted(long["task"].unique()):
            doc.heading(f"Task: {task}")
            for eval_set in _eval_sets(long, task):
                where = "internal test set" if eval_set == "internal" else "external validation"
                doc.table(fraction_table(long, task, eval_set, "auroc"), f"AUROC [95% CI] by training fraction — {where}")
                if not tables["paired"].empty:
                    doc.table(paired_table(tables["paired"], task, eval_set),
                              f"ΔAUROC (HeartBEiT − baseline), paired DeLong, p Holm-adjusted within this table "
                              f"(raw p in tables/paired_long) — {where}")
            figure(f"fraction_{task}.png", f"{task}: performance vs training fraction")
            largest = max(long[long["task"] == task]["fraction"])
            for eval_set in _eval_sets(long, task):
                figure(f"roc_pr_{task}_{eval_set}_{fraction_label(largest).rstrip('%')}pct.png",
                       f"{task}: ROC and PR curves, {eval_set}, {fraction_label(largest)} of training data")
                figure(f"reliability_{task}_{eval_set}.png", f"{task}: calibration, {eval_set}")
            for eval_set in _eval_sets(long, task):
                where = "internal test set" if eval_set == "internal" else "external validation"
                doc.table(calibration_table(long, task, eval_set),
                          f"Brier score / ECE ({rc.ece_bins} bins) by training fraction — {where} (lower is better)")
                if not tables["subgroups"].empty:
                    sub = subgroup_table(tables["subgroups"], task, eval_set)
                    if len(sub):
                        doc.table(sub, f"AUROC [95% CI] by site, sex and age band at the largest fraction — {where}; "
                                       f"'too small' = fewer than {rc.min_per_class} positives or negatives")
        if not tables["paired"].empty:
            doc.heading("Do the differences survive repeated draws?", 3)
            robust = robustness_table(tables["paired"])
            runs = int(robust["Runs"].max()) if len(robust) else 0
            below = min(1.0, cfg.matrix.draws_below)
            doc.para(f"Each paired comparison above is repeated over every training seed and patient-level training "
                     f"draw ({runs} run(s) at most per cell; fractions below {fraction_label(below)} get "
                     f"{cfg.matrix.draws} independent draw(s) of their patients). A difference 'holds in every run' "
                     "when every run gives a Holm-adjusted p < 0.05 with the same sign; the fraction plots' bars show the "
                     "same spread.")
            holds = robust[robust["Verdict"] == "holds in every run"]
            summary["robust_differences"] = int(len(holds))
            doc.table(robust, "HeartBEiT vs each baseline across seeds and training draws")
        signal = tables.get("signal")
        doc.heading("Image vs signal: does drawing the ECG as a picture help?", 3)
        if signal is not None and not signal.empty:
            doc.para("Every image model against the 1-D XResNet on the filtered waveform the image is drawn from "
                     "(same training ECGs, fraction, seed and draw; same test ECGs). Δ = image − signal AUROC, "
                     "paired DeLong test.")
            for task in sorted(signal["task"].unique()):
                for eval_set in sorted(signal[signal["task"] == task]["eval_set"].unique()):
                    where = "internal test set" if eval_set == "internal" else "external validation"
                    doc.table(paired_table(signal, task, eval_set),
                              f"{task}: ΔAUROC (image − signal), p Holm-adjusted within this table — {where}")
            doc.table(robustness_table(signal), "Image vs signal across seeds and training draws")
            summary["image_vs_signal"] = int(len(signal))
        else:
            doc.para("Not available: the matrix has no signal-domain architecture (add e.g. signal_xresnet1d_tiny "
                     "to matrix.architectures).")
        long_ablation = long_metrics(ablation_cells, ci=rc.ci, n_resamples=rc.bootstrap, seed=rc.seed, min_n=rc.min_n,
                                     ece_bins=rc.ece_bins, workers=rc.workers, cache_dir=score_cache(cfg))
        ablation = write_ablation(doc, ablation_cells, long, long_ablation, staging["tables"], staging["figures"],
                                  cfg.matrix.ablation_label_fraction)
        if ablation is not None:
            summary["pretraining_ablation"] = ablation
        doc.heading("All tables and figures", 3)
        doc.para("Every table exists as Markdown, LaTeX and CSV; the long tables also as Parquet and JSON.")
        doc.link_list(_files(staging["tables"], ".md"))
        doc.link_list(_files(staging["figures"], ".png"))

    # -- saliency
    doc.heading("Where the models look: saliency by lead and time")
    doc.para("Grad-CAM for every image model (FullGrad as well for the CNNs) on positive ECGs of the "
             f"{rc.saliency_split} split, models trained on the largest fraction (first seed/draw). Saliency is "
             "mapped back to lead and time through the renderer's lead boxes (layout.json). "
             "'II rhythm' is the 10 s lead II strip; the other regions show 2.5 s each. The signal-domain model "
             "is read on the same ECGs' waveforms: |input × gradient| summed per lead (its leads are its input "
             "channels, so no layout is involved).")
    sres = saliency_part(cellset, images, cfg, staging["saliency"], long) if cells else SaliencyResult()
    problems += sres.notes
    for task, table in sres.tables.items():
        doc.heading(f"{task}: per-lead saliency", 3)
        doc.table(table, LEAD_NOTE)
        figs = sres.figures.get(task, [])
        lead_time = [f for f in figs if "/lead_time_" in f[0]]
        for rel, cap in lead_time[:2]:
            doc.image(rel, cap)
        overlays = [f for f in figs if "/overlays/" in f[0]]
        if overlays:
            doc.image(*overlays[0])
            doc.para(f"All {len(figs)} saliency figures of {task}:")
            doc.link_list([rel for rel, _ in figs])
    doc.heading("Synthetic STEMI: does the model look at the injured territory?", 3)
    if sres.best:
        b = sres.best
        ci = (f" (95% CI {b['ratio_low']:.2f}–{b['ratio_high']:.2f})" if b["ratio_low"] is not None else "")
        auroc_text = f"{b['internal_auroc']:.3f}" if b["internal_auroc"] is not None else MISSING
        verdict = ("more than chance" if b["ratio_low"] is not None and b["ratio_low"] > 1 else
                   "less than chance" if b["ratio_high"] is not None and b["ratio_high"] < 1 else
                   "not distinguishable from chance at this sample size" if b["ratio_low"] is not None else
                   "no interval (too few ECGs)")
        head = (f"Best stemi model (highest internal-test AUROC at {fraction_label(b['fraction'])}): "
                f"**{b['arch']} ({b['init']})**, AUROC {auroc_text}. ")
        zero = (f" ({b['n_zero_maps']} ECG(s) left out: an all-zero Grad-CAM map, i.e. no positive evidence "
                "for STEMI anywhere)" if b["n_zero_maps"] else "")
        if b["territory_ratio"] is None:
            doc.para(head + "Its Grad-CAM maps on the synthetic STEMI ECGs were all zero: no territory ratio.")
        else:
            doc.para(head + f"On {b['n_images']} synthetic STEMI ECGs of known territory{zero} its Grad-CAM puts "
                     f"**{b['territory_ratio']:.2f}×**{ci} the saliency mass a uniform spread would put on the "
                     f"territory's leads: {verdict}.")
        doc.table(territory_table(sres.territory), TERRITORY_NOTE)
        for rel, cap in sres.territory_figures:
            doc.image(rel, cap)
        summary["territory"] = b
    else:
        doc.para("Not available (needs a finished stemi cell with its weights and the image shards).")

    # -- Wasserstein
    doc.heading("Modality distance: ECG images vs natural images")
    wtable, wnote = wasserstein_part(images, cfg, staging["tables"])
    if wtable is not None:
        doc.para(wnote)
        doc.table(wtable, "Average pairwise Wasserstein distance (mean ± sd over pairs); across / max within > 1 "
                          "= a modality gap")
        summary["wasserstein"] = wtable.to_dict(orient="records")
    else:
        problems.append(wnote)
        doc.para(wnote)

    # -- problems
    doc.heading("Missing or left out")
    if problems:
        doc.bullets(problems)
    else:
        doc.para("Nothing: every part was built.")
    summary["problems"] = problems
    summary["_doc"] = doc
    return summary
