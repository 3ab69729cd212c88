"""`heartbeit slurm status` after slurmctld has forgotten the chain (MinJobAge): it reads Slurm accounting
(`sacct`), and it names the matrix cells that failed and why. Stub `scontrol`/`sacct` on PATH: no cluster."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

from heartbeit.cli import main
from heartbeit.config.layout import RunLayout, cell_resume_dir
from heartbeit.matrix import Cell, write_plan
from heartbeit.slurm_status import chain_status

SACCT = """\
101|COMPLETED|0:0|None|00:10:00
102|COMPLETED|0:0|None|02:00:00
103|COMPLETED|0:0|None|00:01:00
104_0|COMPLETED|0:0|None|00:05:00
104_1|FAILED|1:0|NonZeroExitCode|00:02:00
104_2|TIMEOUT|0:15|TimeLimit|08:00:00
104_[3-4%2]|PENDING|0:0|JobArrayTaskLimit|00:00:00
105|COMPLETED|0:0|None|00:03:00
"""


def stub_slurm(tmp_path, monkeypatch, sacct: str | None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n")
    if sacct is not None:
        (tmp_path / "sacct.txt").write_text(sacct)
        # the rows of the job id asked for (-j ID), as `sacct -X -n -P` prints them
        (bin_dir / "sacct").write_text(f"#!/bin/sh\ngrep \"^$2[|_]\" {tmp_path / 'sacct.txt'}\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def chain(tmp_path) -> dict:
    work = tmp_path / "work"
    layout = RunLayout(work)
    cells = [Cell(i, f"{i:016x}", "resnet18", "stemi", 1.0, i) for i in range(5)]
    write_plan(cells, layout.plan)
    done = layout.cells / cells[0].cell_id
    done.mkdir(parents=True)
    (done / "complete.json").write_text("{}")
    (done / "cell.json").write_text(json.dumps({**asdict(cells[0]), "sanity": {}}))
    (layout.cells / ".failed").mkdir()
    (layout.cells / ".failed" / f"{cells[1].cell_id}.json").write_text(
        json.dumps({"reason": "OutOfMemoryError: CUDA out of memory"}))
    resume = cell_resume_dir(layout.cells, cells[2].cell_id)  # timed out after a mid-cell checkpoint
    resume.mkdir(parents=True)
    (resume / "checkpoint.json").write_text(json.dumps({"step": 1200, "saved": "2026-01-01T00:00:00"}))
    record = {"profile": "paper", "workdir": str(work), "submitted": "2026-01-01T00:00:00", "matrix_cells": 5,
              "jobs": [{"stage": s, "job_id": str(101 + i), "array": "0-4%2" if s == "matrix" else ""}
                       for i, s in enumerate(["prepare", "pretrain", "plan", "matrix", "report"])]}
    layout.slurm_record.write_text(json.dumps(record))
    return record


def test_status_falls_back_to_sacct_and_names_failed_cells(tmp_path, monkeypatch, capsys):
    record = chain(tmp_path)
    stub_slurm(tmp_path, monkeypatch, SACCT)
    status = {s["stage"]: s for s in chain_status(record)}
    assert status["matrix"]["states"] == {"COMPLETED": 1, "FAILED": 1, "TIMEOUT": 1, "PENDING": 2}
    assert status["matrix"]["source"] == "sacct" and status["prepare"]["ok"]
    assert status["matrix"]["tasks"] == {"0": "COMPLETED", "1": "FAILED exit 1:0", "2": "TIMEOUT exit 0:15"}

    assert main(["slurm", "status", "--workdir", record["workdir"]]) == 0
    out = capsys.readouterr().out
    assert "from accounting (sacct)" in out and "GONE" not in out
    assert "matrix cells: done 1, failed 1, partial 1, planned 2" in out
    assert "cell    1 resnet18 stemi 1 seed1 draw0: failed [Slurm FAILED exit 1:0]: OutOfMemoryError" in out
    assert "cell    2 resnet18 stemi 1 seed2 draw0: partial [Slurm TIMEOUT exit 0:15]: mid-cell checkpoint at " \
           "step 1200" in out
    assert "cell    3" not in out  # pending: nothing to say yet

    main(["slurm", "status", "--workdir", record["workdir"], "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [c["index"] for c in data["cells_attention"]] == [1, 2]


def test_without_accounting_a_forgotten_job_is_gone(tmp_path, monkeypatch, capsys):
    record = chain(tmp_path)
    stub_slurm(tmp_path, monkeypatch, None)  # no sacct on this cluster
    monkeypatch.setattr("heartbeit.slurm_status.sacct_rows", lambda job_id: [])
    assert {s["stage"]: s["states"] for s in chain_status(record)}["report"] == {"GONE": 1}
    assert main(["slurm", "status", "--workdir", record["workdir"], "--wait", "--timeout", "5"]) == 1
    assert "known neither to slurmctld nor to accounting" in capsys.readouterr().out
