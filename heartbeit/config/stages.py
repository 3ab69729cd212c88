"""The pipeline's stages, in order, and the `heartbeit` commands each one runs: the one list that `heartbeit run`
(stage by stage, `--until`), the CLI's help and the Slurm chain (`heartbeit slurm submit`: which job runs
which command) are all built from. A stage added here is run locally and on a cluster alike.

Each step also names the Slurm job that runs it: the CPU data preparation is one job (`prepare`: synth,
ingest, render and tokenizer training, slurm/prepare.sh), token encoding an array over the shards plus a
gather (`encode`, slurm/encode.sh), the matrix a plan job then one array task per cell.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]  # `heartbeit <argv...>` (the run's --profile/--config/--set/--workdir are added)
    job: str  # the Slurm job that runs this step
    progress: bool = True  # the command takes --no-progress


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[Step, ...]


PIPELINE: tuple[Stage, ...] = (
    Stage("synth", (Step(("synth",), "prepare"),)),  # only without real input_dirs
    Stage("ingest", (Step(("ingest",), "prepare"),)),
    Stage("render", (Step(("render",), "prepare"),)),
    # on a cluster the encoding is its own job: an array over the shards, then one gather (slurm/encode.sh)
    Stage("tokenizer", (Step(("tokenizer", "train"), "prepare"), Step(("tokenizer", "encode"), "encode"))),
    Stage("pretrain", (Step(("pretrain",), "pretrain"),)),
    Stage("matrix", (Step(("matrix", "plan"), "plan", progress=False),
                     Step(("matrix", "run"), "matrix", progress=False))),
    Stage("report", (Step(("report",), "report", progress=False),)),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)
# the Slurm jobs in dependency order: prepare, encode, pretrain, plan, matrix, report
SLURM_JOBS: tuple[str, ...] = tuple(dict.fromkeys(step.job for stage in PIPELINE for step in stage.steps))


def stage(name: str) -> Stage:
    for s in PIPELINE:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {list(STAGE_NAMES)}")


def stages_of_job(job: str) -> tuple[str, ...]:
    """The stages a Slurm job runs (a stage whose steps are split over jobs appears in each)."""
    return tuple(s.name for s in PIPELINE if any(step.job == job for step in s.steps))


def summary() -> str:
    """`synth -> ingest -> ... -> report`, for help texts."""
    return " -> ".join(STAGE_NAMES)
