"""slurm/matrix.sh as a real array job on the local Slurm cluster: array task i runs plan cell i, a
resubmitted array skips finished cells, and the plan job refuses a plan of the wrong size."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)
from test_slurm_chain import fixed_deid_key

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MATRIX = str(ROOT / "slurm" / "matrix.sh")
# Four cells without pretraining (random-init ViT and ResNet) on two tasks, one short epoch each.
SETS = ["synth.n_patients=80", "matrix.architectures=[vit_micro_patch8_64,resnet18]", "matrix.probe_architectures=[]",
        "matrix.fractions=[1.0]", "matrix.ablation_label_fraction=null",
        "matrix.tasks=[stemi,hcm]", "matrix.epochs=1"]


@pytest.fixture(scope="module")
def study(slurm_cluster, tmp_path_factory):
    """A rendered image set and its 4-cell plan (made here, outside Slurm: only the matrix is under test)."""
    work = tmp_path_factory.mktemp("matrix") / "run"
    fixed_deid_key(work)
    args = ["--profile", "ci", "--workdir", str(work), *[a for s in SETS for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage in (["run", "--until", "render", "--no-progress"], ["matrix", "plan"]):
        proc = subprocess.run([sys.executable, "-m", "heartbeit", *stage, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    cells = json.loads((work / "matrix" / "plan.json").read_text())["cells"]
    job_env = {"HEARTBEIT": f"{sys.executable} -m heartbeit", "OMP_NUM_THREADS": "1"}
    return {"work": work, "args": args, "cells": cells, "env": job_env}


def sbatch(cluster, study, *sbatch_args: str, script_args: list[str]) -> list[dict[str, str]]:
    """Submit slurm/matrix.sh and wait for every task of it (polling scontrol: `sbatch --wait` polls at up
    to 10 s intervals, which would dominate these short jobs); returns the tasks' scontrol rows."""
    job = cluster.sbatch(f"--chdir={ROOT}", "--cpus-per-task=1", "--mem=1G", *sbatch_args, MATRIX, *script_args,
                         env=study["env"])
    return cluster.wait(job, timeout=240)


def test_array_index_i_runs_plan_cell_i(slurm_cluster, study, tmp_path):
    c, work, cells = slurm_cluster, study["work"], study["cells"]
    assert len(cells) == 4 and [cell["index"] for cell in cells] == [0, 1, 2, 3]
    rows = sbatch(c, study, "--array=0,2,3", f"--output={tmp_path}/cell-%a.out", script_args=study["args"])
    outs = {i: (tmp_path / f"cell-{i}.out").read_text() for i in (0, 2, 3)}
    assert sorted(int(r["ArrayTaskId"]) for r in rows) == [0, 2, 3]
    assert {r["JobState"] for r in rows} == {"COMPLETED"}, "".join(outs.values())
    cells_dir = work / "matrix" / "cells"
    for i in (0, 2, 3):
        done = json.loads((cells_dir / cells[i]["cell_id"] / "cell.json").read_text())
        assert (done["index"], done["arch"], done["task"]) == (i, cells[i]["arch"], cells[i]["task"])
        assert cells[i]["cell_id"] in outs[i] and f"array task {i} done" in outs[i]
    assert not (cells_dir / cells[1]["cell_id"]).exists()  # index 1 was not in the array: not run

    # `matrix.sh submit` plans again (same ids) and submits the whole array: only cell 1 runs now.
    before = {i: (cells_dir / cells[i]["cell_id"] / "complete.json").stat().st_mtime_ns for i in (0, 2, 3)}
    submit = subprocess.run(["bash", MATRIX, "submit", "--parallel", "2", "--cpus-per-task=1", "--mem=1G",
                             f"--output={tmp_path}/submitted-%a.out", f"--chdir={ROOT}", "--", *study["args"]],
                            cwd=tmp_path,
                            env={**os.environ, **c.env, **study["env"]}, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    assert "--array=0-3%2" in submit.stdout
    array_job = submit.stdout.split("matrix array job ")[1].split(":")[0]
    rows = c.wait(array_job, timeout=240)
    assert {r["JobState"] for r in rows} == {"COMPLETED"} and len(rows) == 4
    assert (cells_dir / cells[1]["cell_id"] / "complete.json").is_file()
    assert before == {i: (cells_dir / cells[i]["cell_id"] / "complete.json").stat().st_mtime_ns for i in (0, 2, 3)}


def test_plan_job_refuses_a_plan_of_another_size(slurm_cluster, study, tmp_path):
    rows = sbatch(slurm_cluster, study, f"--output={tmp_path}/plan.out",
                  script_args=["plan", "--expect", "5", *study["args"]])
    out = (tmp_path / "plan.out").read_text()
    assert rows[0]["JobState"] == "FAILED" and rows[0]["ExitCode"] == "1:0", out
    assert "the plan has 4 cells but the array was submitted for 5" in out


def test_a_signalled_cell_checkpoints_requeues_resumes_and_reports_as_undisturbed(slurm_cluster, study, tmp_path):
    """USR1 to a running cell's batch shell (what `--signal=B:USR1@600` sends before the time limit): the cell
    checkpoints, the task requeues itself and resumes, and its report equals an uninterrupted run's."""
    import shlex

    from heartbeit.cli import main

    c, work = slurm_cluster, study["work"]
    # more optimizer steps than the cell's one epoch, so the signal lands mid-training; the interval timer
    # off, so the resume point is the stop
    longer = [*study["args"], "--set", "matrix.min_steps=40", "--set", "matrix.checkpoint_minutes=0"]
    report_sets = ["--set", "report.bootstrap=20", "--set", "report.saliency_samples=1",
                   "--set", "report.wasserstein_pairs=10"]
    signalled, straight = work / "mx-signalled", work / "mx-straight"
    assert main(["matrix", "plan", *longer, "--matrix-dir", str(signalled)]) == 0
    straight.mkdir()
    (straight / "plan.json").write_bytes((signalled / "plan.json").read_bytes())
    cell = json.loads((signalled / "plan.json").read_text())["cells"][0]

    out = tmp_path / "job.out"
    job = c.sbatch(f"--chdir={ROOT}", "--array=0", f"--output={out}", "--cpus-per-task=1", "--mem=1G", MATRIX,
                   *longer, "--matrix-dir", str(signalled), env=study["env"])
    # the undisturbed run and its report, on the other core while the job runs and waits to be requeued
    hb = [sys.executable, "-m", "heartbeit"]
    reference = subprocess.Popen(["bash", "-c", shlex.join([*hb, "matrix", "run", "--cells", "0", *longer,
                                                            "--matrix-dir", str(straight)]) + " && " + shlex.join(
        [*hb, "report", *longer, *report_sets, "--cells", str(straight / "cells"), "--out",
         str(tmp_path / "report-straight")])], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cells_dir = signalled / "cells"
    deadline = time.monotonic() + 120
    while not list(cells_dir.glob(f".tmp-{cell['cell_id']}-*")):  # the cell has started
        assert time.monotonic() < deadline, out.read_text()[-3000:] if out.is_file() else "no output"
        time.sleep(0.05)
    c.run("scancel", "--batch", "--signal=USR1", job)

    def finished(rows) -> bool:  # done for good, not the short spell around the requeue
        requeued = "requeueing job" in out.read_text()
        return rows[0]["JobState"] in {"COMPLETED", "FAILED", "CANCELLED"} and (
            int(rows[0].get("Restarts", "0")) >= 1 or not requeued)

    rows = c.wait(job, timeout=240, until=finished)
    log = out.read_text()
    assert rows[0]["JobState"] == "COMPLETED" and rows[0]["Restarts"] == "1", log[-3000:]
    assert "caught USR1" in log and "requeueing job" in log and "(restart 1)" in log
    stopped = int(log.split("stopped at step ")[1].split()[0])
    resumed = int(log.split("resumed at step ")[1].split()[0])
    assert 1 <= stopped == resumed < 40, log[-3000:]
    assert not (cells_dir / ".resume" / cell["cell_id"]).exists()  # deleted once complete
    proc = subprocess.run([*hb, "report", *longer, *report_sets, "--cells", str(cells_dir), "--out",
                           str(tmp_path / "report-signalled")], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stdout.read()[-3000:]

    for name in ("predictions.parquet", "model.safetensors", "val_scores.parquet"):
        assert (cells_dir / cell["cell_id"] / name).read_bytes() == \
            (straight / "cells" / cell["cell_id"] / name).read_bytes(), name
    reports = {name: {p.name: p.read_bytes() for p in sorted((tmp_path / f"report-{name}" / "tables").glob("*.csv"))}
               for name in ("signalled", "straight")}
    assert reports["signalled"] and reports["signalled"] == reports["straight"]
    # the plan's other three cells never ran here: the report says so first
    assert "**3 of 4 planned cells did not finish" in (tmp_path / "report-signalled" / "REPORT.md").read_text()
    print(f"\nmatrix requeue: cell stopped at step {stopped}, resumed, report tables identical")
