"""The report's pretraining ablation ("Does pretraining cause the gain?") from synthetic cells: the table,
figure and machine-readable runs, and the ablation cells kept out of every main table."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from heartbeit.config import load_config
from heartbeit.eval.ablation import ablation_runs, ablation_table, split_cells
from heartbeit.eval.cells import long_metrics, read_cells
from helpers.synthetic_cells import make_predictions, write_fake_cells
from heartbeit.utils.io import atomic_write_json

HB, TWIN = "heartbeit_micro_patch8_64", "vit_micro_patch8_64"
ARCHS = {HB: "heartbeit", TWIN: "vit", "resnet18": "resnet"}
STEPS = {15: 0.25, 30: 0.5}  # of a 60-step pretraining run


def write_cells(cells_dir: Path) -> list[str]:
    """Benchmark cells (the twin as random init) + ablation cells of HB at 10 %; returns the ablation ids."""
    for d in write_fake_cells(cells_dir, archs=ARCHS, tasks=("stemi", "hcm"), fractions=(0.1, 1.0), draws=(0, 1),
                              n_test=120, n_external=60):
        meta = json.loads((d / "cell.json").read_text())
        if meta["arch"] == TWIN:
            meta["init"] = "random"  # the same-size twin has no weights (synthetic_cells says imagenet)
        atomic_write_json(d / "cell.json", meta)
        atomic_write_json(d / "complete.json", {"cell_id": meta["cell_id"]})
    ids = []
    for src in sorted(cells_dir.iterdir()):
        meta = json.loads((src / "cell.json").read_text())
        if meta["arch"] != HB or meta["fraction"] != 0.1:
            continue
        for step, fraction in STEPS.items():
            cell_id = f"abl{step}{meta['task']}{meta['draw']}"
            d = cells_dir / cell_id
            d.mkdir()
            make_predictions(meta["task"], "heartbeit", 0.1, 0, meta["draw"], n_test=120, n_external=60,
                             arch=f"{HB}-{step}").to_parquet(d / "predictions.parquet", index=False)
            atomic_write_json(d / "cell.json", {**meta, "cell_id": cell_id, "pretrain_step": step,
                                                "pretrain_fraction": fraction, "pretrain_sha256": "f" * 64})
            atomic_write_json(d / "complete.json", {"cell_id": cell_id})
            ids.append(cell_id)
    return ids


def test_runs_and_table_hold_every_point_and_run(tmp_path):
    ids = write_cells(tmp_path / "cells")
    main, ablation = split_cells(read_cells(tmp_path / "cells", hold=False))
    assert sorted(c.meta["cell_id"] for c in ablation) == sorted(ids) and len(main) == 3 * 2 * 2 * 2
    kw = dict(n_resamples=20, min_n=5)
    long_main, long_abl = long_metrics(main, **kw), long_metrics(ablation, **kw)
    runs = ablation_runs(long_main, long_abl, [c.meta for c in ablation])
    # per task: 0 (twin), 25 %, 50 %, 100 % (HeartBEiT) x 2 draws, all at 10 % labels
    assert len(runs) == 2 * 4 * 2 and set(runs["label_fraction"]) == {0.1}
    assert set(runs["pretrain_fraction"]) == {0.0, 0.25, 0.5, 1.0}
    assert set(runs[runs["pretrain_fraction"] == 0]["source_arch"]) == {TWIN}
    assert set(runs[runs["pretrain_fraction"] == 1]["source_arch"]) == {HB}
    assert set(runs[runs["pretrain_fraction"] == 0.5]["pretrain_step"]) == {30}
    internal = long_abl[(long_abl["eval_set"] == "internal") & (long_abl["site"] == "all")]
    expect = internal[internal["cell_id"] == "abl15stemi1"]["auroc"].item()
    assert runs[runs["cell_id"] == "abl15stemi1"]["auroc"].item() == expect

    table = ablation_table(runs)
    assert list(table.columns) == ["Task", "Model", "Labels", "0 (random ViT)", "25% (step 15)", "50% (step 30)",
                                   "100% (final export)"]
    row = table[table["Task"] == "stemi"].iloc[0]
    quarter = runs[(runs["task"] == "stemi") & (runs["pretrain_fraction"] == 0.25)]
    assert row["25% (step 15)"].startswith(f"{quarter['auroc'].mean():.3f} [")
    assert f"s0d1 {expect:.3f}" in row["25% (step 15)"]
    # no ablation cells: nothing to plot
    assert ablation_runs(long_main, long_abl.iloc[0:0], []).empty


def test_report_section_and_main_tables_without_ablation_cells(tmp_path):
    from heartbeit.eval.report import run_report

    ids = write_cells(tmp_path / "matrix" / "cells")
    cfg = load_config("ci", overrides=[f"workdir={tmp_path}", f"results_dir={tmp_path}/results", "report.bootstrap=20",
                                       "report.min_n=5"])
    summary = run_report(cfg, images_dir=tmp_path / "no-images", command="heartbeit report --profile ci")
    out = tmp_path / "results"
    text = (out / "REPORT.md").read_text()
    assert "### Does pretraining cause the gain?" in text and "figures/ablation_pretraining.png" in text
    assert (out / "figures" / "ablation_pretraining.png").stat().st_size > 1000
    table = pd.read_csv(out / "tables" / "ablation_auroc.csv")
    assert list(table["Task"]) == ["hcm", "stemi"] and "50% (step 30)" in table.columns
    runs = json.loads((out / "tables" / "ablation_long.json").read_text())
    assert sorted({r["cell_id"] for r in runs if r["pretrain_fraction"] in (0.25, 0.5)}) == sorted(ids)
    assert summary["pretraining_ablation"]["cells"] == len(ids) and summary["cells"] == 24
    # the benchmark's own tables: no ablation cell anywhere
    main_long = pd.read_parquet(out / "tables" / "metrics_long.parquet")
    assert not set(main_long["cell_id"]) & set(ids) and len(set(main_long["cell_id"])) == 24
    # paired tests: HeartBEiT vs 2 baselines x 2 tasks x 2 eval sets x 2 fractions x 2 draws, each once (an
    # ablation cell taken for HeartBEiT would add comparisons at 10 %)
    paired = pd.read_parquet(out / "tables" / "paired_long.parquet")
    assert len(paired) == 32 and not paired.duplicated(["task", "eval_set", "fraction", "seed", "draw", "arch"]).any()
    assert re.search(r"\| heartbeit +\| heartbeit_micro_patch8_64 +\| pretrained +\| 8 +\|", text)  # models table
