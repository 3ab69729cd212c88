"""The paper profile's data-parallel path: torch DDP, fp32 weights with bf16 autocast,
gradients all-reduced in bf16 in buckets overlapped with the backward pass. 2 CPU ranks under torchrun (gloo):
a run resumed from a checkpoint ends in the straight run's bytes, and the engine says which path it took."""
from __future__ import annotations

import pytest
import torch

from helpers.dist_launch import load_weights, max_abs_diff, read_json, run_job

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = ["--engine", "ddp", "--zero-stage", "0", "--steps", "4", "--batch-size", "4", "--grad-accum", "2",
        "--precision", "bf16"]


def test_ddp_bf16_resumes_exactly_and_logs_its_path(tmp_path):
    import shutil

    straight, split = tmp_path / "straight", tmp_path / "split"
    proc = run_job("torchrun", [*ARGS, "--ckpt-dir", str(straight / "ckpt"), "--checkpoint-every", "2",
                                "--out", str(straight / "w.safetensors"), "--metrics", str(straight / "m.json")])
    assert "engine: DDP over 2 ranks, fp32 weights + bf16 autocast, gradients all-reduced in bf16" in proc.stderr
    # resume from the straight run's step-2 checkpoint (every rank's loader and RNG state inside) to step 4
    shutil.copytree(straight / "ckpt" / "step00000002", split / "ckpt" / "step00000002")
    (split / "ckpt" / "latest").write_text("step00000002\n")
    run_job("torchrun", [*ARGS, "--ckpt-dir", str(split / "ckpt"), "--out", str(split / "w.safetensors"),
                         "--metrics", str(split / "m.json")])
    resumed = read_json(split / "m.json")
    assert resumed["step"] == 4 and resumed["engine"] == "ddp" and resumed["world_size"] == 2
    weights = load_weights(split / "w.safetensors")
    assert max_abs_diff(load_weights(straight / "w.safetensors"), weights) == 0.0
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())  # fp32 weights


def test_build_engine_picks_ddp_for_several_ranks_at_stage_0(monkeypatch):
    import torch

    from heartbeit.config import PretrainConfig, load_config
    from heartbeit.distributed import build, ddp

    made = []
    monkeypatch.setattr(build, "world_size_from_env", lambda: 4)
    monkeypatch.setattr(ddp, "DDPEngine", lambda *a: made.append(a) or "ddp-engine")
    assert build.build_engine(torch.nn.Linear(1, 1), [], PretrainConfig(zero_stage=0)) == "ddp-engine"
    assert load_config("paper").pretrain.zero_stage == 0  # the paper profile's path
