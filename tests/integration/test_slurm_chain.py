"""The whole study as dependent Slurm jobs (`heartbeit slurm submit`), and the real pretraining job
(slurm/pretrain.sh running `heartbeit pretrain`) surviving a USR1 -> checkpoint -> requeue cycle.

The first tests build and check the job chain without a cluster; the rest run it on the real local
cluster (slurm/local_cluster.sh) and skip with its reason where it cannot start."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[2]
HEARTBEIT = [sys.executable, "-m", "heartbeit"]

# A study small enough for about a minute on 2 shared cores: 80 synthetic patients, 4 pretraining steps,
# a pretrained HeartBEiT and its same-size random-init ViT on one task at 100% of the labels, and the
# pretraining ablation there (HeartBEiT from the ci profile's 50 % export: a third cell).
TINY = ["synth.n_patients=80", "pretrain.steps=4",
        "matrix.architectures=[heartbeit_micro_patch8_64,vit_micro_patch8_64]",
        "matrix.probe_architectures=[]", "matrix.fractions=[1.0]", "matrix.tasks=[stemi]", "matrix.epochs=1",
        "matrix.ablation_label_fraction=1.0",
        "report.bootstrap=20",
        "report.saliency_samples=1", "report.wasserstein_pairs=10"]
# Every stage of the local cluster's 2-CPU node: one core, small memory, short limits.
LOCAL_SITE = """\
ranks_per_node: 1
matrix_parallel: 2
setup: ["export OMP_NUM_THREADS=1"]
defaults: {mem: 1G, cpus_per_task: 1, time: "00:10:00"}
"""


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def fixed_deid_key(work: Path) -> None:
    """The run's de-identification key decides the patient-level splits; a fixed one makes them (and the
    train split's size, which must hold a tokenizer batch) the same on every test run."""
    (work / "secret").mkdir(parents=True, mode=0o700)
    key = work / "secret" / "deid.key"
    key.write_text("heartbeit-test-suite-fixed-deidentification-key-0001\n")
    key.chmod(0o600)


def heartbeit(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*HEARTBEIT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert proc.returncode == 0, f"heartbeit {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


# ---- the chain, without a cluster

def test_cell_count_from_config_matches_the_plan(tmp_path):
    """The array is sized from the config before any image exists; it must equal the real plan's length."""
    from heartbeit.config import load_config
    from heartbeit.matrix import AblationExport, cell_specs, plan_cells
    from heartbeit.slurm_submit import matrix_cell_count

    (tmp_path / "index.json").write_text("{}")
    for profile, extra in (("ci", []), ("paper", []), ("demo", []),
                           ("ci", ["matrix.seeds=[0,1,2]", "matrix.tasks=[hcm]", "matrix.draws=3"])):
        cfg = load_config(profile, overrides=extra)
        # the pretraining ablation's cells too: one per intermediate export (pretrain.export_at)
        exports = [AblationExport(i + 1, f, "0" * 64) for i, f in enumerate(cfg.pretrain.export_at)]
        assert exports and cfg.matrix.ablation_label_fraction is not None, profile
        plan = plan_cells(cfg.matrix, tmp_path, None, exports)
        assert matrix_cell_count(cfg.matrix, cfg.pretrain.export_at) == len(plan) > matrix_cell_count(cfg.matrix) > 0
        # and each cell's architecture, task, fraction and kind, which its time limit is estimated from
        assert cell_specs(cfg.matrix, len(exports)) == [(c.arch, c.task, c.fraction, c.kind) for c in plan]


def test_dry_run_chains_every_stage_with_site_settings(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("partition: gpu\naccount: lab\nqos: high\nnodes: 2\nmatrix_parallel: 3\n"
                    "setup: ['module load cuda']\nsbatch_args: ['--mail-type=FAIL']\n"
                    "defaults: {time: '01:00:00', mem: 8G}\n"
                    "prepare: {partition: cpu, cpus_per_task: 16}\npretrain: {gpus_per_node: 4, time: '2-00:00:00'}\n")
    out = heartbeit("slurm", "submit", "--profile", "ci", "--site", str(site), "--workdir", str(tmp_path / "w"),
                    "--gpus-per-node", "8", "--dry-run", *sets(["matrix.tasks=[stemi]"])).stdout
    out, table = out.split("# cost model")
    blocks = {b.split("\n", 1)[0]: b for b in out.split("# ")[1:]}
    # every job's estimate and --time, and the study's GPU-hours
    assert all(f"#   {stage:<10}" in table for stage in blocks) and "GPU-hours" in table
    assert list(blocks) == ["prepare", "encode", "gather", "pretrain", "plan", "matrix", "report"]
    for stage, block in blocks.items():
        script = {"plan": "matrix", "gather": "encode"}.get(stage, stage)
        assert f"/slurm/{script}.sh" in block
        assert "--account=lab" in block and "--qos=high" in block and "--mail-type=FAIL" in block
        assert f"--workdir {tmp_path / 'w'}" in block and "HEARTBEIT_SITE_SETUP=" in block
        assert ("--dependency=afterok:" in block) == (stage != "prepare")
    # the report runs once the matrix array has ended, whatever became of its cells
    assert "'--dependency=afterok:<plan job id>,afterany:<matrix job id>'" in blocks["report"]
    assert "--partition=cpu" in blocks["prepare"] and "--cpus-per-task=16" in blocks["prepare"]
    assert "--partition=gpu" in blocks["pretrain"] and "--nodes=2" in blocks["pretrain"]
    assert "--gpus-per-node=8" in blocks["pretrain"]  # the flag overrides the site file's 4
    assert "--time=2-00:00:00" in blocks["pretrain"] and "--time=01:00:00" in blocks["report"]
    # (6 architectures + the HeartBEiT linear probe) x (5 fractions + a second draw at 1 %) x 1 task x 1 seed
    # + the pretraining ablation (HeartBEiT from the 50 % export at 10 %: 1 cell)
    assert "--array=0-42%3" in blocks["matrix"]
    assert "plan --expect 43" in blocks["plan"]


def test_site_file_errors_name_the_key(tmp_path):
    from heartbeit.config import ConfigError
    from heartbeit.config.slurm import load_site

    bad = tmp_path / "site.yaml"
    bad.write_text("partition: gpu\npretrain: {gpu_per_node: 4}\n")
    with pytest.raises(ConfigError, match="pretrain.gpu_per_node"):
        load_site(bad)
    bad.write_text("launch: mpirun\n")
    with pytest.raises(ConfigError, match="launch"):
        load_site(bad)


def test_status_counts_array_tasks():
    from heartbeit.slurm_status import summarise

    rows = [{"JobState": "PENDING", "ArrayTaskId": "2-7%2", "Reason": "JobArrayTaskLimit", "ExitCode": "0:0"},
            {"JobState": "RUNNING", "ArrayTaskId": "1", "Reason": "None", "ExitCode": "0:0"},
            {"JobState": "FAILED", "ArrayTaskId": "0", "Reason": "NonZeroExitCode", "ExitCode": "1:0"}]
    s = summarise({"stage": "matrix", "job_id": "9"}, rows)
    assert s["states"] == {"PENDING": 6, "RUNNING": 1, "FAILED": 1}
    assert s["exit_codes"] == ["1:0"] and not s["finished"] and not s["ok"]


# ---- the chain on the local cluster

def submit(cluster, work: Path, overrides: list[str]) -> dict:
    site = work.parent / f"{work.name}-site.yaml"
    site.write_text(LOCAL_SITE)
    fixed_deid_key(work)
    heartbeit("slurm", "submit", "--profile", "ci", "--site", str(site), "--workdir", str(work),
              *sets([f"results_dir={work / 'results'}", *overrides]), env=cluster.env)
    return json.loads((work / "slurm_jobs.json").read_text())


def wait_status(cluster, work: Path, timeout: float) -> tuple[int, list[dict]]:
    proc = subprocess.run([*HEARTBEIT, "slurm", "status", "--workdir", str(work), "--wait", "--json",
                           "--timeout", str(timeout)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **cluster.env}, timeout=timeout + 60)
    return proc.returncode, json.loads(proc.stdout)["jobs"]


def logs(work: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((work / "slurm" / "logs").glob("*")))


@pytest.fixture(scope="module")
def chain(slurm_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("chain") / "run"
    t0 = time.monotonic()
    record = submit(slurm_cluster, work, TINY)
    rc, status = wait_status(slurm_cluster, work, timeout=400)
    return {"work": work, "record": record, "rc": rc, "status": status, "seconds": time.monotonic() - t0}


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_runs_the_whole_study_to_a_results_table(chain):
    work, status = chain["work"], chain["status"]
    assert chain["rc"] == 0, f"{status}\n{logs(work)}"
    jobs = chain["record"]["jobs"]
    assert [j["name"] for j in jobs] == ["prepare", "encode", "gather", "pretrain", "plan", "matrix", "report"]
    for s in status:
        assert s["ok"] and s["states"] == ({"COMPLETED": 3} if s["stage"] == "matrix" else {"COMPLETED": 1}), s
    ids = [j["job_id"] for j in jobs]
    for previous, job in zip(ids, jobs[1:-1]):  # each job waited for the one before
        assert f"--dependency=afterok:{previous}" in job["command"]
    assert f"--dependency=afterok:{ids[4]},afterany:{ids[5]}" in jobs[-1]["command"]  # plan ok, matrix ended
    assert jobs[5]["array"] == "0-2%2" and jobs[1]["array"] == "0-0"  # one encoding task for this tiny set
    assert (work / "images" / "tokens.json").is_file()  # the gather wrote it
    plan = json.loads((work / "matrix" / "plan.json").read_text())["cells"]
    assert len(plan) == 3 and [c["pretrain_step"] for c in plan] == [None, None, 2]  # 50 % of 4 steps
    assert all((work / "matrix" / "cells" / c["cell_id"] / "complete.json").is_file() for c in plan)
    auroc = work / "results" / "tables" / "auroc_stemi_internal.csv"
    assert auroc.is_file() and (work / "results" / "REPORT.md").is_file()
    table = auroc.read_text()
    assert "heartbeit_micro_patch8_64" in table and "vit_micro_patch8_64" in table
    assert (work / "pretrain" / "heartbeit-micro_patch8_64.safetensors").is_file()
    assert "Does pretraining cause the gain?" in (work / "results" / "REPORT.md").read_text()
    assert (work / "results" / "tables" / "ablation_auroc.csv").is_file()
    print(f"\nslurm chain: {chain['seconds']:.0f} s from submit to report")


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failed_stage_cancels_the_rest_of_the_chain(slurm_cluster, tmp_path):
    work = tmp_path / "run"
    # real input_dirs need their own external sites (the preflight refuses the synthetic names up front)
    submit(slurm_cluster, work, [*TINY, f"input_dirs=[{tmp_path / 'no-such-ecgs'}]", "render.external_sites=[]"])
    rc, status = wait_status(slurm_cluster, work, timeout=120)
    assert rc == 1
    states = {s["stage"]: s["states"] for s in status}
    assert states["prepare"] == {"FAILED": 1}, logs(work)
    assert all(set(states[s]) == {"CANCELLED"} for s in ("encode", "pretrain", "plan", "matrix", "report")), states
    assert "no-such-ecgs" in (next((work / "slurm" / "logs").glob("prepare-*.out"))).read_text()


# ---- the real pretraining job: USR1 -> checkpoint -> requeue -> same export as an uninterrupted run

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slurm
@pytest.mark.slow
def test_pretrain_job_checkpoints_on_usr1_requeues_and_matches_uninterrupted(slurm_cluster, chain, tmp_path):
    c = slurm_cluster
    work = chain["work"]
    assert (work / "tokenizer" / "tokenizer.safetensors").is_file(), "the chain's prepare job did not finish"
    # Enough steps that the signal lands mid-run; no periodic checkpoint, so the resume point is the stop.
    args = ["--profile", "ci", "--workdir", str(work), "--no-progress",
            *sets([*TINY, "pretrain.steps=200", "pretrain.log_every=1", "pretrain.checkpoint_every=100000"])]
    export = "heartbeit-micro_patch8_64.safetensors"
    heartbeit("pretrain", *args, "--out", str(tmp_path / "straight"))

    out = tmp_path / "requeued"
    env = {"HEARTBEIT_PYTHON": sys.executable, "HEARTBEIT_LAUNCH": "torchrun", "HEARTBEIT_RANKS_PER_NODE": "1",
           "HEARTBEIT_ENTRY": "-m heartbeit pretrain", "OMP_NUM_THREADS": "1"}
    job = c.sbatch(f"--chdir={ROOT}", f"--output={tmp_path}/job.out", "--ntasks-per-node=1", "--cpus-per-task=1",
                   "--mem=1G", str(ROOT / "slurm" / "pretrain.sh"), *args, "--out", str(out), env=env)
    deadline = time.monotonic() + 120
    while not ((out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().strip()):  # step 1 done
        assert time.monotonic() < deadline, "pretraining never started"
        assert c.jobs(job)[0]["JobState"] in ("PENDING", "RUNNING"), (tmp_path / "job.out").read_text()[-3000:]
        time.sleep(0.05)
    c.run("scancel", "--batch", "--signal=USR1", job)

    def finished(rows) -> bool:  # done for good: not the short COMPLETING/PENDING spell around the requeue
        requeued = "requeueing job" in (tmp_path / "job.out").read_text()
        return rows[0]["JobState"] in {"COMPLETED", "FAILED", "CANCELLED"} and (
            int(rows[0].get("Restarts", "0")) >= 1 or not requeued)

    state = c.wait(job, timeout=240, until=finished)[0]
    log = (tmp_path / "job.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log[-3000:]
    assert "caught USR1" in log and "requeueing job" in log and "(restart 1)" in log
    assert "stopped at step" in log and "resumed at step" in log
    stopped = int(log.split("stopped at step ")[1].split()[0])
    assert 1 <= stopped < 200
    assert sha256(out / export) == sha256(tmp_path / "straight" / export)
    print(f"\npretrain requeue: stopped at step {stopped} of 200, resumed, export identical")
