"""All the GPUs, or a clear refusal: the paper profile declares the world size its pretraining is
designed for; `heartbeit run`, `heartbeit pretrain` (and slurm/pretrain.sh through it) refuse fewer GPUs
with the numbers, unless --allow-fewer-gpus; `heartbeit run` on an N-GPU node pretrains with N ranks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heartbeit.cli import main
from heartbeit.commands import run as run_command
from heartbeit.config import load_config
from heartbeit.config import preflight
from helpers.slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[2]


def test_paper_declares_one_world_size_and_no_accumulation_there():
    from heartbeit.train.schedule import resolve_schedule

    cfg = load_config("paper")
    assert cfg.world_size == 32
    _, rec = resolve_schedule(cfg.pretrain, 5_000_000, cfg.world_size)
    assert rec["grad_accum"] == 1 and rec["global_batch"] == cfg.pretrain.global_batch == 2048
    assert all(load_config(p).world_size == 0 for p in ("ci", "demo", "workstation"))


def test_heartbeit_run_refuses_fewer_gpus_and_launches_one_rank_per_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(preflight, "gpu_available", lambda: True)
    monkeypatch.setattr(run_command, "local_gpus", lambda: 8)
    work = tmp_path / "w"
    assert main(["run", "--profile", "paper", "--workdir", str(work), "--set", "matrix.allow_random_init=true"]) == 2
    err = capsys.readouterr().err
    assert "designed for 32 GPUs" in err and "this allocation has 8 (1 node(s) x 8 GPU(s))" in err
    assert "x 4, about" in err and "GPU-hours" in err and "--allow-fewer-gpus" in err and not work.exists()

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cmd = run_command.pretrain_command(["pretrain", "--profile", "paper"], 8)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    assert cmd[-3:] == ["pretrain", "--profile", "paper"]
    assert run_command.pretrain_command(["pretrain"], 1) is None
    monkeypatch.setenv("WORLD_SIZE", "8")  # already one of a launcher's ranks
    assert run_command.pretrain_command(["pretrain"], 8) is None

    class Args:
        no_progress, allow_fewer_gpus, profile, config, overrides, workdir = True, True, "paper", None, [], str(work)
    argv = dict(run_command.stages(load_config("paper", overrides=[f"workdir={work}"]), Args))["pretrain"][0]
    assert argv[0] == "pretrain" and "--allow-fewer-gpus" in argv


def test_pretrain_checks_the_allocation_before_any_rank_starts(capsys):
    assert main(["pretrain", "--profile", "paper", "--check-allocation", "2", "8"]) == 2
    assert "this allocation has 16 (2 node(s) x 8 GPU(s))" in capsys.readouterr().err
    assert main(["pretrain", "--profile", "paper", "--check-allocation", "4", "8"]) == 0
    assert main(["pretrain", "--profile", "paper", "--check-allocation", "2", "8", "--allow-fewer-gpus"]) == 0
    assert main(["pretrain", "--profile", "ci", "--check-allocation", "1", "0"]) == 0  # CPU profiles unaffected


def test_sbatch_pretrain_without_gpus_is_refused_before_starting_ranks(tmp_path):
    env = {**os.environ, "SLURM_JOB_ID": "7", "SLURM_NNODES": "1", "HEARTBEIT_PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "HEARTBEIT_SIGNAL_DIR": str(tmp_path)}
    env.pop("SLURM_GPUS_ON_NODE", None)
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "pretrain.sh"), "--profile", "paper", "--workdir",
                           str(tmp_path / "w")], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pretraining needs GPUs (designed for 32" in proc.stderr and "torchrun" not in proc.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_the_local_cluster_schedules_gpus_and_a_small_paper_allocation_is_refused(slurm_cluster, tmp_path):
    """The local cluster declares GPU GRES, so a GPU request is scheduled and seen (SLURM_GPUS_ON_NODE);
    pretrain.sh refuses 2 GPUs for the paper's 32 before starting a rank."""
    out = tmp_path / "job.out"
    job = slurm_cluster.sbatch(f"--chdir={ROOT}", "--gpus-per-node=2", "--cpus-per-task=1", "--mem=1G",
                               f"--output={out}", str(ROOT / "slurm" / "pretrain.sh"), "--profile", "paper",
                               "--workdir", str(tmp_path / "w"),
                               env={"HEARTBEIT_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)})
    (row,) = slurm_cluster.wait(job, timeout=180)
    log = out.read_text()
    assert row["JobState"] == "FAILED" and row["ExitCode"] == "2:0", log
    assert "this allocation has 2 (1 node(s) x 2 GPU(s))" in log and "designed for 32 GPUs" in log
    assert "torchrun" not in log
