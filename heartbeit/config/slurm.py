"""Site settings for `heartbeit slurm submit`: where and how the study's jobs run on a cluster.

Not part of RunConfig: the same study (profile) runs unchanged on any site, and a site file never changes
a result. Loaded from YAML (`--site site.yaml`, see configs/site.example.yaml) with the same strict rules
as the run config: unknown keys and wrong types are errors naming the key.

Every field is optional; an empty string or 0 means "keep the sbatch script's own #SBATCH default"."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .core import ConfigError, from_dict, load_yaml
from .stages import SLURM_JOBS

STAGES = SLURM_JOBS  # the chain's jobs, in order (heartbeit.config.stages): prepare, encode, pretrain, plan, matrix, report
LAUNCHERS = ("torchrun", "srun")
GPU_JOBS = ("pretrain", "matrix")


@dataclass
class StageResources:
    """sbatch resources of one stage's job(s); the site-wide partition/account/qos apply unless set here."""

    time: str = ""  # Slurm time limit, e.g. "04:00:00" or "1-00:00:00"
    cpus_per_task: int = 0
    mem: str = ""  # e.g. "32G"
    partition: str = ""  # e.g. a CPU partition for prepare/report while pretraining uses the GPU one
    gpus_per_node: int = 0
    sbatch_args: list[str] = field(default_factory=list)  # anything else, verbatim, e.g. ["--constraint=a100"]

    def validate(self) -> None:
        if self.cpus_per_task < 0 or self.gpus_per_node < 0:
            raise ConfigError("cpus_per_task and gpus_per_node must be >= 0")


@dataclass
class SiteConfig:
    partition: str = ""
    account: str = ""
    qos: str = ""
    setup: list[str] = field(default_factory=list)  # shell lines every job runs first (module load, conda activate)
    python: str = ""  # interpreter on the compute nodes; "" = the one running `heartbeit slurm submit`
    nodes: int = 1  # pretraining nodes
    ranks_per_node: int = 0  # pretraining ranks per node; 0 = the node's GPUs, else its allocated CPUs
    launch: str = "torchrun"  # pretraining ranks: torchrun (one task per node) | srun (one task per rank)
    matrix_parallel: int = 0  # at most this many matrix cells at once (--array=0-N%K); 0 = no limit
    encode_tasks: int = 0  # token-encoding array tasks (each encodes every N-th shard); 0 = from the cost model
    # The cost model (heartbeit/cost.py) that sets every job's --time a stage leaves unset, sizes CPUs per
    # task and prints the study's GPU-hours; unset values are ASSUMED defaults, labelled so in the dry-run.
    gpu_type: str = ""  # A100 | H100 | H200 | L40S | ... ("" = ASSUMED A100): its bf16 peak from train/flops.py
    gpu_tflops: float = 0.0  # measured sustained training TFLOP/s per GPU (e.g. pretraining's log: MFU x peak)
    decode_images_per_s: float = 0.0  # measured 224 px images/s one loader core decodes (0 = ASSUMED 4,000)
    corpus_ecgs: int = 0  # ECGs in the real input, for time limits before ingest has counted them
    time_margin: float = 1.5  # every estimate x this, plus 10 min of start-up, rounded up to 15 min
    # the partition's MaxTime: no limit is set above it; a longer pretraining or cell checkpoints before the limit
    # and requeues itself (ASSUMED 2 days, a common GPU partition limit; "" = no cap)
    max_time: str = "2-00:00:00"
    sbatch_args: list[str] = field(default_factory=list)  # verbatim for every job, e.g. ["--mail-type=FAIL"]
    defaults: StageResources = field(default_factory=StageResources)  # for every stage, where it sets nothing
    prepare: StageResources = field(default_factory=StageResources)
    encode: StageResources = field(default_factory=StageResources)  # each encoding task and the gather
    pretrain: StageResources = field(default_factory=StageResources)
    plan: StageResources = field(default_factory=StageResources)
    matrix: StageResources = field(default_factory=StageResources)
    report: StageResources = field(default_factory=StageResources)

    def validate(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"nodes must be >= 1, got {self.nodes}")
        if self.ranks_per_node < 0 or self.matrix_parallel < 0 or self.encode_tasks < 0:
            raise ConfigError("ranks_per_node, matrix_parallel and encode_tasks must be >= 0")
        if self.launch not in LAUNCHERS:
            raise ConfigError(f"launch must be one of {list(LAUNCHERS)}, got {self.launch!r}")
        if self.gpu_tflops < 0 or self.decode_images_per_s < 0 or self.corpus_ecgs < 0:
            raise ConfigError("gpu_tflops, decode_images_per_s and corpus_ecgs must be >= 0")
        if self.time_margin < 1:
            raise ConfigError(f"time_margin must be >= 1, got {self.time_margin}")
        if self.max_time:
            parse_time(self.max_time)

    def stage(self, name: str) -> StageResources:
        """The stage's resources, each unset field taken from `defaults` (sbatch_args: both, defaults first)."""
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages: {list(STAGES)}")
        own: StageResources = getattr(self, name)
        d = self.defaults
        # a GPU request in `defaults` reaches the GPU jobs only; prepare, plan and report never inherit it
        return StageResources(time=own.time or d.time, cpus_per_task=own.cpus_per_task or d.cpus_per_task,
                              mem=own.mem or d.mem, partition=own.partition or d.partition,
                              gpus_per_node=own.gpus_per_node or (d.gpus_per_node if name in GPU_JOBS else 0),
                              sbatch_args=[*d.sbatch_args, *own.sbatch_args])


def parse_time(text: str) -> int:
    """Slurm's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> seconds."""
    import re

    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"time {text!r} is not a Slurm time (e.g. 04:00:00 or 2-00:00:00)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        return days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:
        return a * 3600 + b * 60 + c
    return a * 60 + (b or 0)  # MM or MM:SS


def format_time(seconds: float) -> str:
    """Seconds -> D-HH:MM:SS (Slurm's --time)."""
    s = int(math.ceil(seconds))
    days, rest = divmod(s, 86400)
    return (f"{days}-" if days else "") + f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def load_site(path: str | Path | None = None) -> SiteConfig:
    """The site file's settings over the defaults (no file: the defaults, i.e. the scripts' #SBATCH lines)."""
    if path is None:
        return SiteConfig()
    if not Path(path).is_file():
        raise ConfigError(f"site file not found: {path}")
    try:
        return from_dict(SiteConfig, load_yaml(Path(path)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
