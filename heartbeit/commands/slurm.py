"""`heartbeit slurm submit | status`: the whole study as dependent Slurm jobs."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from heartbeit.config.cli_args import add_common_config_args
from heartbeit.config.layout import RunLayout
from heartbeit.config.stages import SLURM_JOBS

HELP = """Submit the study as dependent jobs (each after the one before succeeded; the report after the matrix
array has ended, however its cells ended), each running a script in slurm/ that calls the same
`heartbeit` commands as `heartbeit run`:

  prepare   slurm/prepare.sh    synth (unless real input_dirs), ingest, render, tokenizer train + encode
  pretrain  slurm/pretrain.sh   multi-node (torchrun per node or srun per rank), --requeue, checkpoints on
                                USR1 before the time limit and resumes
  plan      slurm/matrix.sh     `heartbeit matrix plan`; fails unless the plan has the submitted cell count
  matrix    slurm/matrix.sh     one cell per array task (--array=0-N-1%K), --requeue; done cells are skipped
  report    slurm/report.sh     tables, figures, REPORT.md into the config's results_dir

Site settings (partition, account, QoS, time limits, resources per stage, module/conda setup lines) come
from a YAML file (--site, see configs/site.example.yaml); the flags below override it. Job ids go to
<workdir>/slurm_jobs.json and logs to <workdir>/slurm/logs/. Resubmitting after a failure continues: every
stage skips work already complete for the same config.

  heartbeit slurm submit --profile paper --site configs/site.example.yaml --workdir /scratch/$USER/hb
  heartbeit slurm submit --profile ci --dry-run          # print the sbatch commands only
  heartbeit slurm status --workdir /scratch/$USER/hb [--wait] [--json]"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("submit", "status"))
    site = parser.add_argument_group("site (override the --site file)")
    site.add_argument("--site", default=None, help="site YAML (partition, account, qos, times, setup lines, ...)")
    site.add_argument("--partition", default=None)
    site.add_argument("--account", default=None)
    site.add_argument("--qos", default=None)
    site.add_argument("--nodes", type=int, default=None, help="pretraining nodes")
    site.add_argument("--gpus-per-node", type=int, default=None, help="pretraining GPUs per node")
    site.add_argument("--ranks-per-node", type=int, default=None,
                      help="pretraining ranks per node (default: GPUs per node, else the job's CPUs)")
    site.add_argument("--launch", choices=("torchrun", "srun"), default=None, help="how pretraining starts ranks")
    site.add_argument("--matrix-parallel", type=int, default=None, help="at most K matrix cells at once (%%K)")
    parser.add_argument("--from", dest="start", default="prepare",
                        choices=SLURM_JOBS,
                        help="submit from this stage on (earlier stages already done)")
    parser.add_argument("--after", default=None, help="make the first job wait (afterok) for this job id")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch commands, every job's estimated "
                        "duration and the study's GPU-hours; submit nothing")
    parser.add_argument("--allow-fewer-gpus", action="store_true",
                        help="submit pretraining on fewer GPUs than the profile's world_size (refused otherwise)")
    parser.add_argument("--wait", action="store_true", help="poll until every job of the chain has finished; "
                        "exit 0 only if all completed")
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="--wait gives up after this (s)")
    parser.add_argument("--json", action="store_true", help="status: machine-readable output")
    add_common_config_args(parser)


def site_from_args(args):
    from heartbeit.config.slurm import load_site

    site = load_site(args.site)
    for name in ("partition", "account", "qos", "nodes", "ranks_per_node", "launch", "matrix_parallel"):
        value = getattr(args, name)
        if value is not None:
            setattr(site, name, value)
    if args.gpus_per_node is not None:
        site.pretrain.gpus_per_node = args.gpus_per_node
    site.validate()
    return site


def _submit(args) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.slurm_submit import chain_jobs, matrix_cell_count, run_args, submit_chain

    site = site_from_args(args)
    cfg = resolve_config(args)
    # Jobs run on other nodes, from the submission directory (--chdir): name the run directory absolutely.
    cfg.workdir = str(Path(cfg.workdir).resolve())
    stage_args = run_args(args.profile, args.config, list(args.overrides or []), cfg.workdir)
    from heartbeit.cost import allocation_problem, estimate_study, estimate_table
    from heartbeit.slurm_submit import pretrain_world

    nodes, per_node = pretrain_world(cfg, site)
    est = estimate_study(cfg, site, nodes * per_node)
    jobs = chain_jobs(cfg, site, stage_args, Path.cwd(), start=args.start, est=est,
                      allow_fewer_gpus=args.allow_fewer_gpus)
    # the run's checks before the first job (the GPU check runs in the jobs themselves, on their nodes)
    from heartbeit.config.preflight import config_problems, raise_problems, weight_problems

    problems = config_problems(cfg) + weight_problems(cfg.matrix)
    if any(j.stage == "pretrain" for j in jobs) and not args.allow_fewer_gpus:
        gpus = site.stage("pretrain").gpus_per_node or 1
        too_few = allocation_problem(cfg, site, nodes, gpus)
        problems += [too_few] if too_few else []
    if args.dry_run:
        for problem in problems:
            print(f"# WARNING (a real submit stops here): {problem}")
    else:
        raise_problems(problems)
    if args.dry_run:
        from heartbeit.slurm_submit import AFTER

        ids = {AFTER: args.after} if args.after else {}
        for job in jobs:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(job.env.items()))
            print(f"# {job.name}\n{env} \\\n  {shlex.join(job.command(ids))}")
            ids[job.name] = f"<{job.name} job id>"
        print(estimate_table(jobs, est))
        print(weights_lines(cfg))
        return 0
    record = submit_chain(jobs, cfg, site, args.site, after=args.after)
    for entry in record["jobs"]:
        array = f"  array {entry['array']}" if entry["array"] else ""
        print(f"{entry.get('name', entry['stage']):9s} job {entry['job_id']}{array}")
    print(estimate_table(jobs, est))
    layout = RunLayout.of(cfg)
    print(f"{matrix_cell_count(cfg.matrix, cfg.pretrain.export_at)} matrix cells; job ids -> "
          f"{layout.slurm_record}; logs -> {layout.slurm_logs}/")

    print(f"follow with: heartbeit slurm status --workdir {shlex.quote(cfg.workdir)}")
    if args.wait:
        from heartbeit.slurm_status import format_status, wait_chain

        status = wait_chain(record, args.timeout)
        print(format_status(status))
        return 0 if all(s["ok"] for s in status) else 1
    return 0


def weights_lines(cfg) -> str:
    """The ImageNet files the baselines' cell ids will hash, with their sha256 (docs/cluster.md)."""
    from heartbeit.config.preflight import imagenet_archs
    from heartbeit.matrix import imagenet_weights_sha
    from heartbeit.models.weights import weights_file

    lines = ["# ImageNet weights (each cell id hashes its file's sha256):"]
    for arch in imagenet_archs(cfg.matrix):
        found = weights_file(arch, cfg.matrix.imagenet_weights_dir) if cfg.matrix.imagenet_weights_dir else None
        sha = imagenet_weights_sha(arch, cfg.matrix.imagenet_weights_dir) if found or cfg.matrix.imagenet_weights_dir else ""
        lines.append(f"#   {arch}: " + (f"{found.name if found else arch + '.safetensors (converted)'} sha256 {sha}"
                                         if sha else "missing"))
    return "\n".join(lines)


def _status(args) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.slurm_status import cell_states, chain_status, format_cells, format_status, wait_chain
    from heartbeit.slurm_submit import read_record

    workdir = Path(args.workdir) if args.workdir else Path(resolve_config(args).workdir)
    record = read_record(workdir)
    status = wait_chain(record, args.timeout) if args.wait else chain_status(record)
    counts, attention = cell_states(record, status)
    if args.json:
        print(json.dumps({"workdir": record["workdir"], "jobs": status, "cells": counts, "cells_attention": attention},
                         indent=2))
    else:
        print(f"{record['profile']} chain submitted {record['submitted']} ({record['matrix_cells']} matrix cells)")
        print(format_status(status))
        print(format_cells(counts, attention))
    if args.wait:
        return 0 if all(s["ok"] for s in status) else 1
    return 0


def run(args: argparse.Namespace) -> int:
    from heartbeit.slurm_status import SlurmError

    try:
        return _submit(args) if args.action == "submit" else _status(args)
    except SlurmError as exc:
        print(f"heartbeit slurm: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"heartbeit slurm: {exc}", file=sys.stderr)
        return 1
