"""The report's sections about the data, the models and the results: each writes its part of the document
(and of report.json's summary) from tables already computed; the tables themselves are
heartbeit.eval.tables', the figures heartbeit.eval.plots'."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from heartbeit.models.families import FAMILY_ORDER

from .ablation import write_ablation
from .cells import CellResult, long_metrics
from .document import Document, part_files
from .report_inputs import ImageSet
from .sanity_report import NOTE as SANITY_NOTE, sanity_tables
from .tables import (MISSING, calibration_table, fraction_label, fraction_table, paired_table, robustness_table,
                     subgroup_table, write_table)


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


def data_section(doc: Document, cfg, cells: list[CellResult], images: ImageSet, tables_dir: Path, summary: dict) -> None:
    doc.heading("Data")
    tasks = sorted({c.meta["task"] for c in cells}) or list(cfg.matrix.tasks)
    if images.manifest is not None:
        counts, labels = data_tables(images.manifest, tasks)
        write_table(counts, tables_dir, "data_counts", title="ECGs per site and split (last row: patients)")
        write_table(labels, tables_dir, "data_labels", title="Positives / labelled ECGs per task and split")
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


def models_section(doc: Document, cfg, cells: list[CellResult], tables_dir: Path, summary: dict) -> None:
    """Which models, how they were initialised (what truly loaded), the cells' sanity verdicts, and every seed."""
    rc = cfg.report
    doc.heading("Models, initialisation and seeds")
    seeds, draws = [], []
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
            write_table(flagged, tables_dir, "sanity_flagged", title="Cells with a sanity verdict")
            doc.table(flagged, "Cells with a sanity verdict (all are kept in every table)")
        else:
            doc.para("No cell collapsed, had a non-finite loss or stayed at chance on validation.")
    doc.bullets([f"training seeds: {', '.join(map(str, seeds)) or MISSING}; training draws: "
                 f"{', '.join(map(str, draws)) or MISSING}",
                 f"synthetic data seed {cfg.synth.seed}; split seed {cfg.render.split_seed}; "
                 f"report seed {rc.seed} (bootstrap, ECG sampling, synthetic STEMI ECGs)",
                 f"CIs: {rc.ci:.0%}; AUPRC bootstrap {rc.bootstrap} resamples; metrics need ≥ {rc.min_n} ECGs; "
                 f"subgroups flagged below {rc.min_per_class} per class; ECE with {rc.ece_bins} bins"])


def _eval_sets(long: pd.DataFrame, task: str) -> list[str]:
    """Internal test set first, then external validation."""
    present = set(long[long["task"] == task]["eval_set"])
    return [e for e in ("internal", "external") if e in present] + sorted(present - {"internal", "external"})


def _where(eval_set: str) -> str:
    return "internal test set" if eval_set == "internal" else "external validation"


def task_section(doc: Document, cfg, tables: dict, task: str, figures_dir: Path) -> None:
    """One task's metric tables and figures across training fractions."""
    long = tables["long"]

    def figure(name: str, caption: str) -> None:
        if (figures_dir / name).is_file():
            doc.image(f"figures/{name}", caption)

    doc.heading(f"Task: {task}")
    for eval_set in _eval_sets(long, task):
        doc.table(fraction_table(long, task, eval_set, "auroc"), f"AUROC [95% CI] by training fraction — {_where(eval_set)}")
        if not tables["paired"].empty:
            doc.table(paired_table(tables["paired"], task, eval_set),
                      f"ΔAUROC (HeartBEiT − baseline), paired DeLong, p Holm-adjusted within this table "
                      f"(raw p in tables/paired_long) — {_where(eval_set)}")
    figure(f"fraction_{task}.png", f"{task}: performance vs training fraction")
    largest = max(long[long["task"] == task]["fraction"])
    for eval_set in _eval_sets(long, task):
        figure(f"roc_pr_{task}_{eval_set}_{fraction_label(largest).rstrip('%')}pct.png",
               f"{task}: ROC and PR curves, {eval_set}, {fraction_label(largest)} of training data")
        figure(f"reliability_{task}_{eval_set}.png", f"{task}: calibration, {eval_set}")
    for eval_set in _eval_sets(long, task):
        doc.table(calibration_table(long, task, eval_set),
                  f"Brier score / ECE ({cfg.report.ece_bins} bins) by training fraction — {_where(eval_set)} "
                  "(lower is better)")
        if not tables["subgroups"].empty:
            sub = subgroup_table(tables["subgroups"], task, eval_set)
            if len(sub):
                doc.table(sub, f"AUROC [95% CI] by site, sex and age band at the largest fraction — {_where(eval_set)}; "
                               f"'too small' = fewer than {cfg.report.min_per_class} positives or negatives")


def comparisons_section(doc: Document, cfg, tables: dict, summary: dict) -> None:
    """Whether HeartBEiT's differences hold across seeds and draws, and image models vs the signal model."""
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
        if "within_training_noise" in tables["paired"]:
            noisy = int(tables["paired"]["within_training_noise"].fillna(False).astype(bool).sum())
            summary["within_training_noise"] = noisy
            doc.para(f"Training noise: the AUROC spread over training seeds was measured once per model and task "
                     f"(`{cfg.report.seed_spread_file}`, 100 % of the labels). {noisy} paired difference(s) are no "
                     "larger than the two models' spread and are marked 'within training noise' (≈ in the tables) "
                     "whatever their p-value: the paired DeLong test sees the test set's sampling noise, not the "
                     "noise of training.")
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
                doc.table(paired_table(signal, task, eval_set),
                          f"{task}: ΔAUROC (image − signal), p Holm-adjusted within this table — {_where(eval_set)}")
        doc.table(robustness_table(signal), "Image vs signal across seeds and training draws")
        summary["image_vs_signal"] = int(len(signal))
    else:
        doc.para("Not available: the matrix has no signal-domain architecture (add e.g. signal_xresnet1d_tiny "
                 "to matrix.architectures).")


def results_section(doc: Document, cfg, tables: dict, ablation_cells: list[CellResult], staging: dict, summary: dict,
                    cache_dir: Path) -> None:
    """Per task, the comparisons, the pretraining ablation, and the list of every table and figure."""
    rc = cfg.report
    long = tables["long"]
    for task in sorted(long["task"].unique()):
        task_section(doc, cfg, tables, task, staging["figures"])
    comparisons_section(doc, cfg, tables, summary)
    long_ablation = long_metrics(ablation_cells, ci=rc.ci, n_resamples=rc.bootstrap, seed=rc.seed, min_n=rc.min_n,
                                 ece_bins=rc.ece_bins, workers=rc.workers, cache_dir=cache_dir)
    ablation = write_ablation(doc, ablation_cells, long, long_ablation, staging["tables"], staging["figures"],
                              cfg.matrix.ablation_label_fraction)
    if ablation is not None:
        summary["pretraining_ablation"] = ablation
    doc.heading("All tables and figures", 3)
    doc.para("Every table exists as Markdown, LaTeX and CSV; the long tables also as Parquet and JSON.")
    doc.link_list(part_files(staging["tables"], ".md"))
    doc.link_list(part_files(staging["figures"], ".png"))
