"""sbatch on a real local Slurm cluster (slurm/local_cluster.sh): arrays, afterok chains, and
slurm/pretrain.sh running the 2-rank DeepSpeed job both ways (torchrun per node, srun per rank), including a
USR1 -> checkpoint -> requeue -> resume cycle that must end on the uninterrupted run's weights."""
from __future__ import annotations

import time

import pytest

from helpers.dist_launch import JOB_ARGS, PY, ROOT, base_env, load_weights, max_abs_diff, read_json, straight_run
from helpers.slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PRETRAIN = str(ROOT / "slurm" / "pretrain.sh")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("slurm")


def job_env(cluster, launch: str) -> dict:
    return {**base_env(), **cluster.env, "HEARTBEIT_PYTHON": PY, "HEARTBEIT_LAUNCH": launch,
            "HEARTBEIT_ENTRY": "-m heartbeit.train.dist_selftest"}


def test_scontrol_expands_nodelists_for_rank_discovery(slurm_cluster, monkeypatch):
    from heartbeit.distributed.env import slurm_hostnames

    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    assert slurm_hostnames("n[1-3],x") == ["n1", "n2", "n3", "x"]


def test_array_and_afterok_chain(slurm_cluster, tmp_path):
    c = slurm_cluster
    task = tmp_path / "task.sh"
    task.write_text("#!/bin/bash\necho $SLURM_ARRAY_TASK_ID > out.$SLURM_ARRAY_TASK_ID\n")
    gather = tmp_path / "gather.sh"
    gather.write_text("#!/bin/bash\ncat out.0 out.1 out.2 > gathered\n")
    common = [f"--chdir={tmp_path}", "--output=/dev/null", "--ntasks=1", "--cpus-per-task=1"]
    array = c.sbatch(*common, "--array=0-2", str(task))
    after = c.sbatch(*common, f"--dependency=afterok:{array}", "--kill-on-invalid-dep=yes", str(gather))
    failing = c.sbatch(*common, "--wrap", "exit 3")
    never = c.sbatch(*common, f"--dependency=afterok:{failing}", "--kill-on-invalid-dep=yes",
                     "--wrap", "touch should-not-exist")

    rows = c.wait(array)
    assert len(rows) == 3 and {r["JobState"] for r in rows} == {"COMPLETED"}
    assert c.wait(after)[0]["JobState"] == "COMPLETED"
    assert (tmp_path / "gathered").read_text().split() == ["0", "1", "2"]
    assert c.wait(failing)[0]["JobState"] == "FAILED"
    dependent = c.wait(never)[0]
    assert dependent["JobState"] == "CANCELLED" and not (tmp_path / "should-not-exist").exists()


@pytest.mark.parametrize("launch", ["torchrun", "srun"])
def test_sbatch_pretrain_two_ranks(slurm_cluster, workdir, launch):
    c = slurm_cluster
    out = workdir / launch
    out.mkdir()
    layout = (["--ntasks-per-node=1", "--cpus-per-task=2"] if launch == "torchrun"
              else ["--ntasks-per-node=2", "--cpus-per-task=1"])
    job = c.sbatch(f"--chdir={out}", f"--output={out}/job.out", *layout, PRETRAIN, "--zero-stage", "2", *JOB_ARGS,
                   "--out", str(out / "weights.safetensors"), "--metrics", str(out / "metrics.json"),
                   "--log-dir", str(out / "logs"), env=job_env(c, launch))
    state = c.wait(job)[0]
    log = (out / "job.out").read_text()
    assert state["JobState"] == "COMPLETED", log[-3000:]
    metrics = read_json(out / "metrics.json")
    assert metrics["world_size"] == 2 and metrics["launcher"] == {"torchrun": "torchrun", "srun": "slurm"}[launch]
    assert "rank 1 of 2" in (out / "logs" / "rank1.log").read_text()
    assert f"launch={launch}" in log and "finished with exit code 0" in log
    straight = load_weights(straight_run(2, workdir) / "weights.safetensors")
    assert max_abs_diff(straight, load_weights(out / "weights.safetensors")) == 0.0


def test_usr1_checkpoints_requeues_and_resumes_exactly(slurm_cluster, workdir):
    """What `--signal=B:USR1@120` does before the time limit, delivered by hand to the batch shell."""
    c = slurm_cluster
    out = workdir / "requeue"
    out.mkdir()
    job = c.sbatch(f"--chdir={out}", f"--output={out}/job.out", "--ntasks-per-node=1", "--cpus-per-task=2",
                   PRETRAIN, "--zero-stage", "2", *JOB_ARGS, "--step-delay", "0.5", "--checkpoint-every", "1",
                   "--ckpt-dir", str(out / "ckpt"), "--out", str(out / "weights.safetensors"),
                   "--log-dir", str(out / "logs"), env=job_env(c, "torchrun"))
    deadline = time.monotonic() + 120
    while not (out / "ckpt" / "latest").exists():  # training is under way: step 1 is checkpointed
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert c.jobs(job)[0]["JobState"] in ("PENDING", "RUNNING"), (out / "job.out").read_text()[-3000:]
        time.sleep(0.1)
    c.run("scancel", "--batch", "--signal=USR1", job)

    def finished(rows) -> bool:  # done for good: not the short COMPLETING/PENDING spell around a requeue
        requeued = "requeueing job" in (out / "job.out").read_text()
        return rows[0]["JobState"] in {"COMPLETED", "FAILED", "CANCELLED"} and (
            int(rows[0].get("Restarts", "0")) >= 1 or not requeued)

    state = c.wait(job, timeout=240, until=finished)[0]
    log = (out / "job.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log[-3000:]
    assert "caught USR1" in log and "requeueing job" in log and "(restart 1)" in log
    rank0 = (out / "logs" / "rank0.log").read_text()
    assert "stopping at step" in rank0 and "resuming at step" in rank0
    straight = load_weights(straight_run(2, workdir) / "weights.safetensors")
    assert max_abs_diff(straight, load_weights(out / "weights.safetensors")) == 0.0
