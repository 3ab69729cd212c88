"""Unit tests (no processes started): launcher discovery, DeepSpeed config, checkpoint files, stop requests."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from heartbeit.config.pretrain import PretrainConfig
from heartbeit.distributed import env as denv_mod
from heartbeit.distributed.checkpoint import (CheckpointError, latest_tag, read_rank_state, write_rank_state)
from heartbeit.distributed.env import discover, slurm_port


def test_torchrun_wins_over_the_slurm_task_it_runs_in():
    env = {"TORCHELASTIC_RUN_ID": "7", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "node1", "MASTER_PORT": "29400",
           "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "0"}
    d = discover(env)
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size, d.launcher) == (3, 4, 1, 2, "torchrun")
    assert (d.master_addr, d.master_port) == ("node1", 29400)


def test_deepspeed_launcher_env():
    d = discover({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": "29501"})
    assert (d.rank, d.world_size, d.local_rank, d.launcher, d.master_port) == (1, 2, 1, "env", 29501)


def test_openmpi_env_beats_slurm_allocation():
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    d = discover(env)
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size, d.launcher) == (1, 2, 1, 2, "openmpi")


def test_slurm_step_env_uses_first_host_and_job_port(monkeypatch):
    monkeypatch.setattr(denv_mod, "slurm_hostnames", lambda nodelist: {"gpu[3-4]": ["gpu3", "gpu4"]}[nodelist])
    env = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242",
           "SLURM_STEP_NODELIST": "gpu[3-4]", "SLURM_STEP_TASKS_PER_NODE": "4(x2)"}
    d = discover(env)
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size, d.launcher) == (5, 8, 1, 4, "slurm")
    assert (d.master_addr, d.master_port) == ("gpu3", slurm_port("4242"))


def test_slurm_batch_shell_is_not_a_rank():
    # The batch script sees SLURM_PROCID=0 and SLURM_NTASKS=2 but is a single process, not 2 ranks.
    d = discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "9"})
    assert (d.rank, d.world_size, d.launcher) == (0, 1, "single")


def test_slurm_port_is_stable_and_in_range():
    assert slurm_port("123") == slurm_port("123") != slurm_port("124")
    assert all(20000 <= slurm_port(str(j)) < 40000 for j in (0, 1, 19999, 10**9))
    assert 20000 <= slurm_port("123_4") < 40000  # array-style ids


def test_bad_integer_names_the_variable():
    with pytest.raises(RuntimeError, match="OMPI_COMM_WORLD_SIZE"):
        discover({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "two", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                  "OMPI_COMM_WORLD_LOCAL_SIZE": "1"})


def test_single_process_default():
    d = discover({})
    assert (d.rank, d.world_size, d.is_distributed, d.launcher) == (0, 1, False, "single")


def test_ds_config_per_stage_and_precision():
    from heartbeit.distributed.deepspeed import make_ds_config

    cfg = PretrainConfig(zero_stage=3, precision="bf16", batch_size=8, grad_accum=4, clip_grad=3.0)
    ds = make_ds_config(cfg, world_size=16)
    assert ds["train_batch_size"] == 8 * 4 * 16 and ds["gradient_accumulation_steps"] == 4
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_clipping"] == 3.0
    # one precision recipe on every engine: fp32 weights + bf16 autocast, never DeepSpeed's bf16 weights
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in ds
    assert make_ds_config(PretrainConfig(zero_stage=2), 2)["zero_optimization"]["overlap_comm"] is True
    assert "optimizer" not in ds  # a torch optimizer is passed in: nothing JIT-compiles
    fp32 = make_ds_config(PretrainConfig(zero_stage=0, clip_grad=0.0), world_size=2)
    assert "bf16" not in fp32 and fp32["zero_optimization"] == {"stage": 0} and fp32["gradient_clipping"] == 0.0


def test_ds_config_offload_and_overrides():
    from heartbeit.distributed.deepspeed import make_ds_config

    cfg = PretrainConfig(zero_stage=3)
    cfg.zero_offload = True
    cfg.ds_config_overrides = {"zero_optimization": {"reduce_bucket_size": 123}, "steps_per_print": 5}
    ds = make_ds_config(cfg, world_size=2)
    z = ds["zero_optimization"]
    assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert z["reduce_bucket_size"] == 123 and z["stage"] == 3 and ds["steps_per_print"] == 5


def test_rank_state_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(3)
    state = {"step": 4, "micro_step": 8, "torch_rng": torch.get_rng_state(), "mask_rng": rng.bit_generator.state,
             "lr": 1e-3}
    write_rank_state(tmp_path, 1, state)
    back = read_rank_state(tmp_path, 1)  # torch.load(weights_only=True) inside
    assert back["step"] == 4 and torch.equal(back["torch_rng"], state["torch_rng"])
    restored = np.random.default_rng(0)
    restored.bit_generator.state = back["mask_rng"]
    assert restored.random() == rng.random()
    with pytest.raises(CheckpointError, match="rank 0"):
        read_rank_state(tmp_path, 0)
    (tmp_path / "heartbeit_rank2.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="heartbeit_rank2.pt"):
        read_rank_state(tmp_path, 2)


class NotAllowed:
    pass


def test_rank_state_refuses_arbitrary_objects(tmp_path):
    write_rank_state(tmp_path, 0, {"obj": NotAllowed()})
    with pytest.raises(CheckpointError, match="cannot read rank state"):
        read_rank_state(tmp_path, 0)


def test_latest_pointer(tmp_path):
    assert latest_tag(tmp_path) is None
    (tmp_path / "latest").write_text("step00000004\n")
    with pytest.raises(CheckpointError, match="step00000004"):
        latest_tag(tmp_path)  # pointer to a tag that never completed
    (tmp_path / "step00000004").mkdir()
    assert latest_tag(tmp_path) == "step00000004"


class _FakeEngine:
    def all_reduce_max(self, value: float) -> float:
        return value


def test_stop_request_by_file_and_by_signal(tmp_path, monkeypatch):
    from heartbeit.distributed.preempt import StopRequest, mark_checkpointed

    stop_file = tmp_path / "stop"
    monkeypatch.setenv("HEARTBEIT_STOP_FILE", str(stop_file))
    monkeypatch.setenv("HEARTBEIT_CHECKPOINTED_FILE", str(tmp_path / "done"))
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        req = StopRequest()
        assert not req.should_stop(_FakeEngine())
        stop_file.touch()
        assert req.should_stop(_FakeEngine())
        stop_file.unlink()
        req2 = StopRequest()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert req2.should_stop(_FakeEngine())
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    assert not (tmp_path / "done").exists()
    mark_checkpointed()
    assert (tmp_path / "done").exists()


def test_more_ranks_than_gpus_fail_at_start_with_a_clear_message(monkeypatch):
    """`local_rank % device_count` would put two ranks on one GPU (an NCCL duplicate-GPU error much
    later); a faked device count shows the check."""
    import torch

    from heartbeit.distributed.env import DistEnv, RankLayoutError, device_for

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: chosen[-1])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(RankLayoutError, match=r"4 ranks on this node .* only 2 GPU\(s\) visible "
                                              r"\(CUDA_VISIBLE_DEVICES=0,1\)"):
        device_for(DistEnv(3, 8, 3, 4, "h", 1, "torchrun"))
    assert chosen == []
    assert device_for(DistEnv(1, 4, 1, 2, "h", 1, "torchrun")) == torch.device("cuda", 1)
