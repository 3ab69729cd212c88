"""The chain's state: each job's Slurm record (`scontrol show job`, or accounting through `sacct` once
slurmctld has forgotten it) and the matrix cells behind the array tasks, for `heartbeit slurm status`.

    status = chain_status(record)                 # per job: states, reasons, exit codes, restarts, tasks
    counts, attention = cell_states(record, status)  # matrix cells: counts by state, the failed/stopped ones
"""
from __future__ import annotations

import logging
import re
import subprocess
import time

from heartbeit.config.layout import RunLayout

log = logging.getLogger("heartbeit.slurm")

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                      "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"})


class SlurmError(RuntimeError):
    """sbatch/scontrol failed or is missing; the message carries Slurm's own words."""


# ---- status (accounting may be absent: `scontrol show job` is the record while slurmctld keeps the job)

def _parse_scontrol(text: str) -> list[dict[str, str]]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        rows.append(fields)
    return rows


def job_rows(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job -o JOB` as dicts (an array: one per task, pending tasks may share one row). Once
    slurmctld has forgotten the job (older than MinJobAge, 300 s by default), the accounting record
    (`sacct`) in the same keys; an empty list when neither knows it."""
    try:
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmError("scontrol not found: run this where the Slurm client commands are installed") from None
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return sacct_rows(job_id)
        raise SlurmError(f"scontrol show job {job_id} failed ({proc.returncode}): {proc.stderr.strip()}")
    return _parse_scontrol(proc.stdout)


SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason", "Elapsed")


def sacct_rows(job_id: str) -> list[dict[str, str]]:
    """The job's allocations from Slurm accounting, as scontrol's keys (JobId, ArrayTaskId, JobState,
    ExitCode, Reason, RunTime) plus Source=sacct; [] without accounting (no sacct, storage disabled)."""
    try:
        proc = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "--format=" + ",".join(SACCT_FIELDS)],
                              capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        log.debug("sacct -j %s: %s", job_id, proc.stderr.strip())
        return []
    rows = []
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != len(SACCT_FIELDS):
            continue
        f = dict(zip(SACCT_FIELDS, parts))
        base, _, task = f["JobID"].partition("_")
        row = {"JobId": base, "JobState": (f["State"].split() or ["UNKNOWN"])[0], "ExitCode": f["ExitCode"] or "0:0",
               "Reason": f["Reason"] or "None", "RunTime": f["Elapsed"], "Source": "sacct"}
        if task:
            row["ArrayTaskId"] = task.strip("[]")
        rows.append(row)
    return rows


def _task_count(row: dict[str, str]) -> int:
    """How many array tasks one scontrol row stands for ('0-7%2' pending together = 8)."""
    spec = row.get("ArrayTaskId", "")
    if not spec:
        return 1
    total = 0
    for part in spec.split("%")[0].split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part)
        if not m:
            total += 1
            continue
        lo, hi, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
        total += len(range(lo, hi + 1, step))
    return total


def summarise(entry: dict, rows: list[dict[str, str]]) -> dict:
    """One stage's state: states -> task counts, and the first non-trivial reason / exit code."""
    states: dict[str, int] = {}
    for row in rows:
        states[row.get("JobState", "UNKNOWN")] = states.get(row.get("JobState", "UNKNOWN"), 0) + _task_count(row)
    reasons = sorted({r.get("Reason", "None") for r in rows} - {"None"})
    bad_exits = sorted({r.get("ExitCode", "0:0") for r in rows} - {"0:0"})
    tasks = {r["ArrayTaskId"]: r.get("JobState", "UNKNOWN") + (f" exit {r['ExitCode']}" if r.get("ExitCode", "0:0")
                                                               != "0:0" else "")
             for r in rows if r.get("ArrayTaskId", "").isdigit()}
    return {"stage": entry["stage"], "job_id": entry["job_id"], "states": states or {"GONE": 1}, "tasks": tasks,
            "source": "sacct" if rows and all(r.get("Source") == "sacct" for r in rows) else
            ("scontrol" if rows else ""),
            "reason": ",".join(reasons), "exit_codes": bad_exits,
            "restarts": max((int(r.get("Restarts", "0") or 0) for r in rows), default=0),
            "run_time": max((r.get("RunTime", "") for r in rows), default=""),
            "finished": bool(rows) and all(r.get("JobState") in TERMINAL for r in rows),
            "ok": bool(rows) and all(r.get("JobState") == "COMPLETED" for r in rows)}


def chain_status(record: dict) -> list[dict]:
    return [summarise(entry, job_rows(entry["job_id"])) for entry in record["jobs"]]


def wait_chain(record: dict, timeout: float, poll: float = 2.0) -> list[dict]:
    """Poll until every job of the chain is finished (or slurmctld forgot it); raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        status = chain_status(record)
        if all(s["finished"] or s["states"] == {"GONE": 1} for s in status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"chain not finished after {timeout:.0f} s: "
                               + "; ".join(f"{s['stage']} {s['states']}" for s in status))
        time.sleep(poll)


def format_status(status: list[dict]) -> str:
    lines = [f"{'stage':9s} {'job':>8s}  {'state':28s} {'time':>10s}  detail"]
    for s in status:
        state = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(s["states"].items()))
        detail = []
        if s["reason"]:
            detail.append(f"reason {s['reason']}")
        if s["exit_codes"]:
            detail.append(f"exit {','.join(s['exit_codes'])}")
        if s["restarts"]:
            detail.append(f"restarts {s['restarts']}")
        if s["states"] == {"GONE": 1}:
            detail.append("known neither to slurmctld nor to accounting (see the job's log)")
        elif s.get("source") == "sacct":
            detail.append("from accounting (sacct)")
        lines.append(f"{s['stage']:9s} {s['job_id']:>8s}  {state:28s} {s['run_time']:>10s}  {'; '.join(detail)}")
    return "\n".join(lines)


# Slurm states of an array task that ended without its cell (the cell's own record says why)
UNFINISHED_TASK_STATES = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "PREEMPTED", "BOOT_FAIL",
                          "DEADLINE")


def cell_states(record: dict, status: list[dict]) -> tuple[dict[str, int], list[dict]]:
    """(cell counts by state, the cells that need attention): every plan cell not done whose own record
    says failed or partial (e.g. a mid-cell checkpoint to resume), or whose array task ended in one of
    UNFINISHED_TASK_STATES -- each with its label, state, the cell's reason and the task's Slurm state."""
    from heartbeit.matrix import cell_status, read_plan

    layout = RunLayout(record["workdir"])
    if not layout.plan.is_file():
        return {}, []
    tasks = {i: t for s in status if s["stage"] == "matrix" for i, t in s.get("tasks", {}).items()}
    counts: dict[str, int] = {}
    attention = []
    for cell in read_plan(layout.plan):
        state, detail = cell_status(layout.cells, cell)
        counts[state] = counts.get(state, 0) + 1
        slurm = tasks.get(str(cell.index), "")
        if state in ("failed", "partial") or (state != "done" and slurm.split(" ")[0] in UNFINISHED_TASK_STATES):
            attention.append({"index": cell.index, "cell_id": cell.cell_id, "label": cell.label, "state": state,
                              "detail": detail, "slurm": slurm})
    return counts, attention


def format_cells(counts: dict[str, int], attention: list[dict]) -> str:
    if not counts:
        return "matrix cells: no plan yet"
    lines = ["matrix cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    for c in attention:
        slurm = f" [Slurm {c['slurm']}]" if c["slurm"] else ""
        lines.append(f"  cell {c['index']:4d} {c['label']}: {c['state']}{slurm}" + (f": {c['detail']}" if c["detail"] else ""))
    if attention:
        lines.append("resubmit the unfinished cells with `heartbeit slurm submit --from matrix ...` (done cells are "
                     "skipped, checkpointed ones resume)")
    return "\n".join(lines)
