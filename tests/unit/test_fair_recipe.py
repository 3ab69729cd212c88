"""The fine-tuning recipe around the head: cell ids follow the recipe version, parameter groups and
layer decay, the results comparison and promotion, training-noise marks, the machine record."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from heartbeit.config import ConfigError, MatrixConfig, load_config
from heartbeit.eval.run_compare import compare_results, promote
from heartbeit.eval.training_noise import load_seed_spread, mark_paired
from heartbeit.eval.tables import paired_table, robustness_table
from heartbeit.train.finetune import make_optimizer, optimizer_groups
from heartbeit.train.param_groups import group_peak_lrs
from heartbeit.utils.machine import machine_record


def test_cell_ids_follow_the_recipe_version(images_dir, monkeypatch):
    import heartbeit.matrix as matrix

    cfg = MatrixConfig(architectures=["resnet18", "vit_micro_patch8_64"], fractions=[1.0], tasks=["hcm"], seeds=[0])
    before = [c.cell_id for c in matrix.plan_cells(cfg, images_dir, None)]
    monkeypatch.setattr(matrix, "FINETUNE_RECIPE_VERSION", matrix.FINETUNE_RECIPE_VERSION + 1)
    after = [c.cell_id for c in matrix.plan_cells(cfg, images_dir, None)]
    assert all(a != b for a, b in zip(before, after))
    # the recipe's own settings are part of the id too
    monkeypatch.undo()
    for change in ({"layer_decay": 0.75}, {"selection": "val_loss"}):
        other = [c.cell_id for c in matrix.plan_cells(MatrixConfig(**{**cfg.__dict__, **change}), images_dir, None)]
        assert all(a != b for a, b in zip(before, other)), change


def test_adamw_recipe_groups_and_layer_decay():
    from heartbeit.models import zoo

    model, _ = zoo.create_classifier("vit_micro_patch8_64", img_size=64)
    flat = optimizer_groups("vit_micro_patch8_64", model)
    assert [g["weight_decay"] for g in flat] == [0.01, 0.0]
    no_decay = {id(p) for p in flat[1]["params"]}
    named = dict(model.named_parameters())
    for name in ("cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "blocks.0.gamma_1",
                 "blocks.0.attn.relative_position_bias_table", "head.bias"):
        if name in named:
            assert id(named[name]) in no_decay, name
    assert id(named["blocks.0.attn.qkv.weight"]) not in no_decay
    decayed = optimizer_groups("vit_micro_patch8_64", model, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in decayed})
    depth = len(model.blocks)  # embeddings 0.5^(L+1) ... head 1.0
    assert scales[0] == pytest.approx(0.5 ** (depth + 1)) and scales[-1] == 1.0
    opt = make_optimizer("vit_micro_patch8_64", decayed, 1e-3, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert max(group_peak_lrs(decayed, 1e-3)) == pytest.approx(1e-3)
    # the paper's baselines: Adam, one group, no decay, layer_decay ignored
    r18, _ = zoo.create_classifier("resnet18", img_size=64)
    groups = optimizer_groups("resnet18", r18, layer_decay=0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert isinstance(make_optimizer("resnet18", groups, 1e-3, torch.device("cpu")), torch.optim.Adam)


def test_recipe_settings_are_validated_and_profiles_state_them():
    for bad in ({"layer_decay": 0.0}, {"layer_decay": 1.5}, {"selection": "test_auroc"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            MatrixConfig(**bad).validate()
    assert load_config("paper").matrix.layer_decay == 0.65
    demo = load_config("demo", overrides=["workdir=/tmp/x"])
    assert demo.results_dir == "/tmp/x/results" and demo.reference_results == "results"
    with pytest.raises(ConfigError, match="reference_results"):
        load_config("demo", overrides=["results_dir=results"])


def _metrics(aurocs: dict[str, float], ids: str = "a") -> pd.DataFrame:
    rows = [{"cell_id": ids + arch, "arch": arch, "task": "hcm", "fraction": 1.0, "seed": 0, "draw": 0,
             "split": "test", "eval_set": "internal", "site": "all", "auroc": v} for arch, v in aurocs.items()]
    return pd.DataFrame(rows)


def test_compare_against_committed_and_promote(tmp_path):
    fresh, committed = tmp_path / "run" / "results", tmp_path / "results"
    for d, df in ((fresh, _metrics({"resnet18": 0.80, "vit": 0.70})), (committed, _metrics({"resnet18": 0.78, "vit": 0.60}, "b"))):
        (d / "tables").mkdir(parents=True)
        df.to_csv(d / "tables" / "metrics_long.csv", index=False)
    (committed / "bench").mkdir()
    (committed / "bench" / "keep.json").write_text("{}")
    spread = tmp_path / "spread.json"
    spread.write_text(json.dumps({"by_arch": {"resnet18": {"hcm": {"range": 0.03}}, "vit": {"hcm": {"range": 0.05}}}}))
    cmp = {r["arch"]: r for r in compare_results(fresh, committed, spread)["by_arch"]}
    assert cmp["resnet18"]["max_abs_delta_auroc"] == pytest.approx(0.02) and cmp["resnet18"]["within_seed_spread"]
    assert cmp["vit"]["max_abs_delta_auroc"] == pytest.approx(0.10) and cmp["vit"]["within_seed_spread"] is False
    assert cmp["vit"]["same_cell_ids"] == 0
    (fresh / "REPORT.md").write_text("fresh")
    assert set(promote(fresh, committed)) == {"tables", "REPORT.md"}
    assert (committed / "REPORT.md").read_text() == "fresh" and (committed / "bench" / "keep.json").is_file()
    assert pd.read_csv(committed / "tables" / "metrics_long.csv")["auroc"].tolist() == [0.80, 0.70]
    assert not [p for p in committed.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError):
        promote(fresh, fresh)


def test_paired_differences_within_the_seed_spread_are_marked(tmp_path):
    paired = pd.DataFrame([
        {"task": "hcm", "eval_set": "internal", "fraction": f, "seed": 0, "draw": 0, "reference": "hb",
         "reference_init": "pretrained", "arch": "vit", "arch_family": "vit", "init": "random", "delta_auroc": d,
         "p_holm": 0.001}
        for f, d in ((0.1, 0.02), (1.0, 0.2))])
    path = tmp_path / "spread.json"
    path.write_text(json.dumps({"by_arch": {"hb": {"hcm": {"range": 0.01}}, "vit": {"hcm": {"range": 0.04}}}}))
    marked = mark_paired(paired, load_seed_spread(path))
    assert marked["noise_band"].tolist() == [0.04, 0.04] and marked["within_training_noise"].tolist() == [True, False]
    table = paired_table(marked, "hcm", "internal")
    assert "training noise" in table.iloc[0, 3] and "training noise" not in table.iloc[0, 4]
    verdicts = robustness_table(marked)["Verdict"].tolist()
    assert verdicts[0].endswith("within training noise") and "noise" not in verdicts[1]
    with pytest.raises(ValueError, match="seed-spread"):
        (tmp_path / "bad.json").write_text("[]")
        load_seed_spread(tmp_path / "bad.json")


def test_machine_record_names_cpu_isa_and_libraries(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    rec = machine_record()
    assert rec["cpu_model"] and isinstance(rec["isa_flags"], list)
    assert rec["isa_pins"]["ATEN_CPU_CAPABILITY"] == "avx2" and rec["libraries"]["torch"] == torch.__version__.split("+")[0]


def test_the_report_reads_only_the_current_plans_cells(tmp_path):
    """Cells of an earlier recipe keep their folders (other ids); the report must not mix them in."""
    from heartbeit.eval.report_inputs import load_cells
    from heartbeit.matrix import Cell, write_plan
    from helpers.synthetic_cells import write_fake_cells

    cells_dir = tmp_path / "matrix" / "cells"
    dirs = write_fake_cells(cells_dir, archs={"resnet18": "resnet"}, tasks=("hcm",), fractions=(0.1, 1.0))
    for d in dirs:
        (d / "complete.json").write_text("{}")
    assert len(load_cells(cells_dir).cells) == len(dirs)  # no plan: every finished cell
    keep = json.loads((dirs[0] / "cell.json").read_text())
    write_plan([Cell(0, keep["cell_id"], "resnet18", "hcm", float(keep["fraction"]), 0, 0)], tmp_path / "matrix" / "plan.json")
    loaded = load_cells(cells_dir)
    assert [c.meta["cell_id"] for c in loaded.cells] == [keep["cell_id"]]
    assert any("not in the current plan" in p for p in loaded.problems)
