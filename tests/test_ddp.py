"""The paper profile's data-parallel path (issue 30 item 2): torch DDP, fp32 weights with bf16 autocast,
gradients all-reduced in bf16 in buckets overlapped with the backward pass. 2 CPU ranks under torchrun (gloo):
a run stopped and resumed ends in the straight run's bytes, and the engine says which path it took."""
from __future__ import annotations

import pytest

from dist_launch import load_weights, max_abs_diff, read_json, run_job

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = ["--engine", "ddp", "--zero-stage", "0", "--steps", "4", "--batch-size", "4", "--grad-accum", "2",
        "--precision", "bf16"]


def test_ddp_bf16_resumes_exactly_and_logs_its_path(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    proc = run_job("torchrun", [*ARGS, "--out", str(straight / "w.safetensors"), "--metrics", str(straight / "m.json")])
    assert "engine: DDP over 2 ranks, fp32 weights + bf16 autocast, gradients all-reduced in bf16" in proc.stderr
    common = [*ARGS, "--ckpt-dir", str(split / "ckpt"), "--out", str(split / "w.safetensors"),
              "--metrics", str(split / "m.json")]
    run_job("torchrun", [*common, "--stop-after", "2"])
    assert read_json(split / "m.json")["stopped_early"]
    run_job("torchrun", common)
    resumed = read_json(split / "m.json")
    assert resumed["step"] == 4 and resumed["engine"] == "ddp" and resumed["world_size"] == 2
    weights = load_weights(split / "w.safetensors")
    assert max_abs_diff(load_weights(straight / "w.safetensors"), weights) == 0.0
    assert all(v.dtype.is_floating_point is False or str(v.dtype) == "torch.float32" for v in weights.values())


def test_build_engine_picks_ddp_for_several_ranks_at_stage_0(monkeypatch):
    import torch

    from heartbeit.config import PretrainConfig, load_config
    from heartbeit.distributed import build, ddp

    made = []
    monkeypatch.setattr(build, "world_size_from_env", lambda: 4)
    monkeypatch.setattr(ddp, "DDPEngine", lambda *a: made.append(a) or "ddp-engine")
    assert build.build_engine(torch.nn.Linear(1, 1), [], PretrainConfig(zero_stage=0)) == "ddp-engine"
    assert load_config("paper").pretrain.zero_stage == 0  # the paper profile's path
