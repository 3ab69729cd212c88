"""Pretraining ablation exports (pretrain.export_at): written at their steps into ablation/, untouched by
checkpoint rotation, the same bytes after a resume, and the step arithmetic refuses fractions that collide."""
import json

import pytest
import torch
from helpers.mim_data import ecg_images
from safetensors.torch import load_file

from heartbeit.config import ConfigError, PretrainConfig, load_config
from heartbeit.train.batches import InMemoryBatches
from heartbeit.config.layout import ablation_export_paths
from heartbeit.config.pretrain import export_steps
from heartbeit.train.pretrain import pretrain
from heartbeit.train.tokenizer_train import train_tokenizer
from heartbeit.utils.io import sha256_file

MICRO = "heartbeit_micro_patch8_64"


@pytest.fixture(scope="module")
def images():
    return ecg_images(80, 64, seed=0)


@pytest.fixture(scope="module")
def tokenizer(images):
    ci = load_config("ci", overrides=["tokenizer.kmeans_steps=20"])
    evals = torch.from_numpy(ecg_images(16, 64, seed=1).copy())
    return train_tokenizer(ci.tokenizer, InMemoryBatches(images, 32, seed=0), evals, progress=False)[0]


def cfg(**kw):
    base = dict(model=MICRO, image_size=64, steps=8, batch_size=8, grad_accum=1, lr=2e-3, warmup_steps=2,
                mask_patches=24, min_mask_block=4, checkpoint_every=3, log_every=2, precision="fp32",
                keep_checkpoints=1, export_at=[0.25, 0.5])
    base.update(kw)
    return PretrainConfig(**base)


def test_export_steps_and_validation():
    assert export_steps([0.5, 0.25], 8) == {2: 0.25, 4: 0.5}
    assert export_steps([], 8) == {}
    with pytest.raises(ValueError, match="pretrain.export_at"):
        export_steps([0.25, 0.3], 4)  # both land on step 1
    with pytest.raises(ValueError, match="pretrain.export_at"):
        export_steps([0.1], 4)  # step 0: not inside the run
    for bad in ([0.0], [1.0], [0.5, 0.5]):
        with pytest.raises(ConfigError, match="export_at"):
            load_config("ci", overrides=[f"pretrain.export_at={bad}"])


def test_exports_survive_rotation_and_resume_bit_exactly(tmp_path, images, tokenizer):
    straight, split = tmp_path / "straight", tmp_path / "split"
    summary = pretrain(cfg(), InMemoryBatches(images, 8, seed=5), tokenizer, straight, progress=False)
    for step, fraction in ((2, 0.25), (4, 0.5)):
        file, record = ablation_export_paths(straight, MICRO, step)
        info = json.loads(record.read_text())
        assert (info["step"], info["fraction"], info["steps"]) == (step, fraction, 8)
        assert info["sha256"] == sha256_file(file) == summary["intermediate_exports"][str(step)]
        assert info["pretrain_config"]["export_at"] == [0.25, 0.5]
    # rotation (keep_checkpoints=1) left one checkpoint tag and every export
    assert [p.name for p in (straight / "checkpoints").iterdir() if p.is_dir()] == ["step00000008"]
    early, late = (load_file(str(ablation_export_paths(straight, MICRO, s)[0])) for s in (2, 4))
    final = load_file(str(straight / "heartbeit-micro_patch8_64.safetensors"))
    assert early.keys() == final.keys()
    assert not torch.equal(early["blocks.0.attn.qkv.weight"], late["blocks.0.attn.qkv.weight"])

    # stopped at step 3 (after the 25 % export, before the 50 % one), resumed: both exports are the
    # straight run's bytes, the passed one was kept, the later one hit exactly at its step
    pretrain(cfg(), InMemoryBatches(images, 8, seed=5), tokenizer, split, progress=False, stop_after=3)
    assert ablation_export_paths(split, MICRO, 2)[0].is_file() and not ablation_export_paths(split, MICRO, 4)[0].exists()
    kept = ablation_export_paths(split, MICRO, 2)[0].stat().st_mtime_ns
    pretrain(cfg(), InMemoryBatches(images, 8, seed=5), tokenizer, split, resume=True, progress=False)
    assert ablation_export_paths(split, MICRO, 2)[0].stat().st_mtime_ns == kept
    for step in (2, 4):
        assert sha256_file(ablation_export_paths(split, MICRO, step)[0]) == \
            sha256_file(ablation_export_paths(straight, MICRO, step)[0])


def test_resume_past_a_missing_export_warns(tmp_path, images, tokenizer, caplog):
    pretrain(cfg(export_at=[]), InMemoryBatches(images, 8, seed=5), tokenizer, tmp_path, progress=False,
             stop_after=3)
    with caplog.at_level("WARNING", logger="heartbeit.pretrain"):
        pretrain(cfg(), InMemoryBatches(images, 8, seed=5), tokenizer, tmp_path, resume=True, progress=False)
    assert "no export of this run at step 2" in caplog.text
    assert not ablation_export_paths(tmp_path, MICRO, 2)[0].exists()
    assert ablation_export_paths(tmp_path, MICRO, 4)[0].is_file()


@pytest.mark.distributed
@pytest.mark.slow
def test_zero3_intermediate_export_is_the_gathered_checkpoint(tmp_path):
    """2 ranks under ZeRO-3 (torchrun, `heartbeit pretrain`): the export at 50 % runs the same collective gather
    as the final one, and equals the backbone of the sharded checkpoint of that step, consolidated offline."""
    import subprocess
    import sys
    from pathlib import Path

    from helpers.mim_data import write_image_shards
    from helpers.dist_launch import base_env, free_port, max_abs_diff

    from heartbeit.cli import main
    from heartbeit.distributed.checkpoint import consolidate_fp32
    from heartbeit.models.heartbeit import export_backbone

    write_image_shards(tmp_path / "images", {"train": ecg_images(64, 64, seed=4), "val": ecg_images(16, 64, seed=5)})
    common = ["--profile", "ci", "--workdir", str(tmp_path)]
    assert main(["tokenizer", "train", "--no-progress", *common, "--set", "tokenizer.kmeans_steps=5",
                 "--set", "tokenizer.eval_images=16"]) == 0
    sets = ["pretrain.zero_stage=3", "pretrain.steps=4", "pretrain.checkpoint_every=2", "pretrain.keep_checkpoints=0",
            "pretrain.export_at=[0.5]", "pretrain.batch_size=8", "pretrain.warmup_steps=1"]
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "heartbeit", "pretrain", "--no-progress", *common, *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], env=base_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = tmp_path / "pretrain"
    file, record = ablation_export_paths(out, MICRO, 2)
    assert json.loads(record.read_text())["sha256"] == sha256_file(file)
    import timm

    depth = len(timm.create_model(MICRO, num_classes=2).blocks)
    expected = export_backbone(consolidate_fp32(out / "checkpoints", tag="step00000002"), depth=depth)
    assert max_abs_diff(load_file(str(file)), expected) == 0.0
    final = load_file(str(out / "heartbeit-micro_patch8_64.safetensors"))
    assert max_abs_diff(final, load_file(str(file))) > 0  # two steps later: other weights
