"""The render plan, computed once and read in slices by Slurm array tasks.

Planning the render stage (manifest: splits and fractions; shard assignment; where every ECG's signal sits
in the corpus tars; each shard's plan digest) costs the same for every array task and grows with the corpus;
at 8.5 M ECGs it is minutes and gigabytes. `heartbeit render --plan-only --num-tasks N` (or the first array
task that finds no current plan) writes, under IMAGES/plan/:

  plan.json               what the plan was made from (its `source` digest: every render setting except
                          `workers`, metadata.parquet's sha256, the corpus tars' names and sizes), the number
                          of tasks, and every shard's (relpath, split, digest, task)
  task-NNNNN.parquet      the planned rows (manifest + signal location) of task NNNNN's shards only

and manifest.parquet / layout.json beside the shards. An array task whose plan is current reads plan.json
and its own slice only, so its overhead is its 1/N share. A plan made from other settings, another corpus or
another task count is not used (the task plans for itself, as before, and says so).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path

import pandas as pd

from heartbeit.utils.io import atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger("heartbeit.render")

PLAN_DIR = "plan"
PLAN_FORMAT = 1


def task_file(out_dir: Path, task: int) -> Path:
    return out_dir / PLAN_DIR / f"task-{task:05d}.parquet"


def source_digest(corpus_dir: Path, cfg) -> str:
    """What a plan depends on: the render settings (not `workers`: it never changes the output), the corpus
    metadata's bytes and the corpus tars' names and sizes (their contents are addressed by offset)."""
    from .corpus import list_shards

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"}
    tars = [(Path(p).name, Path(p).stat().st_size) for p in list_shards(corpus_dir)]
    blob = json.dumps({"format": PLAN_FORMAT, "settings": settings, "tars": tars,
                       "metadata": sha256_file(corpus_dir / "metadata.parquet")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_plan(corpus_dir: Path, out_dir: Path, cfg, num_tasks: int, source: str | None = None) -> dict:
    """Plan the whole stage once; write manifest.parquet, layout.json and plan/. Returns plan.json's dict.
    Identical bytes from any process, so concurrent writers are harmless."""
    from .corpus import read_metadata
    from .render_stage import build_jobs, index_corpus, layout_record, plan_shards
    from .splits import build_manifest

    source = source or source_digest(corpus_dir, cfg)
    plan = plan_shards(build_manifest(read_metadata(corpus_dir), cfg), cfg.shard_size, cfg.shard_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "manifest.parquet", _parquet_bytes(plan))
    atomic_write_json(out_dir / "layout.json", layout_record(cfg))
    rendered = plan[plan["shard"] != ""].merge(index_corpus(corpus_dir), on="ecg_uid", how="left")
    shards, task_of = [], {}
    for i, job in enumerate(build_jobs(rendered, None, cfg, keep_samples=False)):
        task_of[job.relpath] = i % num_tasks
        shards.append({"relpath": job.relpath, "split": job.split, "digest": job.digest, "task": i % num_tasks})
    rendered["_task"] = rendered["shard"].map(task_of)
    (out_dir / PLAN_DIR).mkdir(exist_ok=True)
    for task, rows in rendered.groupby("_task", sort=True):
        atomic_write_bytes(task_file(out_dir, int(task)), _parquet_bytes(rows.drop(columns="_task")))
    record = {"format": PLAN_FORMAT, "source": source, "num_tasks": int(num_tasks), "ecgs": int(len(plan)),
              "splits": {str(k): int(v) for k, v in sorted(plan["split"].value_counts().items())},
              "shards": shards}
    atomic_write_json(out_dir / PLAN_DIR / "plan.json", record)  # last: its presence means the plan is whole
    log.info("render plan: %d ECGs, %d shards, %d task slice(s) in %s", len(plan), len(shards), num_tasks,
             out_dir / PLAN_DIR)
    return record


def read_plan(out_dir: Path, source: str, num_tasks: int) -> dict | None:
    """plan.json when it was made from this source for this many tasks, else None."""
    path = out_dir / PLAN_DIR / "plan.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("format") != PLAN_FORMAT or record.get("source") != source or record.get("num_tasks") != num_tasks:
        log.info("render plan in %s was made from other settings, corpus or task count: not used", path.parent)
        return None
    return record


def task_rows(out_dir: Path, task: int) -> pd.DataFrame:
    path = task_file(out_dir, task)
    if not path.is_file():  # a task without shards (more tasks than shards)
        return pd.DataFrame()
    return pd.read_parquet(path)
