"""Who am I in this job? Rank discovery for every launcher a hospital cluster might use, then one
process-group initialisation (gloo on CPU, nccl on GPU).

Precedence, most specific first, because launchers nest: `srun torchrun ...` leaves SLURM_* variables
in the environment of torchrun's workers, and `mpirun` inside an allocation does the same. The innermost
launcher is the one that started this process, and it always sets its own variables:

1. torchrun / torch.distributed.run (TORCHELASTIC_RUN_ID, RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)
2. the deepspeed launcher and any other env:// launcher (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)
3. OpenMPI's mpirun (OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE)
4. other MPI launchers (PMI_RANK / PMIX_RANK: MPICH, Intel MPI, `srun --mpi=pmix`), via mpi4py
5. Slurm's srun, one task per rank (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID); the master is the
   first host of `scontrol show hostnames $SLURM_STEP_NODELIST`
6. nothing: a single process (rank 0 of 1)

For MPI launchers the master address is rank 0's host name, broadcast with mpi4py when it is installed
(it is needed only for multi-node jobs; one node falls back to 127.0.0.1).
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import zlib
from dataclasses import dataclass
from datetime import timedelta

log = logging.getLogger("heartbeit.distributed")

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # torchrun | env | openmpi | mpi | slurm | single

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _int(env: dict, key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise RuntimeError(f"environment variable {key}={env[key]!r} is not an integer") from None


def slurm_hostnames(nodelist: str) -> list[str]:
    """Expand a Slurm node list ("node[01-03],gpu7") with `scontrol show hostnames`, as Slurm documents."""
    try:
        proc = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise RuntimeError("SLURM variables are set but `scontrol` is not on PATH; cannot find the master "
                           "host (set MASTER_ADDR to override)") from None
    if proc.returncode != 0:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` failed: {proc.stderr.strip()} "
                           "(set MASTER_ADDR to override)")
    out = proc.stdout
    hosts = out.split()
    if not hosts:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` returned no hosts")
    return hosts


def slurm_port(job_id: str) -> int:
    """A port every task of a job computes identically, different between concurrent jobs on a node."""
    return 20000 + int(job_id) % 20000 if job_id.isdigit() else 20000 + zlib.crc32(job_id.encode()) % 20000


def _mpi_master(rank: int, env: dict) -> tuple[str, int]:
    """Rank 0's host and a port, broadcast over MPI; env MASTER_ADDR/MASTER_PORT win if present."""
    if "MASTER_ADDR" in env:
        return env["MASTER_ADDR"], int(env.get("MASTER_PORT", DEFAULT_PORT))
    try:
        from mpi4py import MPI
    except ImportError:
        log.warning("mpi4py is not installed: assuming a single-node MPI job (master 127.0.0.1)")
        return "127.0.0.1", int(env.get("MASTER_PORT", DEFAULT_PORT))
    comm = MPI.COMM_WORLD
    host = socket.gethostname() if rank == 0 else None
    port = None
    if rank == 0:
        with socket.socket() as s:  # a free port on rank 0's host
            s.bind(("", 0))
            port = s.getsockname()[1]
    host, port = comm.bcast((host, port), root=0)
    return host, int(port)


def discover(environ: dict | None = None) -> DistEnv:
    """Rank, world size and rendezvous of this process, from whichever launcher started it."""
    env = dict(os.environ if environ is None else environ)

    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env"
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local_rank = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else (
            _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") if "OMPI_COMM_WORLD_LOCAL_SIZE" in env else 1)
        return DistEnv(rank, world, local_rank, local_world, env.get("MASTER_ADDR", "127.0.0.1"),
                       int(env.get("MASTER_PORT", DEFAULT_PORT)), launcher)

    if "OMPI_COMM_WORLD_RANK" in env:
        rank, world = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        addr, port = _mpi_master(rank, env) if environ is None else (
            env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", DEFAULT_PORT)))
        return DistEnv(rank, world, _int(env, "OMPI_COMM_WORLD_LOCAL_RANK"),
                       _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"), addr, port, "openmpi")

    if "PMI_RANK" in env or "PMIX_RANK" in env:
        try:
            from mpi4py import MPI
        except ImportError:
            raise RuntimeError("an MPI launcher started this process (PMI_RANK/PMIX_RANK set) but mpi4py is "
                               "not installed; install mpi4py or launch with torchrun") from None
        comm = MPI.COMM_WORLD
        rank, world = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        addr, port = _mpi_master(rank, env)
        return DistEnv(rank, world, node.Get_rank(), node.Get_size(), addr, port, "mpi")

    # SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the batch script itself sees SLURM_NTASKS (the allocation)
    # and SLURM_PROCID=0, but it is one process; only srun's job steps are ranks.
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_STEP_NUM_TASKS")
        local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        # "2(x3),1" = 2 tasks on each of 3 nodes, then 1; the first count is this layout's common case.
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "1"))
        first = per_node.split(",")[0].split("(")[0]
        local_world = int(first) if first.isdigit() else 1
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        elif world == 1:
            addr = "127.0.0.1"
        else:
            addr = slurm_hostnames(env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", "")))[0]
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else slurm_port(env.get("SLURM_JOB_ID", "0"))
        return DistEnv(rank, world, local_rank, local_world, addr, port, "slurm")

    # A single process still initialises a (one-rank) process group; a fixed port would make two runs on one
    # machine collide, so it gets a free one unless the environment names it.
    port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else free_port()
    return DistEnv(0, 1, 0, 1, env.get("MASTER_ADDR", "127.0.0.1"), port, "single")


def free_port() -> int:
    """A TCP port free on this host right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_WATCHDOG: list = []


def die_with_parent(poll_s: float = 1.0) -> None:
    """Leave when the process that started this one dies (a killed torchrun agent or deepspeed launcher
    must not leave ranks training on behind its back). Linux delivers SIGKILL through PR_SET_PDEATHSIG; a
    daemon thread that polls the parent pid covers other systems and the race before prctl. Idempotent."""
    if _WATCHDOG:
        return
    import signal
    import sys
    import threading
    import time

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                log.error("the launcher (pid %d) is gone; this rank stops", parent)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name="heartbeit-die-with-parent", daemon=True)
    thread.start()
    _WATCHDOG.append(thread)


def export(denv: DistEnv) -> None:
    """Publish the discovered rendezvous as the env:// variables torch and DeepSpeed read."""
    os.environ.update(RANK=str(denv.rank), WORLD_SIZE=str(denv.world_size), LOCAL_RANK=str(denv.local_rank),
                      LOCAL_WORLD_SIZE=str(denv.local_world_size), MASTER_ADDR=denv.master_addr,
                      MASTER_PORT=str(denv.master_port))


def default_backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


class RankLayoutError(RuntimeError):
    """More ranks on a node than GPUs visible to them."""


def check_ranks_fit_gpus(denv: DistEnv, gpus: int) -> None:
    """One GPU per rank: with more ranks on a node than GPUs, two ranks would share a device and NCCL fails
    later with a "duplicate GPU" error (or, with another backend, the run silently shares it)."""
    if gpus and denv.local_world_size > gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RankLayoutError(
            f"{denv.local_world_size} ranks on this node ({denv.launcher}: torchrun --nproc_per_node, srun "
            f"--ntasks-per-node or HEARTBEIT_RANKS_PER_NODE) but only {gpus} GPU(s) visible"
            + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
            + ": start one rank per GPU (e.g. --gpus-per-node equal to the ranks per node)")


def device_for(denv: DistEnv):
    import torch

    if torch.cuda.is_available():
        check_ranks_fit_gpus(denv, torch.cuda.device_count())
        torch.cuda.set_device(denv.local_rank)
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> DistEnv:
    """Discover the launcher, export env:// variables and initialise torch.distributed once (also for a
    single process, so DeepSpeed and the loop see one code path). Idempotent."""
    import torch.distributed as dist

    denv = discover()
    export(denv)
    if denv.launcher in ("torchrun", "env"):
        die_with_parent()  # our parent is the launcher (torchrun agent, deepspeed launcher)
    if not dist.is_initialized():
        backend = backend or default_backend()
        if backend == "nccl":
            device_for(denv)
        dist.init_process_group(backend=backend, init_method="env://", rank=denv.rank,
                                world_size=denv.world_size, timeout=timedelta(seconds=timeout_s))
        log.info("rank %d/%d (local %d/%d) on %s via %s, backend %s, master %s:%d", denv.rank,
                 denv.world_size, denv.local_rank, denv.local_world_size, socket.gethostname(), denv.launcher,
                 backend, denv.master_addr, denv.master_port)
    return denv


def destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
