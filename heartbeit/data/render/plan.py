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

The planning itself lives here too (splits to shards, each shard's job and digest, where the signals sit,
the layout record), below the render stage that executes the plan (heartbeit.data.render.stage).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.config.tasks import all_tasks
from heartbeit.records import (CORPUS_METADATA, IMAGES_LAYOUT, IMAGES_MANIFEST, RENDER_PLAN,
                               RENDER_PLAN_DIR as PLAN_DIR, RENDER_TASK_PATTERN)
from heartbeit.utils.io import atomic_write_bytes, atomic_write_json, sha256_file

from heartbeit.data.corpus import SIGNAL_EXT, list_shards, read_metadata
from heartbeit.data.render.draw import layout_boxes
from heartbeit.data.shard_format import shard_relpath
from heartbeit.data.splits import build_manifest, fraction_column, keyed_uniform

log = logging.getLogger("heartbeit.render")

PLAN_FORMAT = 1
RENDERED_SPLITS = ("train", "val", "test", "external")
# settings that change the bytes of an image shard (the plan digest covers them)
RENDER_FIELDS = ("image_size", "layout", "mm_per_mv", "grid", "bandpass_hz", "filter_order", "median_windows_s",
                 "baseline_fs", "resample_hz", "duration_s", "line_width", "encoding", "png_level", "wave_hz")


def index_corpus(corpus_dir: str | Path) -> pd.DataFrame:
    """Byte location of every sample's signal member: ecg_uid, corpus_tar, offset, size (headers only)."""
    rows = []
    for path in list_shards(corpus_dir):
        with tarfile.open(path, "r") as tar:
            for member in tar:
                uid, _, ext = member.name.partition(".")
                if member.isfile() and ext == SIGNAL_EXT:
                    rows.append((uid, str(path), member.offset_data, member.size))
    return pd.DataFrame(rows, columns=["ecg_uid", "corpus_tar", "offset", "size"])


def settings_dict(cfg) -> dict:
    return {k: getattr(cfg, k) for k in RENDER_FIELDS}


def plan_shards(manifest: pd.DataFrame, shard_size: int, seed: int) -> pd.DataFrame:
    """Add `key` and `shard` (relative tar path; "" for excluded ECGs) to a manifest."""
    out = manifest.copy()
    bad = out["ecg_uid"].astype(str).str.contains(r"[^A-Za-z0-9_\-]", regex=True)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} ecg_uid values are not usable as WebDataset keys "
                         "(only letters, digits, '_' and '-' are allowed)")
    out["key"] = out["ecg_uid"].astype(str)
    out["shard"] = ""
    for split in RENDERED_SPLITS:
        idx = out.index[out["split"] == split]
        if len(idx) == 0:
            continue
        order = np.argsort(keyed_uniform(out.loc[idx, "key"].tolist(), seed, "shard-order"), kind="stable")
        ordered = idx[order]
        shard_no = np.arange(len(ordered)) // shard_size
        out.loc[ordered, "shard"] = [shard_relpath(split, int(i)) for i in shard_no]
    return out


def _text_or_none(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return str(value)


def sample_metadata(row: dict, fractions, tasks, cfg) -> dict:
    labels = {t: (None if row[t] is None or (isinstance(row[t], float) and math.isnan(row[t])) else int(row[t]))
              for t in tasks}
    # per task: the training fractions (of that task's labelled pool) this ECG belongs to
    member_of = {t: [float(f) for f in fractions if bool(row.get(fraction_column(f, t), False))] for t in tasks}
    return {
        "ecg_uid": row["ecg_uid"], "patient_hash": row["patient_hash"], "site": row["site"],
        "split": row["split"], "labels": labels, "fractions": member_of,
        "sex": _text_or_none(row.get("sex")), "age_band": _text_or_none(row.get("age_band")),
        "layout": cfg.layout, "image_size": [cfg.image_size, cfg.image_size],
        "fs": float(row["fs"]) if "fs" in row and row["fs"] is not None else None,
        "render_fs": float(cfg.resample_hz) if cfg.resample_hz else (float(row["fs"]) if "fs" in row else None),
        "encoding": cfg.encoding,
    }


@dataclass
class ShardJob:
    split: str
    relpath: str
    digest: str
    samples: list[dict]  # sample metadata, in key order
    locations: list[tuple[str, int, int]]  # (corpus tar, offset, size) per sample


def build_jobs(plan: pd.DataFrame, locations: pd.DataFrame | None, cfg, tasks=None,
               keep_samples: bool = True) -> list[ShardJob]:
    """Every planned shard as a job, in (split, name) order. `locations` None: `plan` already holds the
    signal locations (rows of a render plan's task slice). `keep_samples=False` keeps only each job's digest
    (planning a large corpus: the per-sample dicts are ~1 KB per ECG). `tasks` None: every task of the render
    config."""
    tasks = all_tasks(cfg) if tasks is None else tasks
    rendered = plan[plan["shard"] != ""]
    if locations is not None:
        rendered = rendered.merge(locations, on="ecg_uid", how="left")
    missing = rendered["corpus_tar"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} ECGs listed in metadata.parquet have no signal in the corpus shards")
    settings = settings_dict(cfg)
    jobs = []
    for relpath, group in rendered.groupby("shard", sort=True):
        group = group.sort_values("key")
        samples = [sample_metadata(r, cfg.fractions, tasks, cfg) for r in group.to_dict("records")]
        digest = hashlib.sha256(json.dumps({"settings": settings, "samples": samples}, sort_keys=True,
                                           default=str).encode()).hexdigest()
        if not keep_samples:
            jobs.append(ShardJob(str(group["split"].iloc[0]), relpath, digest, [], []))
            continue
        jobs.append(ShardJob(str(group["split"].iloc[0]), relpath, digest, samples,
                             list(zip(group["corpus_tar"], group["offset"].astype(int), group["size"].astype(int)))))
    order = {s: i for i, s in enumerate(RENDERED_SPLITS)}
    jobs.sort(key=lambda j: (order[j.split], j.relpath))
    return jobs


def layout_record(cfg) -> dict:
    boxes = layout_boxes(cfg.layout, cfg.image_size, cfg.duration_s, cfg.mm_per_mv)
    return {
        "layout": cfg.layout, "image_size": [cfg.image_size, cfg.image_size], "duration_s": cfg.duration_s,
        "mm_per_mv": cfg.mm_per_mv, "px_per_s": boxes[0].px_per_s, "px_per_mv": boxes[0].px_per_mv,
        "grid": cfg.grid, "boxes": [b.to_dict() for b in boxes],
        "note": "box pixels are half-open [x0, x1) x [y0, y1); column x shows t in [x, x+1)/px_per_s; "
                "value v mV is drawn at row baseline_y - v * px_per_mv; traces are clipped to their box",
    }


def task_file(out_dir: Path, task: int) -> Path:
    return out_dir / PLAN_DIR / RENDER_TASK_PATTERN.format(task)


def source_digest(corpus_dir: Path, cfg) -> str:
    """What a plan depends on: the render settings (not `workers`: it never changes the output), the corpus
    metadata's bytes and the corpus tars' names and sizes (their contents are addressed by offset)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"}
    tars = [(Path(p).name, Path(p).stat().st_size) for p in list_shards(corpus_dir)]
    blob = json.dumps({"format": PLAN_FORMAT, "settings": settings, "tars": tars,
                       "metadata": sha256_file(corpus_dir / CORPUS_METADATA)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_plan(corpus_dir: Path, out_dir: Path, cfg, num_tasks: int, source: str | None = None) -> dict:
    """Plan the whole stage once; write manifest.parquet, layout.json and plan/. Returns plan.json's dict.
    Identical bytes from any process, so concurrent writers are harmless."""
    source = source or source_digest(corpus_dir, cfg)
    plan = plan_shards(build_manifest(read_metadata(corpus_dir), cfg), cfg.shard_size, cfg.shard_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / IMAGES_MANIFEST, _parquet_bytes(plan))
    atomic_write_json(out_dir / IMAGES_LAYOUT, layout_record(cfg))
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
    atomic_write_json(out_dir / PLAN_DIR / RENDER_PLAN, record)  # last: its presence means the plan is whole
    log.info("render plan: %d ECGs, %d shards, %d task slice(s) in %s", len(plan), len(shards), num_tasks,
             out_dir / PLAN_DIR)
    return record


def read_plan(out_dir: Path, source: str, num_tasks: int) -> dict | None:
    """plan.json when it was made from this source for this many tasks, else None."""
    path = out_dir / PLAN_DIR / RENDER_PLAN
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
