"""The report's saliency part: Grad-CAM (+ FullGrad for CNNs) of every image model on sampled positive ECGs,
mapped to lead and time through the renderer's lead boxes, and |input × gradient| per lead for the
signal-domain model on the same ECGs' waveforms. The maps themselves are heartbeit.eval.saliency's."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import saliency as sal
from .cells import first_runs
from .document import Document, part_link, slug
from .inference import load_cell_model, predict
from .report_inputs import MODEL_FILE, CellSet, ImageSet, image_cells, pick_rows, read_images, \
    read_waves, signal_cells
from .tables import MISSING, fraction_label, model_label, write_long, write_table

METHOD_LABEL = {"gradcam": "Grad-CAM", "fullgrad": "FullGrad", "inputxgrad": "input×gradient"}

LEAD_NOTE = ("Cells: mean share of each image's saliency mass (%) and, in brackets, the enrichment over a uniform "
             "map (mass share / area share; > 1 = more than chance). 'II rhythm' is the 10 s strip; "
             "per lead totals in lead_importance_long (column lead). Grad-CAM columns name the grid the model's "
             "target layer sees (e.g. 2x2): attribution finer than one grid cell is interpolation. The signal "
             "model's column is |input × gradient| summed per lead of its waveform input (chance = 1/12 per lead; "
             "it has no II rhythm strip).")


@dataclass
class SaliencyResult:
    importance: pd.DataFrame = field(default_factory=pd.DataFrame)
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: dict = field(default_factory=dict)  # task -> [(relpath, caption)]
    tables: dict = field(default_factory=dict)  # task -> display DataFrame
    notes: list[str] = field(default_factory=list)


def _methods(model, cfg) -> list[str]:
    return ["gradcam", "fullgrad"] if cfg.report.fullgrad and sal.supports_fullgrad(model) else ["gradcam"]


def saliency_part(cellset: CellSet, images: ImageSet, cfg, out_dir: Path) -> SaliencyResult:
    """Per task: the models of the largest fraction (first seed/draw) on sampled positive ECGs. Files go to
    `out_dir` (the saliency part's folder)."""
    res = SaliencyResult()
    rc = cfg.report
    cells = image_cells(cellset.cells)
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
        runs = first_runs(cells, task, fraction, by_family=True)
        with_model = {k: c for k, c in runs.items() if cellset.has_model(c)}
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
            model = load_cell_model(cellset.folder(cell), arch, h)
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
                stem = slug(f"{task}_{arch}_{init}_{method}")
                label = f"{arch} ({init}), {METHOD_LABEL[method]}"
                path = sal.lead_time_figure(
                    prof, out_dir / f"lead_time_{stem}.png",
                    f"{task}: saliency by lead and time, {label}; mean over {int(imp['n_images'].iloc[0])} "
                    f"positive {rc.saliency_split} ECGs, {fraction_label(fraction)} of training data")
                if path is not None:
                    figs.append((part_link(path, out_dir), f"{task} — {label}: saliency mass by lead and time"))
                for i in range(min(rc.saliency_samples, len(ecgs))):
                    p = sal.overlay_figure(
                        ecgs[i], maps[i], boxes, out_dir / "overlays" / f"{stem}_{i:02d}.png",
                        f"{task} positive #{i + 1} ({rc.saliency_split} split) — {label}\n"
                        f"P({task}) = {scores[i]:.2f}; trained on {fraction_label(fraction)}", METHOD_LABEL[method])
                    figs.append((part_link(p, out_dir), f"{task} — {label}: positive #{i + 1}"))
        imp_rows += _signal_importance(cellset, images, task, fraction, rows, res)
    if imp_rows:
        res.importance = pd.concat(imp_rows, ignore_index=True)
        res.profile = pd.concat(prof_rows, ignore_index=True)
        write_long(res.importance, out_dir, "lead_importance_long")
        write_long(res.profile, out_dir, "lead_time_long")
        for task in sorted(res.importance["task"].unique()):
            table = lead_table(res.importance[res.importance["task"] == task])
            res.tables[task] = table
            write_table(table, out_dir, f"lead_importance_{slug(task)}",
                        title=f"Share of saliency mass per lead region — {task}",
                        note=LEAD_NOTE)
    return res


def _signal_importance(cellset: CellSet, images: ImageSet, task: str, fraction: float, rows: pd.DataFrame,
                       res: SaliencyResult) -> list[pd.DataFrame]:
    """Per-lead input×gradient of the signal-domain model(s) on the same sampled positive ECGs' waveforms."""
    runs = {k: c for k, c in first_runs(signal_cells(cellset.cells), task, fraction, by_family=True).items()
            if cellset.has_model(c)}
    if not runs:
        return []
    try:
        waves = read_waves(images, rows)
    except ValueError as exc:
        res.notes.append(f"{task}: no waveforms for the signal model's attribution ({exc})")
        return []
    out = []
    for (arch, init), cell in runs.items():
        model = load_cell_model(cellset.folder(cell), arch, 0)
        imp = sal.signal_lead_importance(sal.signal_attributions(model, waves))
        out.append(imp.assign(task=task, arch=arch, arch_family="signal", init=init, fraction=fraction,
                              cell_id=str(cell.meta["cell_id"]), method="inputxgrad", resolution="sample"))
    return out


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


def saliency_section(doc: Document, cfg, sres: SaliencyResult) -> None:
    doc.heading("Where the models look: saliency by lead and time")
    doc.para("Grad-CAM for every image model (FullGrad as well for the CNNs) on positive ECGs of the "
             f"{cfg.report.saliency_split} split, models trained on the largest fraction (first seed/draw). Saliency "
             "is mapped back to lead and time through the renderer's lead boxes (layout.json). "
             "'II rhythm' is the 10 s lead II strip; the other regions show 2.5 s each. The signal-domain model "
             "is read on the same ECGs' waveforms: |input × gradient| summed per lead (its leads are its input "
             "channels, so no layout is involved).")
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
