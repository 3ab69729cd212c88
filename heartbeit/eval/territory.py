"""The synthetic-STEMI territory analysis: does the best STEMI model look at the injured territory's leads?

Synthetic ECGs of known territory are simulated, then filtered and drawn through the render stage's own
chain (heartbeit.data.render.stage.draw_batch, with the finished render's geometry from layout.json), so they
look exactly like the shards' images. Every stemi image model of the largest fraction gets a territory
ratio (Grad-CAM mass on the territory's lead boxes / those boxes' share of the area); the signal model gets
the same on its waveforms with |input × gradient| per lead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from heartbeit.models.families import arch_family

from . import saliency as sal
from .cells import CellResult, first_runs
from .document import Document, part_link, slug
from .inference import load_cell_model, predict
from .report_inputs import MODEL_FILE, CellSet, ImageSet, image_cells, signal_cells
from .tables import MISSING, fraction_label, write_long, write_table

TERRITORY_NOTE = ("Ratio = share of Grad-CAM mass inside every box drawing a territory lead / those boxes' share of "
                  "the image area (a uniform map gives 1; > 1 = the model looks at the injured territory). Mean over "
                  "synthetic ECGs of known territory rendered with the run's layout and size; 95% CI (t); 'share > 1' = "
                  "fraction of ECGs with ratio > 1; P(stemi) = the model's mean score on them. The signal model's "
                  "rows use |input × gradient| on the same ECGs' waveforms: territory leads' share over their share "
                  "of the 12 leads.")


@dataclass
class TerritoryResult:
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: dict | None = None  # the analysed model (highest internal AUROC)
    figures: list = field(default_factory=list)  # [(relpath, caption)]
    notes: list[str] = field(default_factory=list)


def synthetic_stemi(territory: str, n: int, images: ImageSet, cfg, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic ECGs with a STEMI of `territory`, filtered and drawn exactly as the image shards
    (layout, size, scales from layout.json; filter settings from the render config): (uint8 images
    [n, H, W], float32 mV waveforms [n, 12, L] as the shards store them for signal models)."""
    from heartbeit.data.render.stage import draw_batch, layout_draw_kwargs
    from heartbeit.data.synth.ecg import STEMI_TERRITORIES, simulate_ecg

    lay = images.layout
    site = next((s for s in cfg.synth.sites if not s.external), None)
    noise = dict(noise_mv=site.noise_mv, wander_mv=site.wander_mv, powerline_hz=site.powerline_hz,
                 powerline_mv=site.powerline_mv) if site else {}
    fs = float(cfg.render.resample_hz or cfg.ingest.corpus_fs)
    draw = layout_draw_kwargs(lay, cfg.render)
    seeds = np.random.SeedSequence([int(seed), 0x57E, STEMI_TERRITORIES.index(territory)]).generate_state(n)
    sig = np.stack([simulate_ecg(int(s), fs=fs, duration_s=draw["duration_s"], stemi_territory=territory,
                                 severity=cfg.report.territory_severity, **noise) for s in seeds])
    imgs, waves = draw_batch(sig, fs, cfg.render, fs, draw, cfg.render.wave_hz or int(fs))
    return imgs, waves.astype(np.float32) / 1000.0


def _internal_auroc(long: pd.DataFrame | None) -> dict:
    """cell_id -> internal-test AUROC of the stemi cells (all sites)."""
    if long is None or long.empty:
        return {}
    part = long[(long["task"] == "stemi") & (long["eval_set"] == "internal") & (long["site"] == "all")]
    return dict(zip(part["cell_id"].astype(str), part["auroc"]))


def best_stemi_cell(cells: list[CellResult], long: pd.DataFrame | None, dirs: dict) -> tuple[CellResult | None, str]:
    """Highest internal-test AUROC among the stemi image models at the largest fraction (first
    seed/draw) that kept their weights; the note says when a better-scoring cell had none."""
    stemi = [c for c in cells if c.meta["task"] == "stemi"]
    if not stemi:
        return None, "no stemi cells"
    fraction = max(float(c.meta["fraction"]) for c in stemi)
    runs = first_runs(stemi, "stemi", fraction, by_family=True)
    auroc = _internal_auroc(long)
    ranked = sorted(runs.values(), key=lambda c: -np.nan_to_num(auroc.get(str(c.meta["cell_id"]), np.nan), nan=-1))
    for i, c in enumerate(ranked):
        if (dirs[str(c.meta["cell_id"])] / MODEL_FILE).is_file():
            note = "" if i == 0 else f"{i} better-scoring model(s) had no `{MODEL_FILE}`"
            return c, note
    return None, f"no stemi model at {fraction_label(fraction)} kept `{MODEL_FILE}`"


def territory_part(cellset: CellSet, images: ImageSet, cfg, out_dir: Path, long) -> TerritoryResult:
    """The analysis (see the module note); files go to `out_dir` (the saliency part's folder). Nothing
    when there is no image model or no usable shard (the saliency part says so)."""
    from scipy import stats

    from heartbeit.data.synth.ecg import STEMI_TERRITORY_LEADS

    res = TerritoryResult()
    rc = cfg.report
    cells = image_cells(cellset.cells)
    if not cells or not images.usable:
        return res
    best, note = best_stemi_cell(cells, long, cellset.dirs)
    if note:
        res.notes.append(f"territory analysis: {note}")
    if best is None or rc.territory_samples < 2:
        return res
    fraction = float(best.meta["fraction"])
    runs = {k: c for k, c in first_runs(cells, "stemi", fraction, by_family=True).items() if cellset.has_model(c)}
    boxes = images.boxes
    h, _ = images.size
    synthetic = {t: synthetic_stemi(t, rc.territory_samples, images, cfg, rc.seed) for t in STEMI_TERRITORY_LEADS}
    rows = []
    auroc = _internal_auroc(long)
    for (arch, init), cell in tqdm(runs.items(), desc="territory", unit="model"):
        model = load_cell_model(cellset.folder(cell), arch, h)
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
                    ecgs[0], maps[0], boxes, out_dir / "territory" / f"{slug(territory)}.png",
                    f"Synthetic {territory} STEMI (leads {', '.join(STEMI_TERRITORY_LEADS[territory])}) — "
                    f"{arch} ({init}), Grad-CAM\nP(stemi) = {p[0]:.2f}; territory ratio {ratios[0]:.2f}")
                res.figures.append((part_link(path, out_dir), f"synthetic {territory} STEMI"))
        r = np.concatenate([a for a, _ in all_ratios])
        p = np.concatenate([b for _, b in all_ratios])
        rows.append(_ratio_row(arch, init, cell, is_best, "all", r, p, auroc, stats))
    # the signal model on the same synthetic ECGs' waveforms (input×gradient per lead), for comparison
    signal_runs = {k: c for k, c in first_runs(signal_cells(cellset.cells), "stemi", fraction, by_family=True).items()
                   if cellset.has_model(c)}
    for (arch, init), cell in signal_runs.items():
        model = load_cell_model(cellset.folder(cell), arch, 0)
        parts = []
        for territory, (_, waves) in synthetic.items():
            ratios = sal.signal_territory_ratios(sal.signal_attributions(model, waves), STEMI_TERRITORY_LEADS[territory])
            p = predict(model, arch, waves)
            rows.append(_ratio_row(arch, init, cell, False, territory, ratios, p, auroc, stats))
            parts.append((ratios, p))
        rows.append(_ratio_row(arch, init, cell, False, "all", np.concatenate([a for a, _ in parts]),
                               np.concatenate([b for _, b in parts]), auroc, stats))
    res.table = pd.DataFrame(rows)
    write_long(res.table, out_dir, "territory_long")
    write_table(territory_table(res.table), out_dir, "territory",
                title="Synthetic STEMI: saliency on the injured territory's leads vs a uniform spread",
                note=TERRITORY_NOTE)
    overall = res.table[(res.table["best"]) & (res.table["territory"] == "all")].iloc[0]
    res.best = {"arch": best.meta["arch"], "init": best.meta["init"], "cell_id": str(best.meta["cell_id"]),
                "fraction": fraction, "internal_auroc": _float(auroc.get(str(best.meta["cell_id"]))),
                "territory_ratio": _float(overall["ratio_mean"]), "ratio_low": _float(overall["ratio_low"]),
                "ratio_high": _float(overall["ratio_high"]), "n_images": int(overall["n_images"]),
                "n_zero_maps": int(overall["n_zero_maps"])}
    return res


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
        how = " input×gradient" if arch_family(r.arch) == "signal" else ""
        rows.append({"Model": f"{r.arch} ({r.init}){how}" + (" ★ best" if r.best else ""),
                     "Internal AUROC": f"{r.internal_auroc:.3f}" if math.isfinite(r.internal_auroc) else MISSING,
                     "Territory": r.territory, "n": r.n_images, "Zero maps": r.n_zero_maps,
                     "Ratio": f"{r.ratio_mean:.2f}{ci}" if math.isfinite(r.ratio_mean) else MISSING,
                     "Share > 1": f"{r.share_above_1:.2f}" if math.isfinite(r.share_above_1) else MISSING,
                     "P(stemi)": f"{r.p_stemi_mean:.2f}"})
    return pd.DataFrame(rows)


def territory_section(doc: Document, tres: TerritoryResult, summary: dict) -> None:
    doc.heading("Synthetic STEMI: does the model look at the injured territory?", 3)
    if not tres.best:
        doc.para("Not available (needs a finished stemi cell with its weights and the image shards).")
        return
    b = tres.best
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
    doc.table(territory_table(tres.table), TERRITORY_NOTE)
    for rel, cap in tres.figures:
        doc.image(rel, cap)
    summary["territory"] = b
