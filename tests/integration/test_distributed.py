"""2-rank CPU jobs under torchrun, the deepspeed launcher and mpirun: ZeRO 0-3, exact resume (also across
launchers), ZeRO-3 consolidation, bf16. The sbatch launcher is in test_slurm.py. Each run takes a few
seconds once DeepSpeed's shm comm op is in ~/.cache/heartbeit/torch_extensions/<environment> (the first run builds it, ~20-25 s)."""
from __future__ import annotations

import math

import pytest
import torch

from helpers.dist_launch import JOB_ARGS, load_weights, max_abs_diff, read_json, run_job, straight_run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


def test_zero_stages_agree_with_stage0(workdir):
    """Partitioning changes where optimizer state lives, not the math: ZeRO 1/2/3 reach stage 0's
    (DDP-equivalent) weights up to float reduction order."""
    ref = load_weights(straight_run(0, workdir) / "weights.safetensors")
    for stage in (1, 2, 3):
        run_dir = straight_run(stage, workdir)
        metrics = read_json(run_dir / "metrics.json")
        assert metrics["world_size"] == 2 and metrics["zero_stage"] == stage and metrics["launcher"] == "torchrun"
        assert len(metrics["peak_memory_bytes_per_rank"]) == 2 and min(metrics["peak_memory_bytes_per_rank"]) > 0
        assert metrics["images_per_s"] == pytest.approx(sum(metrics["images_per_s_per_rank"]))
        diff = max_abs_diff(ref, load_weights(run_dir / "weights.safetensors"))
        assert diff < 1e-5, f"ZeRO {stage} vs stage 0: max abs diff {diff}"
    assert (straight_run(0, workdir) / "logs" / "rank1.log").read_text().count("rank 1 of 2") == 1


# Each stage stops with one launcher and resumes with another: exactness and launcher independence at once.
RESUME_LAUNCHERS = {1: ("torchrun", "mpirun"), 2: ("deepspeed", "torchrun"), 3: ("mpirun", "deepspeed")}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_resume_is_exact_across_launchers(stage, workdir):
    first, second = RESUME_LAUNCHERS[stage]
    out = workdir / f"resume-zero{stage}"
    common = ["--zero-stage", str(stage), *JOB_ARGS, "--ckpt-dir", str(out / "ckpt"),
              "--out", str(out / "weights.safetensors"), "--metrics", str(out / "metrics.json")]
    run_job(first, [*common, "--stop-after", "3"])
    assert (out / "ckpt" / "latest").read_text().strip() == "step00000003"
    assert not (out / "weights.safetensors").exists(), "a stopped run must not export final weights"
    stopped = read_json(out / "metrics.json")
    assert stopped["stopped_early"] and stopped["step"] == 3
    assert stopped["launcher"] == {"torchrun": "torchrun", "deepspeed": "env", "mpirun": "openmpi"}[first]

    run_job(second, common)
    resumed = read_json(out / "metrics.json")
    assert resumed["step"] == 6 and not resumed["stopped_early"] and resumed["world_size"] == 2
    assert resumed["launcher"] == {"torchrun": "torchrun", "deepspeed": "env", "mpirun": "openmpi"}[second]
    straight = load_weights(straight_run(stage, workdir) / "weights.safetensors")
    diff = max_abs_diff(straight, load_weights(out / "weights.safetensors"))
    assert diff == 0.0, f"ZeRO {stage}: resumed weights differ from the straight run by {diff}"


def test_zero3_checkpoint_consolidates_to_gathered_weights(workdir):
    from heartbeit.distributed.checkpoint import consolidate_fp32, latest_tag
    from heartbeit.train.dist_selftest import TinyNet

    run_dir = straight_run(3, workdir)
    assert latest_tag(run_dir / "ckpt") == "step00000006"
    consolidated = consolidate_fp32(run_dir / "ckpt")
    gathered = load_weights(run_dir / "weights.safetensors")
    params = {k for k, _ in TinyNet().named_parameters()}
    assert params <= consolidated.keys()
    assert max_abs_diff({k: gathered[k] for k in params}, {k: consolidated[k] for k in params}) == 0.0
    assert all(consolidated[k].dtype == torch.float32 for k in params)
    model = TinyNet()
    model.load_state_dict(gathered, strict=True)


def test_consolidation_cli(workdir, tmp_path, capsys):
    from heartbeit.distributed.checkpoint import main

    out = tmp_path / "consolidated.safetensors"
    assert main([str(straight_run(3, workdir) / "ckpt"), str(out)]) == 0
    assert max_abs_diff(load_weights(out), load_weights(straight_run(3, workdir) / "weights.safetensors")) == 0.0
    assert main([str(straight_run(0, workdir) / "ckpt"), str(tmp_path / "x.safetensors")]) == 2
    assert "stage 0" in capsys.readouterr().err  # unpartitioned: nothing to consolidate, said plainly
    assert main([str(tmp_path / "nothing-here"), str(tmp_path / "y.safetensors")]) == 2


MICRO = "heartbeit_micro_patch8_64"  # the ci profile's architecture


def test_bf16_zero2_trains_heartbeit(workdir):
    """bf16 with BEiT needs its floating buffers cast too; the export is still the fp32 master copy."""
    out = workdir / "bf16"
    proc = run_job("torchrun", ["--model", MICRO, "--zero-stage", "2", "--precision", "bf16", "--steps", "3",
                                "--batch-size", "8", "--out", str(out / "weights.safetensors"),
                                "--metrics", str(out / "metrics.json")])
    # one precision recipe (fp32 weights + bf16 autocast), and ZeRO-2's overlapped reduction, not the
    # BF16_Optimizer that reduces fp32 gradients after the backward pass
    assert ("DeepSpeed optimizer path: DeepSpeedZeroOptimizer (ZeRO stage 2, overlap_comm on; fp32 weights + "
            "bf16 autocast, Linear/Conv gradients reduced in bf16)") in proc.stderr
    metrics = read_json(out / "metrics.json")
    assert metrics["precision"] == "bf16" and metrics["step"] == 3 and math.isfinite(metrics["final_loss"])
    assert metrics["mfu"] is not None and 0 < metrics["mfu"] < 1
    weights = load_weights(out / "weights.safetensors")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_zero3_heartbeit_export_loads_in_timm(workdir):
    """Sharded ZeRO-3 checkpoint -> offline fp32 consolidation -> fine-tuning export -> timm.create_model."""
    import timm

    import heartbeit.models  # noqa: F401  (registers the heartbeit_* architectures)
    from heartbeit.distributed.checkpoint import consolidate_fp32, save_safetensors
    from heartbeit.models.heartbeit import export_backbone

    out = workdir / "mim-zero3"
    run_job("torchrun", ["--model", MICRO, "--zero-stage", "3", "--steps", "2", "--batch-size", "8",
                         "--grad-accum", "1", "--ckpt-dir", str(out / "ckpt"), "--out", str(out / "weights.safetensors")])
    gathered = load_weights(out / "weights.safetensors")
    consolidated = consolidate_fp32(out / "ckpt")
    assert max_abs_diff(gathered, {k: consolidated[k] for k in gathered}) == 0.0
    clf = timm.create_model(MICRO, num_classes=2)
    backbone = export_backbone(consolidated, depth=len(clf.blocks))
    path = save_safetensors(backbone, out / "backbone.safetensors")
    clf = timm.create_model(MICRO, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=2)
    loaded = clf.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.items())
