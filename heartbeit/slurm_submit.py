"""The whole study as dependent Slurm jobs: prepare -> pretrain -> plan -> matrix array -> report.

    jobs = chain_jobs(cfg, site, run_args, submit_dir)     # what would be submitted (JobSpec list)
    record = submit_chain(jobs, cfg, site_file)             # sbatch each, after the job(s) it depends on

The submitted chain's state (job rows, cells, status, waiting for it) is heartbeit.slurm_status.

Each job waits for the one before it (`afterok`, with --kill-on-invalid-dep=yes: a failed stage cancels the
rest), except the report: it waits for the plan job to succeed and for the matrix array to *end*, whatever
became of its cells (`afterok:<plan>,afterany:<matrix>`), so a failed or timed-out cell never silently
cancels the study's report; the report opens with the cells that did not finish, and `heartbeit slurm
status` names them with their reasons. Resubmitting from the matrix reruns just those cells.

Every job runs a readable script in slurm/ (its #SBATCH lines are the defaults; the site file's settings
become sbatch options that override them) and that script runs the same `heartbeit` commands as the local
path (`heartbeit run`). Each stage skips work already complete for the same config, so resubmitting the
chain after a failure continues where it stopped.

The matrix array's size must be known when it is submitted, before any image exists: cells are
architecture x fraction x task x seed, a function of the config alone. The plan job checks that the real
plan has exactly that many cells (`slurm/matrix.sh plan --expect N`) and fails the chain otherwise, so an
array can never silently skip or overrun cells."""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from heartbeit.config.layout import RunLayout
from heartbeit.config.slurm import STAGES, SiteConfig, StageResources
from heartbeit.utils.io import atomic_write_json, atomic_write_text
from heartbeit.slurm_status import SlurmError

log = logging.getLogger("heartbeit.slurm")

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "slurm"


AFTER = "after"  # the key of an outside job id (`--after`) in JobSpec.command's ids


@dataclass
class JobSpec:
    stage: str
    script: str  # path of the sbatch script
    script_args: list[str]  # arguments after the script
    sbatch_args: list[str]  # options before the script (resources, output, array)
    env: dict[str, str] = field(default_factory=dict)  # exported to the job (sbatch --export=ALL default)
    array: str = ""  # e.g. "0-59%8"
    log: str = ""  # the job's output file pattern
    # (afterok | afterany, job name) pairs this job waits for; AFTER names a job given from outside (--after)
    after: list[tuple[str, str]] = field(default_factory=list)
    name: str = ""  # the stage, or "matrix#k" for part k of a matrix split by expected duration
    estimate_s: float = 0.0  # the cost model's estimate (heartbeit/cost.py) of the longest task
    gpus: int = 0  # GPUs per task (for GPU-hours)

    def __post_init__(self):
        self.name = self.name or self.stage

    @property
    def task_indices(self) -> list[int]:
        """The array's task indices ('0-2,5%4' -> [0, 1, 2, 5])."""
        out: list[int] = []
        for part in self.array.split("%")[0].split(","):
            if part:
                lo, _, hi = part.partition("-")
                out.extend(range(int(lo), int(hi or lo) + 1))
        return out

    def command(self, ids: dict[str, str] | None = None) -> list[str]:
        """The sbatch command; `ids` maps job names (and AFTER) to submitted job ids."""
        deps = [f"{kind}:{(ids or {})[stage]}" for kind, stage in self.after if stage in (ids or {})]
        dep = [f"--dependency={','.join(deps)}", "--kill-on-invalid-dep=yes"] if deps else []
        array = [f"--array={self.array}"] if self.array else []
        return ["sbatch", "--parsable", *self.sbatch_args, *array, *dep, self.script, *self.script_args]


def matrix_cell_count(mcfg, export_at=()) -> int:
    """Cells of a plan, from the config alone (heartbeit.matrix.plan_cells: task x fraction x draw x arch x
    seed, plus the pretraining ablation's cells for the `export_at` (pretrain.export_at) exports)."""
    from heartbeit.matrix import ablation_cell_count, draws_of

    draws = sum(len(draws_of(mcfg, f)) for f in mcfg.fractions)
    return len(mcfg.tasks) * draws * (len(mcfg.architectures) + len(mcfg.probe_architectures)) * len(mcfg.seeds) \
        + ablation_cell_count(mcfg, len(export_at))


def run_args(profile: str, config: str | None, overrides: list[str], workdir: str) -> list[str]:
    """The `--profile/--config/--set/--workdir` arguments every stage's command gets."""
    out = ["--profile", profile]
    if config:
        out += ["--config", str(Path(config).resolve())]
    for text in overrides:
        out += ["--set", text]
    return [*out, "--workdir", workdir]


def gpu_defaults(cfg, site: SiteConfig, stage: str) -> StageResources:
    """What a GPU stage asks for when the site file leaves it unset, for a profile that needs a GPU
    (`allow_cpu: false`): GPUs (1 per node; the site sets more), CPUs for each rank and the loader cores that
    decode its GPU's images at the measured decode rate (heartbeit/cost.py `cpus_per_rank`), and host memory
    for its loader processes. CPU profiles and CPU stages keep the scripts' #SBATCH lines."""
    if cfg.allow_cpu or stage not in ("pretrain", "matrix"):
        return StageResources()
    from heartbeit.cost import cpus_per_rank

    own = site.stage(stage)
    gpus = own.gpus_per_node or 1
    if stage == "pretrain":
        ranks = site.ranks_per_node or gpus
        per_task = 1 if site.launch == "srun" else ranks  # srun: one task per rank; torchrun: one per node
        workers = cfg.pretrain.num_workers
    else:
        ranks = per_task = 1  # one cell per array task
        workers = cfg.matrix.num_workers
    # 8 GB per rank + 2 GB per loader worker of host memory
    return StageResources(gpus_per_node=gpus, cpus_per_task=per_task * cpus_per_rank(cfg, site, stage)[0],
                          mem=f"{ranks * (8 + 2 * workers)}G")


def _resources(cfg, site: SiteConfig, stage: str, fallback: StageResources) -> list[str]:
    """The site's resources of a stage over `fallback` (GPU defaults, the cost model's time limit). A CPU
    profile (allow_cpu) never inherits a GPU request: only GPUs set for that very stage (its section of the
    site file, --gpus-per-node) are asked for, not the `defaults` section's nor the GPU profiles' default."""
    r = site.stage(stage)
    gpus = getattr(site, stage).gpus_per_node if cfg.allow_cpu else r.gpus_per_node or fallback.gpus_per_node
    r = StageResources(time=r.time or fallback.time, partition=r.partition, sbatch_args=r.sbatch_args,
                       cpus_per_task=r.cpus_per_task or fallback.cpus_per_task, mem=r.mem or fallback.mem,
                       gpus_per_node=gpus)
    out = []
    partition = r.partition or site.partition
    for flag, value in (("--partition", partition), ("--account", site.account), ("--qos", site.qos),
                        ("--time", r.time), ("--mem", r.mem)):
        if value:
            out.append(f"{flag}={value}")
    if r.cpus_per_task:
        out.append(f"--cpus-per-task={r.cpus_per_task}")
    if r.gpus_per_node:
        out.append(f"--gpus-per-node={r.gpus_per_node}")
    return [*out, *site.sbatch_args, *r.sbatch_args]


def pretrain_world(cfg, site: SiteConfig) -> tuple[int, int]:
    """(nodes, ranks per node) of the pretraining job this site file asks for."""
    gpus = 0 if cfg.allow_cpu else (site.stage("pretrain").gpus_per_node or 1)
    return site.nodes, site.ranks_per_node or gpus or 1


def pretrain_resume_flag(cfg) -> list[str]:
    """`--resume` when an earlier run left a checkpoint but no export (as `heartbeit run` decides); a requeued
    pretraining job adds it itself (slurm/pretrain.sh, SLURM_RESTART_COUNT > 0)."""
    from heartbeit.config.layout import export_paths

    layout = RunLayout.of(cfg)
    if layout.pretrain_latest.is_file() and not export_paths(layout.pretrain, cfg.pretrain.model)[1].is_file():
        return ["--resume"]
    return []


def chain_jobs(cfg, site: SiteConfig, stage_args: list[str], submit_dir: str | Path,
               start: str = "prepare", est=None, allow_fewer_gpus: bool = False) -> list[JobSpec]:
    """The jobs of the study from stage `start` on, in dependency order, each with the cost model's time
    limit where the site file sets none (`est`: heartbeit.cost.estimate_study's, computed if None). `cfg.workdir`
    must be absolute."""
    if start not in STAGES:
        raise ValueError(f"unknown stage {start!r}; stages: {list(STAGES)}")
    work = Path(cfg.workdir)
    if not work.is_absolute():
        raise ValueError(f"workdir must be absolute for jobs on other nodes, got {work}")
    logs = RunLayout(work).slurm_logs
    python = site.python or sys.executable
    env = {"HEARTBEIT": f"{python} -m heartbeit", "HEARTBEIT_PYTHON": python}
    if site.setup:
        env["HEARTBEIT_SITE_SETUP"] = str(RunLayout(work).slurm_setup)
    common = [f"--chdir={Path(submit_dir).resolve()}"]
    n_cells = matrix_cell_count(cfg.matrix, cfg.pretrain.export_at)
    if n_cells < 1:
        raise ValueError("the matrix has no cells (architectures, fractions, tasks and seeds must be non-empty)")

    from heartbeit.cost import estimate_study, index_ranges, split_by_duration, time_limit

    nodes, per_node = pretrain_world(cfg, site)
    est = est or estimate_study(cfg, site, nodes * per_node)

    def resources(stage: str, seconds: float) -> tuple[list[str], int]:
        fallback = gpu_defaults(cfg, site, stage)
        fallback.time = time_limit(seconds, site)[0]
        args = _resources(cfg, site, stage, fallback)
        gpus = next((int(a.split("=")[1]) for a in args if a.startswith("--gpus-per-node=")), 0)
        return args, gpus

    def single(stage: str, script: str, args: list[str], extra: list[str] = (), job_env: dict | None = None,
               name: str = ""):
        name = name or stage
        out = str(logs / f"{name}-%j.out")
        res, gpus = resources(stage, est.jobs[name])
        return JobSpec(stage, str(SCRIPTS_DIR / script), args, [*common, f"--output={out}", *res, *extra],
                       {**env, **(job_env or {})}, log=out, estimate_s=est.jobs[name],
                       gpus=gpus * (nodes if stage == "pretrain" else 1), name=name)

    quiet = ["--no-progress"]
    ranks = site.ranks_per_node or gpu_defaults(cfg, site, "pretrain").gpus_per_node
    if site.launch == "torchrun":
        layout = ["--ntasks-per-node=1"]
    else:
        if not ranks:
            raise ValueError("launch=srun needs ranks_per_node (one Slurm task per rank)")
        layout = [f"--ntasks-per-node={ranks}"]
    pretrain_env = {"HEARTBEIT_LAUNCH": site.launch, "HEARTBEIT_ENTRY": "-m heartbeit pretrain"}
    if ranks:
        pretrain_env["HEARTBEIT_RANKS_PER_NODE"] = str(ranks)
    matrix_log = str(logs / "matrix-%A_%a.out")
    parallel = f"%{site.matrix_parallel}" if site.matrix_parallel else ""
    if len(est.cells) != n_cells:
        raise RuntimeError(f"cost model: {len(est.cells)} cells, plan: {n_cells}")  # one enumeration, two counts
    parts = split_by_duration(est.cells, site)  # one array per duration class, each with its own --time
    matrix_jobs = []
    for k, (indices, longest) in enumerate(parts):
        res, gpus = resources("matrix", longest)
        matrix_jobs.append(JobSpec("matrix", str(SCRIPTS_DIR / "matrix.sh"), ["cell", *stage_args],
                                   [*common, f"--output={matrix_log}", *res], dict(env),
                                   array=index_ranges(indices) + parallel, log=matrix_log,
                                   name="matrix" if len(parts) == 1 else f"matrix#{k}", estimate_s=longest,
                                   gpus=gpus))
    encode_log = str(logs / "encode-%A_%a.out")
    res, gpus = resources("encode", est.jobs["encode"])
    encode_jobs = [  # the token grids: an array over the shards, then one gather writes the index
        JobSpec("encode", str(SCRIPTS_DIR / "encode.sh"), ["tasks", str(est.encode_tasks), *stage_args],
                [*common, f"--output={encode_log}", *res], dict(env), array=f"0-{est.encode_tasks - 1}",
                log=encode_log, estimate_s=est.jobs["encode"], gpus=gpus),
        single("encode", "encode.sh", ["gather", *stage_args], name="gather")]
    jobs = {  # one per Slurm job of the stage list (heartbeit.config.stages.SLURM_JOBS)
        "prepare": single("prepare", "prepare.sh", [*stage_args], job_env={"HEARTBEIT_PREPARE_UNTIL": "tokenizer-train"}),
        "pretrain": single("pretrain", "pretrain.sh", [*stage_args, *quiet, *pretrain_resume_flag(cfg),
                                                       *(["--allow-fewer-gpus"] if allow_fewer_gpus else [])],
                           [f"--nodes={site.nodes}", *layout], pretrain_env),
        "plan": single("plan", "matrix.sh", ["plan", "--expect", str(n_cells), *stage_args]),
        "report": single("report", "report.sh", [*stage_args]),
    }
    chosen = [j for name in STAGES[STAGES.index(start):]
              for j in {"matrix": matrix_jobs, "encode": encode_jobs}.get(name, [jobs.get(name)])]
    previous = AFTER
    for job in chosen:
        job.after = [("afterok", previous)]
        if job.stage != "matrix" or job is matrix_jobs[-1]:
            previous = job.name
        if job.stage == "matrix" and start != "matrix":
            job.after = [("afterok", "plan")]  # every part of the matrix waits for the plan
    if start != "report":  # the report: once every matrix part has ended, however
        jobs["report"].after = ([("afterok", "plan")] if start != "matrix" else [("afterok", AFTER)]) + \
            [("afterany", j.name) for j in matrix_jobs]  # its cells ended
    return chosen


def _sbatch(cmd: list[str], env: dict[str, str]) -> str:
    try:
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError("sbatch not found: run this on a Slurm login node (or start slurm/local_cluster.sh)") from None
    if proc.returncode != 0:
        raise SlurmError(f"{shlex.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit_chain(jobs: list[JobSpec], cfg, site: SiteConfig, site_file: str | None = None,
                 after: str | None = None) -> dict:
    """sbatch each job after the job(s) it depends on (JobSpec.after; the first on `after`, if given); write
    and return the record <workdir>/slurm_jobs.json. A failed sbatch cancels the jobs already submitted."""
    work = Path(cfg.workdir)
    RunLayout(work).slurm_logs.mkdir(parents=True, exist_ok=True)
    if site.setup:
        atomic_write_text(RunLayout(work).slurm_setup,
                          "# written by `heartbeit slurm submit` from the site file; sourced by every job\n"
                          + "\n".join(site.setup) + "\n")
    submitted: list[dict] = []
    ids = {AFTER: after} if after else {}
    try:
        for job in jobs:
            cmd = job.command(ids)
            job_id = _sbatch(cmd, job.env)
            log.info("%s: job %s", job.stage, job_id)
            submitted.append({"stage": job.stage, "name": job.name, "job_id": job_id, "array": job.array,
                              "log": job.log, "command": cmd})
            ids[job.name] = job_id
    except SlurmError:
        for done in submitted:
            subprocess.run(["scancel", done["job_id"]], capture_output=True, timeout=60)
        raise
    record = {"profile": cfg.profile, "workdir": str(work), "results_dir": str(Path(cfg.results_dir).resolve()),
              "site_file": str(Path(site_file).resolve()) if site_file else None,
              "matrix_cells": matrix_cell_count(cfg.matrix, cfg.pretrain.export_at),
              "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": submitted}
    atomic_write_json(RunLayout(work).slurm_record, record)
    return record


def read_record(workdir: str | Path) -> dict:
    path = RunLayout(workdir).slurm_record
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no submitted chain here (run `heartbeit slurm submit` first)")
    return json.loads(path.read_text())


__all__ = ["JobSpec", "chain_jobs", "submit_chain", "read_record", "matrix_cell_count", "run_args"]
