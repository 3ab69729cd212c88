"""A matrix cell keeps its accelerator busy: its loaders live as long as the cell, validation rounds score a fixed
stratified subsample at their own batch size, the selected weights are scored once on the whole validation
split, and neither a training step nor a validation batch makes the host wait (the number of host reads in a
cell does not grow with its number of batches)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from heartbeit.config import MatrixConfig, RenderConfig
from heartbeit.records import VAL_SCORES
from heartbeit.data.members import read_manifest
from heartbeit.data.render.stage import render_corpus
from heartbeit.data.splits import validation_subsample
from heartbeit.matrix import Cell, plan_cells
from heartbeit.train.finetune import cell_data_from_shards, finetune_cell
from heartbeit.utils.host_sync import HostSyncProbe
from helpers.render_fixtures import make_corpus

ARCH = "vit_micro_patch8_64"
TASK = "hcm"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    make_corpus(corpus, n_patients=60, seed=5)
    out = tmp_path_factory.mktemp("images")
    render_corpus(corpus, out, RenderConfig(image_size=48, shard_size=8, fractions=[1.0], val_fraction=0.3),
                  progress=False)
    return out


def mcfg(**kw) -> MatrixConfig:
    base = dict(architectures=[ARCH], epochs=2, batch_size=8, image_size=48, precision="fp32", num_workers=1,
                checkpoint_minutes=0, val_negatives_cap=4, val_batch_size=16)
    return MatrixConfig(**{**base, **kw})


def val_counts(images) -> tuple[int, int]:
    man = read_manifest(images)
    val = man[(man["split"] == "val") & man[TASK].notna()]
    return int((val[TASK] == 1).sum()), int((val[TASK] == 0).sum())


def test_the_subsample_keeps_every_positive_and_a_fixed_capped_set_of_negatives(images):
    man = read_manifest(images)
    positives, negatives = val_counts(images)
    assert positives >= 1 and negatives > 4
    sub = validation_subsample(man, TASK, 4, seed=0)
    val = man[man["ecg_uid"].astype(str).isin(sub)]
    assert set(val["split"]) == {"val"} and (val[TASK] == 1).sum() == positives and (val[TASK] == 0).sum() == 4
    assert validation_subsample(man.sample(frac=1.0, random_state=1), TASK, 4, seed=0) == sub  # row order: no effect
    assert validation_subsample(man, TASK, 4, seed=1) != sub
    assert validation_subsample(man, TASK, 0) is None and validation_subsample(man, TASK, negatives) is None


def test_rounds_score_the_subsample_and_the_export_threshold_the_whole_split(images, tmp_path):
    torch.set_num_threads(1)
    cfg = mcfg()
    cell = Cell(0, "5ab5a3b1e0000000", ARCH, TASK, 1.0, 0)
    summary = finetune_cell(cell, cfg, cell_data_from_shards(images, cell, cfg), tmp_path)
    positives, negatives = val_counts(images)
    assert summary["validation"] == {"rounds": "stratified subsample", "positives": positives, "negatives": 4,
                                     "split_negatives": negatives, "batch_size": 16}
    scores = pd.read_parquet(tmp_path / VAL_SCORES)
    assert len(scores) == positives + negatives and scores["label"].sum() == positives
    # with every negative in the rounds, the same cell selects and scores the same: the rounds choose nothing
    # under "last", which is why the two keys leave such ids alone
    whole = tmp_path / "whole"
    whole.mkdir()
    cfg_all = mcfg(val_negatives_cap=0)
    assert finetune_cell(cell, cfg_all, cell_data_from_shards(images, cell, cfg_all), whole)["validation"]["rounds"] \
        == "whole split"
    assert (whole / VAL_SCORES).read_bytes() == (tmp_path / VAL_SCORES).read_bytes()


def test_validation_keys_enter_the_id_only_where_a_round_can_select(images):
    ids = {}
    for selection in ("last", "val_auroc"):
        for cap in (0, 4):
            cfg = mcfg(selection=selection, val_negatives_cap=cap)
            ids[selection, cap] = plan_cells(cfg, images, None)[0].cell_id
    assert ids["last", 0] == ids["last", 4]
    assert ids["val_auroc", 0] != ids["val_auroc", 4]


def _host_reads(images, tmp_path, batch_size: int, val_batch_size: int) -> tuple[int, dict]:
    cfg = mcfg(batch_size=batch_size, val_batch_size=val_batch_size, val_negatives_cap=0)
    cell = Cell(0, "5ab5a3b1e0000001", ARCH, TASK, 1.0, 0)
    out = tmp_path / f"b{batch_size}"
    out.mkdir()
    data = cell_data_from_shards(images, cell, cfg)  # loaders work in a worker process: only the trainer counts
    with HostSyncProbe() as probe:
        summary = finetune_cell(cell, cfg, data, out)
    return probe.total, {"steps": summary["steps"], "sites": dict(probe.sites)}


def test_host_reads_do_not_grow_with_the_number_of_batches(images, tmp_path):
    torch.set_num_threads(1)
    few, few_info = _host_reads(images, tmp_path, batch_size=16, val_batch_size=64)
    many, many_info = _host_reads(images, tmp_path, batch_size=4, val_batch_size=4)
    assert many_info["steps"] >= 3 * few_info["steps"]
    assert many == few, (few_info, many_info)


def test_cell_record_says_what_the_rounds_scored(images, tmp_path):
    cfg = mcfg()
    cell = Cell(0, "5ab5a3b1e0000002", ARCH, TASK, 1.0, 0)
    data = cell_data_from_shards(images, cell, cfg)
    data.close()  # before anything was read: nothing to stop
    assert json.loads(json.dumps(data.validation))["rounds"] == "stratified subsample"
