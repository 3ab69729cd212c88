"""What a launch leaves behind: a free rendezvous port per single-process run, DeepSpeed's compiled ops
outside the checkout, and no rank that outlives its torchrun agent."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heartbeit.distributed.env import DEFAULT_PORT, discover

ROOT = Path(__file__).resolve().parents[2]


def test_single_process_gets_a_free_port_unless_the_environment_names_one():
    ports = {discover({}).master_port for _ in range(3)}
    assert DEFAULT_PORT not in ports
    for port in ports:
        with socket.socket() as s:  # free: a second run on this machine would bind it too
            s.bind(("127.0.0.1", port))
    assert discover({"MASTER_PORT": "12345"}).master_port == 12345


def test_deepspeed_ops_are_cached_outside_the_checkout(monkeypatch, tmp_path):
    from heartbeit.distributed.deepspeed import extensions_dir, prepare_deepspeed

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = extensions_dir()
    # one folder per Python environment below the user's cache (other venvs compile with other include paths)
    assert cache.parent == tmp_path / "heartbeit" / "torch_extensions" and len(cache.name) == 12
    prepare_deepspeed()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(cache)
    assert ROOT not in Path(os.environ["TORCH_EXTENSIONS_DIR"]).parents


RANK_SCRIPT = """
import os, sys, time
from heartbeit.distributed.env import init_distributed
denv = init_distributed(backend="gloo")
open(os.path.join(sys.argv[1], f"rank{denv.rank}.pid"), "w").write(str(os.getpid()))
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has stopped running; nobody reaps it here


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ranks_die_with_a_killed_torchrun_agent(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = subprocess.Popen([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node=2",
                              f"--master_port={port}", str(script), str(tmp_path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(pids) < 2:
            pids = [int(p.read_text()) for p in tmp_path.glob("rank*.pid") if p.read_text()]
            time.sleep(0.2)
        assert len(pids) == 2, "the ranks did not start"
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "a rank outlived its torchrun agent by 10 s"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if agent.poll() is None:
            agent.kill()
