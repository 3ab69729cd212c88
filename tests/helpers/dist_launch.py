"""Helpers for the multi-process tests: start the distributed self-test (heartbeit.train.dist_selftest)
under torchrun, the deepspeed launcher or mpirun, with 2 ranks on CPU, and compare exported weights."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heartbeit.distributed.deepspeed import extensions_dir

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent
ENTRY = "heartbeit.train.dist_selftest"
NPROC = 2
# Small enough for seconds per run, with gradient accumulation so the boundary logic is exercised.
JOB_ARGS = ["--steps", "6", "--batch-size", "4", "--grad-accum", "2"]
TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_", "OMPI_", "PMI", "SLURM_",
                                "TORCHELASTIC"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TORCH_EXTENSIONS_DIR=str(extensions_dir()),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1")
    return env


def launcher_cmd(launcher: str, args: list[str]) -> list[str]:
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), f"--nproc_per_node={NPROC}", f"--master_port={free_port()}", "-m", ENTRY,
                *args]
    if launcher == "deepspeed":
        # On CPU the deepspeed launcher still takes --num_gpus as "processes per node" (found by trying it).
        return [str(BIN / "deepspeed"), f"--num_gpus={NPROC}", f"--master_port={free_port()}", "--module", ENTRY,
                *args]
    if launcher == "mpirun":
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            pytest.skip("mpirun not installed (Debian: apt-get install openmpi-bin libopenmpi-dev; "
                        "`make sysdeps` does it as root)")
        return [mpirun, "-np", str(NPROC), "--oversubscribe", "--bind-to", "none", "-x", "PYTHONPATH",
                "-x", "OMP_NUM_THREADS", "-x", "TORCH_EXTENSIONS_DIR", PY, "-m", ENTRY, *args]
    raise ValueError(launcher)


def run_job(launcher: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(launcher_cmd(launcher, args), cwd=ROOT, env=base_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise AssertionError(f"{launcher} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                             f"--- stderr\n{proc.stderr[-6000:]}")
    return proc


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


_STRAIGHT: dict[tuple, Path] = {}


def straight_run(stage: int, workdir: Path, extra: tuple[str, ...] = ()) -> Path:
    """Directory of an uninterrupted torchrun run of JOB_ARGS under `stage` (weights.safetensors,
    metrics.json, ckpt/): computed once per session and shared by the tests that compare against it."""
    key = (stage, extra)
    if key not in _STRAIGHT:
        out = workdir / f"straight-zero{stage}{'-'.join(('',) + extra)}"
        out.mkdir(parents=True, exist_ok=True)
        run_job("torchrun", ["--zero-stage", str(stage), *JOB_ARGS, *extra, "--ckpt-dir", str(out / "ckpt"),
                             "--out", str(out / "weights.safetensors"), "--metrics", str(out / "metrics.json"),
                             "--log-dir", str(out / "logs")])
        _STRAIGHT[key] = out
    return _STRAIGHT[key]
