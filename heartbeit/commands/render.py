"""`heartbeit render`: corpus -> filtered, rendered 12-lead images in WebDataset shards per split."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from heartbeit.config.layout import RunLayout

HELP = """Filter (0.5-40 Hz zero-phase Butterworth + median baseline removal), render every ECG as a
grayscale 12-lead image, split by patient and write WebDataset image shards.

Output (IMAGES): <split>/<split>-NNNNNN.tar for split in train/val/test/external, manifest.parquet
(every ECG's split, fraction membership, labels, shard), layout.json (lead boxes), index.json (per-shard
counts and sha256), config.resolved.yaml. Reruns skip complete shards.

Slurm array: each task renders shards i with i % N == task (--num-tasks/--task-index, default from
SLURM_ARRAY_TASK_COUNT / SLURM_ARRAY_TASK_ID); index.json appears when the last shard is done. Plan once
first (`--plan-only --num-tasks N`: IMAGES/plan/), so each task reads only its own slice of the plan.

Example: heartbeit render --corpus runs/ci/corpus --out runs/ci/images --profile ci"""

log = logging.getLogger("heartbeit.render")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("--corpus", default=None, help="corpus folder from `heartbeit ingest` (default: <workdir>/corpus)")
    parser.add_argument("--out", default=None, help="image shard folder (default: <workdir>/images)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: render.workers; 0 = all cores); never changes the output")
    parser.add_argument("--task-index", type=int, default=None, help="this array task (default $SLURM_ARRAY_TASK_ID or 0)")
    parser.add_argument("--num-tasks", type=int, default=None, help="array size (default $SLURM_ARRAY_TASK_COUNT or 1)")
    parser.add_argument("--plan-only", action="store_true",
                        help="write the render plan for --num-tasks array tasks (IMAGES/plan/) and render nothing")
    parser.add_argument("--no-verify", action="store_true", help="skip re-hashing complete shards on rerun")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_config_args(parser)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def array_task(task_index: int | None, num_tasks: int | None) -> tuple[int, int]:
    """(task index, task count): as given, else this Slurm array task's (0-based), else (0, 1)."""
    count = num_tasks if num_tasks is not None else _env_int("SLURM_ARRAY_TASK_COUNT", 1)
    index = task_index if task_index is not None else _env_int("SLURM_ARRAY_TASK_ID", 0)
    if "SLURM_ARRAY_TASK_MIN" in os.environ and task_index is None:
        index -= _env_int("SLURM_ARRAY_TASK_MIN", 0)
    return index, count


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.config import write_resolved
    from heartbeit.data.render.stage import render_corpus
    from heartbeit.utils.io import resolve_workers

    from heartbeit.config.preflight import raise_problems, site_problems

    cfg = resolve_config(args)
    corpus = Path(args.corpus) if args.corpus else RunLayout.of(cfg).corpus
    raise_problems(site_problems(cfg, corpus))  # before any image: the held-out sites must exist
    out = Path(args.out) if args.out else RunLayout.of(cfg).images
    task_index, num_tasks = array_task(args.task_index, args.num_tasks)
    workers = resolve_workers(args.workers if args.workers is not None else cfg.render.workers)
    summary = render_corpus(corpus, out, cfg.render, workers=workers, task_index=task_index, num_tasks=num_tasks,
                            progress=not args.no_progress, verify=not args.no_verify, plan_only=args.plan_only)
    write_resolved(cfg, out)
    split_text = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    if summary.get("planned"):
        print(f"render plan: {summary['ecgs']} ECGs ({split_text}) in {summary['shards']} shards for {num_tasks} "
              f"task(s) -> {out / 'plan'}")
        return 0
    print(f"render: {summary['ecgs']} ECGs ({split_text}) in {summary['shards']} shards, "
          f"{summary['rendered_now']} rendered now{'' if summary['index_written'] else ' (index.json pending other tasks)'}"
          f" -> {out}")
    return 0
