"""Tables from fake cells: layout, formats, determinism, paired and subgroup tables, bad cell files."""
import hashlib
import json

import pandas as pd
import pytest

from heartbeit.eval.cells import long_metrics, read_cell, read_cells
from helpers.synthetic_cells import write_fake_cells
from heartbeit.eval.tables import format_ci, fraction_table, paired_comparisons, write_all_tables, write_table

ARCHS = {"heartbeit_micro": "heartbeit", "vit_micro": "vit", "resnet18": "resnet", "resnet1d": "signal"}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_fake_cells(root, archs=ARCHS, tasks=("stemi", "hcm"), fractions=(0.01, 0.1, 1.0), seeds=(0, 1),
                     n_test=300, n_external=200)
    return read_cells(root)


@pytest.fixture(scope="module")
def written(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    return out, write_all_tables(cells, out, n_resamples=100)


def test_format_ci():
    assert format_ci(0.8123, 0.7811, 0.8432) == "0.812 [0.781, 0.843]"
    assert format_ci(0.8, float("nan"), 0.9) == "0.800"
    assert format_ci(float("nan"), 0.1, 0.2) == "–"


def test_all_formats_written(written):
    out, res = written
    for task in ("stemi", "hcm"):
        for ev in ("internal", "external"):
            for kind in ("auroc", "auprc_trapz", "auprc_ap", "calibration", "spread_auroc", "paired", "subgroups"):
                for ext in ("md", "tex", "csv"):
                    assert (out / f"{kind}_{task}_{ev}.{ext}").stat().st_size > 100, (kind, task, ev, ext)
    for stem in ("metrics_long", "paired_long", "subgroups_long"):
        for ext in ("parquet", "json", "csv"):
            assert (out / f"{stem}.{ext}").is_file()
    long = pd.read_parquet(out / "metrics_long.parquet")
    assert len(long) == len(res["long"]) == 2 * 4 * 3 * 2 * 4  # tasks x archs x fractions x seeds x (2 sets + 2 sites)
    assert len(json.loads((out / "metrics_long.json").read_text())) == len(long)


def test_fraction_table_layout(written):
    out, res = written
    t = pd.read_csv(out / "auroc_stemi_internal.csv")
    assert list(t.columns) == ["Model", "Init", "1%", "10%", "100%"]
    assert list(t["Model"]) == ["heartbeit_micro", "vit_micro", "resnet18", "resnet1d"]  # paper order
    long = res["long"]
    sel = long[(long.task == "stemi") & (long.eval_set == "internal") & (long.site == "all")
               & (long.arch == "vit_micro") & (long.fraction == 0.1)]
    expected = format_ci(sel["auroc"].mean(), sel["auroc_low"].mean(), sel["auroc_high"].mean())
    assert t.loc[t.Model == "vit_micro", "10%"].item() == expected
    md = (out / "auroc_stemi_internal.md").read_text()
    assert md.startswith("### AUROC") and "| heartbeit_micro" in md
    tex = (out / "auroc_stemi_internal.tex").read_text()
    assert "\\begin{tabular}" in tex and "heartbeit\\_micro" in tex and "10\\%" in tex


def test_paired_table(written):
    out, res = written
    paired = res["paired"]
    # one reference, 3 baselines, 2 tasks, 3 fractions, 2 seeds, 2 eval sets
    assert len(paired) == 3 * 2 * 3 * 2 * 2
    assert (paired["n_unmatched"] == 0).all() and paired["p"].between(0, 1).all()
    t = pd.read_csv(out / "paired_stemi_internal.csv")
    assert list(t["Baseline"]) == ["vit_micro", "resnet18", "resnet1d"]
    cell = t.loc[t.Baseline == "resnet18", "1%"].item()
    assert cell.startswith("+") and "2/2 p<0.05" in cell  # the fake model has HeartBEiT far ahead at 1%


def test_paired_rejects_mismatched_labels(cells):
    ref = next(c for c in cells if c.meta["arch_family"] == "heartbeit")
    import copy
    other = copy.deepcopy(next(c for c in cells if c.meta["arch"] == "resnet18" and c.meta["task"] == ref.meta["task"]
                               and c.meta["fraction"] == ref.meta["fraction"] and c.meta["seed"] == ref.meta["seed"]))
    other.predictions["label"] = 1 - other.predictions["label"]
    with pytest.raises(ValueError, match="different labels"):
        paired_comparisons([ref, other])


def test_subgroup_table(written):
    out, res = written
    sub = res["subgroups"]
    assert set(sub["subgroup"]) == {"site", "sex", "age_band"}
    t = pd.read_csv(out / "subgroups_stemi_external.csv", keep_default_na=False)
    assert {"Subgroup", "Level", "n", "n_pos", "Flag"} <= set(t.columns)
    flagged = t[t["Flag"] == "too small"]
    small = (t["n_pos"] < 10) | (t["n"] - t["n_pos"] < 10)
    assert list(flagged.index) == list(t[small].index)


def test_tables_are_byte_deterministic(cells, written, tmp_path):
    out, _ = written
    write_all_tables(cells, tmp_path, n_resamples=100)
    first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    second = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())}
    assert first == second


def test_single_seed_mean_equals_value(cells):
    one = [c for c in cells if c.meta["seed"] == 0 and c.meta["task"] == "hcm"]
    long = long_metrics(one, n_resamples=50)
    t = fraction_table(long, "hcm", "external")
    row = long[(long.eval_set == "external") & (long.arch == "resnet1d") & (long.fraction == 1.0)].iloc[0]
    assert t.loc[t.Model == "resnet1d", "100%"].item() == format_ci(row.auroc, row.auroc_low, row.auroc_high)


def test_write_table_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown table format"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path, "x", formats=("xlsx",))


def test_bad_cell_files_named(tmp_path, cells):
    d = tmp_path / "c1"
    d.mkdir()
    (d / "cell.json").write_text("{not json")
    (d / "predictions.parquet").write_bytes(b"junk")
    with pytest.raises(ValueError, match="c1/cell.json"):
        read_cell(d)
    (d / "cell.json").write_text(json.dumps(cells[0].meta))
    with pytest.raises(ValueError, match="c1/predictions.parquet"):
        read_cell(d)
    cells[0].predictions.drop(columns=["label"]).to_parquet(d / "predictions.parquet")
    with pytest.raises(ValueError, match="predictions.parquet: predictions lack columns"):
        read_cell(d)
    (d / "cell.json").write_text(json.dumps({"arch": "x"}))
    with pytest.raises(ValueError, match="missing keys"):
        read_cell(d)
    (tmp_path / "unfinished").mkdir()  # no files: skipped, not an error
    with pytest.raises(FileNotFoundError):
        read_cells(tmp_path / "absent")


def test_paired_p_values_are_holm_adjusted_within_each_table(written):
    import numpy as np

    from heartbeit.eval.tables import holm

    # Holm step-down: sorted p x (m, m-1, ...), running max, capped at 1; NaN untouched
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan, 0.5]), [0.04, 0.09, 0.09, np.nan, 0.5])
    out, res = written
    paired = res["paired"]
    for (task, eval_set), part in paired.groupby(["task", "eval_set"]):
        np.testing.assert_allclose(part["p_holm"].to_numpy(float), holm(part["p"].to_numpy(float)))
        assert (part["p_holm"] >= part["p"] - 1e-15).all()
    long = pd.read_csv(out / "paired_long.csv")
    assert {"p", "p_holm"} <= set(long.columns)  # raw values kept in the long table
    assert "Holm-adjusted" in (out / "paired_stemi_internal.md").read_text()


def test_sanity_section_reads_chance_cells_against_their_siblings():
    from heartbeit.eval.sanity_report import sanity_tables

    def meta(cid, arch, verdicts, draw=0, fraction=0.01):
        return {"cell_id": cid, "task": "stemi", "fraction": fraction, "seed": 0, "draw": draw, "arch": arch,
                "init": "random", "sanity": {"verdicts": verdicts, "val_auroc": 0.5, "val_auroc_low": 0.4,
                                             "val_auroc_high": 0.6,
                                             "val_score_std": 0.0 if "collapsed" in verdicts else 0.2}}

    metas = [meta("a", "resnet18", []), meta("b", "efficientnet_b0", ["not_better_than_chance"]),
             meta("c", "resnet18", ["not_better_than_chance"], draw=1),
             meta("d", "efficientnet_b0", ["not_better_than_chance"], draw=1),
             meta("e", "vit_micro", ["collapsed", "not_better_than_chance"], fraction=1.0),
             meta("f", "resnet18", ["one_class"], fraction=1.0)]
    counts, flagged, summary = sanity_tables(metas)
    assert summary == {"collapsed": 1, "one_class": 1, "non_finite_loss": 0, "not_better_than_chance": 4,
                       "cells": 6}
    reading = dict(zip(zip(flagged["Model"].str.split(" ").str[0], flagged["Draw"], flagged["Fraction"]),
                       flagged["Reading"]))
    assert reading[("efficientnet_b0", 0, "1%")].startswith("suspect training")  # resnet18 learns on the same ECGs
    assert reading[("resnet18", 1, "1%")].startswith("likely the task")  # nobody learns in draw 1
    assert reading[("vit_micro", 0, "100%")].startswith("training defect: constant")
    assert reading[("resnet18", 0, "100%")].startswith("one class at p = 0.5 but the scores rank")
    assert len(flagged) == 5 and int(counts["Cells"].sum()) == 6
