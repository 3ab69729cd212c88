"""The pretraining ablation's matrix cells (matrix.ablation_label_fraction): appended after the normal cells,
which keep their ids and indices; ids that hash the intermediate export; the exports found beside the final
one and checked; the preflight naming the keys; cell.json recording the export."""
import json
from pathlib import Path

import pytest

from heartbeit.commands.matrix import CellTrainer
from heartbeit.config import MatrixConfig, load_config, to_dict
from heartbeit.config.preflight import config_problems
from heartbeit.matrix import (AblationExport, ablation_cell_count, plan_cells, read_ablation_exports, run_cells)
from heartbeit.slurm_submit import matrix_cell_count
from heartbeit.config.layout import ablation_export_paths, export_paths
from heartbeit.utils.io import sha256_file

MICRO = "heartbeit_micro_patch8_64"
EXPORTS = [AblationExport(15, 0.5, "a" * 64), AblationExport(8, 0.25, "b" * 64)]


def small_cfg(**kw):
    base = dict(architectures=[MICRO, "vit_micro_patch8_64", "resnet18"], fractions=[0.01, 0.1, 1.0],
                tasks=["stemi", "hcm"], seeds=[0, 1], draws=3, draws_below=0.25)
    base.update(kw)
    return MatrixConfig(**base)


def test_ablation_adds_cells_and_changes_no_existing_one(images_dir):
    off = plan_cells(small_cfg(), images_dir, None, EXPORTS)  # the key off: exports are ignored
    assert off == plan_cells(small_cfg(), images_dir, None)
    on = plan_cells(small_cfg(ablation_label_fraction=0.1), images_dir, None, EXPORTS)
    assert on[:len(off)] == off  # same ids, indices and fields for every normal cell
    extra = on[len(off):]
    # 2 tasks x 2 exports x 1 HeartBEiT arch x 2 seeds x 3 draws at 10 %
    assert len(extra) == 2 * 2 * 2 * 3 == ablation_cell_count(small_cfg(ablation_label_fraction=0.1), 2)
    assert len(on) == matrix_cell_count(small_cfg(ablation_label_fraction=0.1), [0.25, 0.5])
    assert {c.arch for c in extra} == {MICRO} and {c.fraction for c in extra} == {0.1}
    assert [c.pretrain_step for c in extra[:12]] == [8] * 6 + [15] * 6  # by step within a task
    assert {(c.pretrain_step, c.pretrain_fraction, c.pretrain_sha256) for c in extra} == \
        {(8, 0.25, "b" * 64), (15, 0.5, "a" * 64)}
    assert all(c.pretrain_step is None for c in off) and len({c.cell_id for c in on}) == len(on)
    assert "pretrain-step8" in extra[0].label
    # the id hashes the export: another export of step 8 changes those cells only
    other = plan_cells(small_cfg(ablation_label_fraction=0.1), images_dir, None,
                       [EXPORTS[0], AblationExport(8, 0.25, "c" * 64)])
    changed = {a.cell_id for a, b in zip(on, other) if a.cell_id != b.cell_id}
    assert changed == {c.cell_id for c in extra if c.pretrain_step == 8}
    # no HeartBEiT architecture: no ablation cells
    assert plan_cells(small_cfg(architectures=["resnet18"], ablation_label_fraction=0.1), images_dir, None,
                      EXPORTS) == plan_cells(small_cfg(architectures=["resnet18"]), images_dir, None)


def _write_run(pretrain_dir: Path, steps=30, export_at=(0.5,)) -> Path:
    config = to_dict(load_config("ci").pretrain) | {"export_at": list(export_at)}
    final, final_json = export_paths(pretrain_dir, MICRO)
    pretrain_dir.mkdir(parents=True, exist_ok=True)
    final.write_bytes(b"final")
    final_json.write_text(json.dumps({"pretrain_config": config,
                                      "resolved_pretrain_config": config | {"steps": steps}}))
    for fraction in export_at:
        step = round(fraction * steps)
        file, record = ablation_export_paths(pretrain_dir, MICRO, step)
        file.parent.mkdir(exist_ok=True)
        file.write_bytes(f"step{step}".encode())
        record.write_text(json.dumps({"step": step, "fraction": fraction, "sha256": sha256_file(file),
                                      "pretrain_config": config}))
    return final


def test_exports_are_found_beside_the_final_one_and_checked(tmp_path):
    final = _write_run(tmp_path / "pretrain", export_at=(0.25, 0.5))
    found = read_ablation_exports(final, MICRO, [0.5, 0.25])
    assert [(e.step, e.fraction) for e in found] == [(8, 0.25), (15, 0.5)]
    assert found[1].sha256 == sha256_file(ablation_export_paths(final.parent, MICRO, 15)[0])
    with pytest.raises(FileNotFoundError, match="step 23"):
        read_ablation_exports(final, MICRO, [0.75])
    file, record = ablation_export_paths(final.parent, MICRO, 15)
    file.write_bytes(b"altered")
    with pytest.raises(ValueError, match="altered"):
        read_ablation_exports(final, MICRO, [0.5])
    info = json.loads(record.read_text())
    info["pretrain_config"]["lr"] = 1.0
    record.write_text(json.dumps(info | {"sha256": sha256_file(file)}))
    with pytest.raises(ValueError, match="another pretraining run"):
        read_ablation_exports(final, MICRO, [0.5])


def test_cells_train_from_their_export_and_record_it(tmp_path, images_dir):
    final = _write_run(tmp_path / "pretrain")
    mcfg = small_cfg(architectures=[MICRO], fractions=[0.1], tasks=["stemi"], seeds=[0], draws=1,
                     ablation_label_fraction=0.1)
    cells = plan_cells(mcfg, images_dir, final, read_ablation_exports(final, MICRO, [0.5]))
    assert [c.pretrain_step for c in cells] == [None, 15]
    trainer = CellTrainer(images_dir, load_config("ci"), str(final))
    assert trainer.export_of(cells[0]) == str(final)
    assert trainer.export_of(cells[1]) == str(ablation_export_paths(final.parent, MICRO, 15)[0])

    def fake_train(cell, out):  # what finetune_cell would be given
        (out / "predictions.parquet").write_bytes(b"")
        return {"pretrained_file": Path(trainer.export_of(cell)).name}

    run_cells(cells, tmp_path / "cells", fake_train)
    meta = json.loads((tmp_path / "cells" / cells[1].cell_id / "cell.json").read_text())
    assert (meta["pretrain_step"], meta["pretrain_fraction"]) == (15, 0.5)
    assert meta["pretrain_sha256"] == sha256_file(ablation_export_paths(final.parent, MICRO, 15)[0])
    assert meta["pretrained_file"] == "heartbeit-micro_patch8_64-step15.safetensors"
    assert json.loads((tmp_path / "cells" / cells[0].cell_id / "cell.json").read_text())["pretrain_step"] is None
    # an export replaced after planning is refused, not silently trained on
    ablation_export_paths(final.parent, MICRO, 15)[0].write_bytes(b"other")
    with pytest.raises(ValueError, match="re-run `heartbeit matrix plan`"):
        trainer.export_of(cells[1])


def test_preflight_names_the_keys():
    assert config_problems(load_config("ci")) == [] and config_problems(load_config("demo")) == []
    problems = " ".join(config_problems(load_config("ci", overrides=["pretrain.export_at=[]"])))
    assert "matrix.ablation_label_fraction" in problems and "pretrain.export_at is empty" in problems
    problems = " ".join(config_problems(load_config("ci", overrides=["matrix.ablation_label_fraction=0.2"])))
    assert "render.fractions" in problems and "matrix.fractions" in problems
    problems = " ".join(config_problems(load_config("ci", overrides=[
        "matrix.architectures=[resnet18]", "matrix.probe_architectures=[]"])))
    assert "no HeartBEiT" in problems
    assert config_problems(load_config("ci", overrides=["pretrain.export_at=[]",
                                                        "matrix.ablation_label_fraction=null"])) == []
    # export steps that collide or leave the run, for a length in steps
    problems = " ".join(config_problems(load_config("ci", overrides=["pretrain.steps=1"])))
    assert "pretrain.export_at 0.5 of 1 steps" in problems
    assert config_problems(load_config("ci", overrides=["pretrain.steps=1", "pretrain.epochs=3"])) == []
    with pytest.raises(Exception, match="ablation_label_fraction"):
        load_config("ci", overrides=["matrix.ablation_label_fraction=1.5"])
