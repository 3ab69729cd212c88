"""The local Slurm cluster (slurm/local_cluster.sh) as a session fixture, plus submit/wait helpers.

The fixture brings the cluster up once (installing Debian's packages when missing, as root) and takes it
down at the end of the session if it was not already running. Where it cannot run (not root, no apt, no
packages), the tests that use it skip with the script's reason."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "slurm" / "local_cluster.sh"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED"}


@dataclass
class Cluster:
    env: dict  # SLURM_CONF for clients

    def run(self, *cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env={**os.environ, **self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sbatch(self, *args: str, env: dict | None = None) -> str:
        return self.run("sbatch", "--parsable", *args, env=env).stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job -o` as dicts: one per job (one per task for an array)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        rows = []
        for line in out.splitlines():
            fields = {}
            for token in line.split():
                key, _, value = token.partition("=")
                fields[key] = value
            rows.append(fields)
        return rows

    def wait(self, job_id: str, timeout: float = 180.0, until=None) -> list[dict[str, str]]:
        """Poll until every task of `job_id` is in a terminal state (accounting is absent here, so
        `scontrol show job` is the record; MinJobAge keeps finished jobs visible for 10 minutes)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.jobs(job_id)
            if (until or (lambda rs: all(r.get("JobState") in TERMINAL for r in rs)))(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not finished after {timeout:.0f} s: "
                                     f"{[(r.get('JobId'), r.get('JobState'), r.get('Reason')) for r in rows]}")
            time.sleep(0.3)


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root (SlurmUser=root); not root here")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and there is no apt-get to install slurmctld/slurmd/munge")
    was_up = _script("status").returncode == 0
    proc = _script("up")
    if proc.returncode == 3:
        pytest.skip(f"local Slurm cluster unavailable: {proc.stderr.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        pytest.fail(f"slurm/local_cluster.sh up failed ({proc.returncode}):\n{proc.stderr}")
    conf = proc.stdout.strip().split("=", 1)[1]
    yield Cluster(env={"SLURM_CONF": conf})
    if not was_up:
        _script("down", timeout=120)
