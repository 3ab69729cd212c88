"""Multi-node on one machine: `sbatch --nodes=2 slurm/pretrain.sh` on a two-node Slurm cluster whose nodes
are network namespaces (slurm/netns_cluster.sh: own address, own slurmd, own hostname each). The DeepSpeed
ZeRO-2 job's torchrun rendezvous crosses the two "hosts"; its ranks must report both hosts, world size
2 x ranks per node, and end on the same weights as the same 4 ranks on one host."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers.dist_launch import BIN, JOB_ARGS, PY, ROOT, base_env, free_port, load_weights, max_abs_diff, read_json
from helpers.slurm_cluster import Cluster, slurm_cluster  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]
SCRIPT = ROOT / "slurm" / "netns_cluster.sh"
RANKS_PER_NODE = 2


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def netns_cluster(slurm_cluster):  # the single-node fixture installs Slurm and munge where they are missing
    if shutil.which("ip") is None or shutil.which("nsenter") is None or shutil.which("unshare") is None:
        pytest.skip("needs iproute2 (ip netns) and util-linux (nsenter, unshare) for network namespaces")
    was_up = _script("status").returncode == 0
    proc = _script("up")
    if proc.returncode == 3:
        pytest.skip(f"netns Slurm cluster unavailable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, f"slurm/netns_cluster.sh up failed ({proc.returncode}):\n{proc.stderr}"
    yield Cluster(env={"SLURM_CONF": proc.stdout.strip().split("=", 1)[1]})
    if not was_up:
        _script("down")


def test_two_node_deepspeed_job_across_namespaces(netns_cluster, tmp_path):
    c = netns_cluster
    nodes = c.run("sinfo", "-h", "-N", "-o", "%N %o").stdout.split("\n")
    addrs = dict(line.split() for line in nodes if line.strip())
    assert len(addrs) == 2 and len(set(addrs.values())) == 2, addrs  # two nodes, two addresses

    out = tmp_path / "job"
    out.mkdir()
    env = {**base_env(), "HEARTBEIT_PYTHON": PY, "HEARTBEIT_LAUNCH": "torchrun",
           "HEARTBEIT_ENTRY": "-m heartbeit.train.dist_selftest", "HEARTBEIT_RANKS_PER_NODE": str(RANKS_PER_NODE)}
    job = c.sbatch("--nodes=2", "--ntasks-per-node=1", f"--cpus-per-task={RANKS_PER_NODE}", f"--chdir={out}",
                   f"--output={out}/job.out", str(ROOT / "slurm" / "pretrain.sh"), "--zero-stage", "2", *JOB_ARGS,
                   "--out", str(out / "weights.safetensors"), "--metrics", str(out / "metrics.json"),
                   "--log-dir", str(out / "logs"), env=env)
    state = c.wait(job, timeout=240)[0]
    log = (out / "job.out").read_text()
    assert state["JobState"] == "COMPLETED", log[-4000:]
    assert state["NodeList"] == "n[1-2]" and f"master {addrs['n1']}:" in log
    world = 2 * RANKS_PER_NODE
    assert read_json(out / "metrics.json")["world_size"] == world
    hosts = {}
    for rank in range(world):
        line = next(x for x in (out / "logs" / f"rank{rank}.log").read_text().splitlines() if f"rank {rank} of" in x)
        assert f"rank {rank} of {world} on host" in line
        hosts[rank] = line.split(" on host ")[1].split()[0]
    assert set(hosts.values()) == {"n1", "n2"}, hosts
    assert sorted(hosts.values()).count("n1") == RANKS_PER_NODE

    # The same 4 ranks on one host (plain torchrun): the cross-host run must reach the same weights.
    one = tmp_path / "one-host"
    proc = subprocess.run([str(BIN / "torchrun"), f"--nproc_per_node={world}", f"--master_port={free_port()}", "-m",
                           "heartbeit.train.dist_selftest", "--zero-stage", "2", *JOB_ARGS,
                           "--out", str(one / "weights.safetensors")], cwd=ROOT, env=base_env(), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert max_abs_diff(load_weights(one / "weights.safetensors"), load_weights(out / "weights.safetensors")) == 0.0

