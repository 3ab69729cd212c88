"""The render stage (`heartbeit render`): corpus -> (filter, render, encode) -> WebDataset image shards per split.

Output layout (IMAGES/):
  <split>/<split>-NNNNNN.tar   per sample `<key>.png` (or `.npy`, uint8 [H, W]) and `<key>.json`; the
                               tokenizer stage may add `<key>.tokens.npy` later
  <split>/<split>-NNNNNN.wave.tar  unless wave_hz is 0: the same samples' `<key>.json` and `<key>.wave.npy`
                               (the filtered waveform the image shows, int16 uV [12, wave_hz * duration_s])
                               for signal-domain models. A sibling tar, not more members of the image tar:
                               a waveform is ~5x a PNG's bytes, and image training should not read them
  <split>/<split>-NNNNNN.json  sidecar written after its tar: count, sha256, bytes, plan digest
  <split>/<split>-NNNNNN.idx.json (and .wave.idx.json)  the member-offset index: each sample's byte range,
                               so a reader can take any subset of a shard (heartbeit.data.members)
  manifest.parquet             every ECG: split, fraction membership, labels, shard, key
  layout.json                  the render geometry: every lead box (pixel box, time window, scales)
  index.json                   per split: shards with counts and sha256 (written once all are done)
  config.resolved.yaml

Samples are assigned to shards in the order of a keyed hash of their ECG id (spreads sites and patients
over shards, which helps streaming shuffles), `shard_size` per shard. Each shard is one unit of work: it
is rendered from byte offsets into the corpus tars, so any subset can run anywhere (process pool, Slurm
array task), and a rerun skips a shard whose sidecar matches the plan digest (the shard's keys, their
metadata and every render setting) and whose bytes still hash to the recorded sha256.

Tar bytes are deterministic: members sorted by name, mtime 0, uid/gid 0, no owner names, mode 0644,
USTAR (the corpus writer's conventions, `heartbeit.data.corpus.write_shard`).
Member names and the bytes of an image or waveform member: heartbeit.data.shard_format.
"""
from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from heartbeit.config.tasks import all_tasks
from heartbeit.records import (CORPUS_METADATA, IMAGE_SHARD_GLOB, IMAGES_INDEX, IMAGES_LAYOUT, IMAGES_MANIFEST,
                               SHARD_SIDECAR_SUFFIX, WAVE_SHARD_SUFFIX)
from heartbeit.utils.io import atomic_write_bytes, atomic_write_json, sha256_file

from heartbeit.data.corpus import read_metadata, write_shard
from heartbeit.data.members import index_is_current, index_path, write_member_index
from heartbeit.data.render.draw import render_batch, render_kwargs
from heartbeit.data.render.plan import (RENDERED_SPLITS, ShardJob, build_jobs, index_corpus, layout_record, plan_shards,
                          read_plan, source_digest, task_rows, write_plan)
from heartbeit.data.shard_format import WAVE_EXT, encode_image, encode_wave, image_ext, wave_for_storage, wave_relpath
from heartbeit.data.signal import preprocess
from heartbeit.data.splits import build_manifest

log = logging.getLogger("heartbeit.render")


def draw_batch(signals_mV: np.ndarray, fs: float, cfg, fs_out: float, draw: dict,
               wave_hz: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The render chain for a batch of equal rate and length [B, 12, n] mV: filter (`preprocess` with the
    render config `cfg`, to `fs_out`) -> draw (`render_batch` with `draw`, e.g. `render_kwargs(cfg)`) -> the
    waveform as stored for signal models (int16 uV; None when `wave_hz` is 0). The one chain of the render
    stage and of the report's synthetic ECGs (heartbeit.eval.territory), so both draw alike."""
    filtered = preprocess(signals_mV, fs, cfg, fs_out=fs_out)
    images = render_batch(filtered, fs_out, **draw)
    waves = wave_for_storage(filtered, fs_out, wave_hz, draw["duration_s"]) if wave_hz else None
    return images, waves


def layout_draw_kwargs(layout: dict, cfg) -> dict:
    """`render_batch` arguments that draw like a finished render: its geometry from its layout.json (the
    `layout_record`; the render config may have changed since), the line width (not recorded) from `cfg`."""
    return dict(size=tuple(layout["image_size"]), layout=layout["layout"], grid=bool(layout.get("grid", False)),
                mm_per_mv=float(layout.get("mm_per_mv", 10.0)),
                duration_s=float(layout.get("duration_s", cfg.duration_s)), line_width=cfg.line_width or None)


# ---------------------------------------------------------------------------------------------- corpus


def read_signal(fh, offset: int, size: int, where: str) -> np.ndarray:
    fh.seek(offset)
    data = fh.read(size)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{where}: unreadable signal member: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != 12 or arr.dtype != np.int16:
        raise ValueError(f"{where}: signal must be int16 [12, n], got {arr.dtype} {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------------- plan


# ---------------------------------------------------------------------------------------------- render


def sidecar_path(tar_path: Path) -> Path:
    return tar_path.with_suffix(SHARD_SIDECAR_SUFFIX)


def shard_is_done(out_dir: Path, job: ShardJob, verify: bool = True) -> bool:
    tar_path = out_dir / job.relpath
    side = sidecar_path(tar_path)
    if not (tar_path.is_file() and side.is_file()):
        return False
    try:
        info = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("digest") != job.digest or info.get("bytes") != tar_path.stat().st_size:
        return False
    wave_path = out_dir / wave_relpath(job.relpath)
    if "wave_sha256" in info and not (wave_path.is_file() and wave_path.stat().st_size == info.get("wave_bytes")):
        return False
    if not verify:
        return True
    return sha256_file(tar_path) == info.get("sha256") and (
        "wave_sha256" not in info or sha256_file(wave_path) == info["wave_sha256"])


def render_shard(job: ShardJob, out_dir: str | Path, cfg) -> dict:
    """Read, filter, render and encode one shard's samples; write the tar, then its sidecar."""
    out_dir = Path(out_dir)
    signals: list[np.ndarray] = []
    handles: dict[str, object] = {}
    try:
        for meta, (tar, offset, size) in zip(job.samples, job.locations):
            fh = handles.get(tar) or handles.setdefault(tar, open(tar, "rb"))
            signals.append(read_signal(fh, offset, size, f"{Path(tar).name}: sample {meta['ecg_uid']}"))
    finally:
        for fh in handles.values():
            fh.close()
    ext = image_ext(cfg.encoding)
    kwargs = render_kwargs(cfg)
    images: list[np.ndarray | None] = [None] * len(signals)
    waves: list[np.ndarray | None] = [None] * len(signals)
    # batch samples of equal rate and length through filter + render (vectorised over the batch)
    groups: dict[tuple, list[int]] = {}
    for i, (meta, sig) in enumerate(zip(job.samples, signals)):
        groups.setdefault((meta["fs"], sig.shape[1]), []).append(i)
    for (fs, _), idx in groups.items():
        if fs is None:
            raise ValueError(f"{job.relpath}: corpus metadata lacks the sampling rate 'fs'")
        for start in range(0, len(idx), 64):
            part = idx[start:start + 64]
            batch = np.stack([signals[i] for i in part]).astype(np.float32) / 1000.0  # uV -> mV
            drawn, stored = draw_batch(batch, fs, cfg, float(cfg.resample_hz or fs), kwargs, cfg.wave_hz)
            for i, img in zip(part, drawn):
                images[i] = img
            if stored is not None:
                for i, wave in zip(part, stored):
                    waves[i] = wave
    members, wave_members = [], []
    for meta, img, wave in zip(job.samples, images, waves):
        key = meta["ecg_uid"]
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        members.append((f"{key}.{ext}", encode_image(img, cfg.encoding, cfg.png_level)))
        members.append((f"{key}.json", meta_bytes))
        if wave is not None:
            wave_members += [(f"{key}.json", meta_bytes), (f"{key}.{WAVE_EXT}", encode_wave(wave))]
    tar_path = out_dir / job.relpath
    info = {"name": job.relpath, "split": job.split, "count": len(job.samples)}
    if wave_members:  # the sibling first: a sidecar is written only once both tars are complete
        wave_path = out_dir / wave_relpath(job.relpath)
        write_shard(wave_path, wave_members)
        write_member_index(wave_path)
        info.update(wave_sha256=sha256_file(wave_path), wave_bytes=wave_path.stat().st_size)
    write_shard(tar_path, members)
    write_member_index(tar_path)
    info.update(sha256=sha256_file(tar_path), bytes=tar_path.stat().st_size, digest=job.digest)
    atomic_write_json(sidecar_path(tar_path), info)
    return info


def _render_shard_star(args):
    return render_shard(*args)


# ------------------------------------------------------------------------------------------- pipeline


def write_index(out_dir: Path, jobs: list[ShardJob], cfg) -> dict | None:
    """index.json from the sidecars, once every planned shard is complete (else None)."""
    splits: dict[str, dict] = {}
    for job in jobs:
        side = sidecar_path(out_dir / job.relpath)
        if not side.is_file():
            return None
        info = json.loads(side.read_text())
        if info.get("digest") != job.digest:
            return None
        entry = splits.setdefault(job.split, {"count": 0, "shards": []})
        entry["count"] += info["count"]
        entry["shards"].append({k: info[k] for k in ("name", "count", "sha256", "bytes", "wave_sha256", "wave_bytes")
                                if k in info})
    index = {"encoding": cfg.encoding, "image_ext": image_ext(cfg.encoding), "image_size": cfg.image_size,
             "wave_hz": int(cfg.wave_hz), "wave_samples": int(round(cfg.wave_hz * cfg.duration_s)),
             "layout": cfg.layout, "splits": splits, "fractions": list(cfg.fractions), "tasks": list(all_tasks(cfg))}
    atomic_write_json(out_dir / IMAGES_INDEX, index)
    return index


def remove_stale(out_dir: Path, jobs: list[ShardJob], wave_hz: int = 0) -> int:
    """Delete shard files that the current plan no longer contains (e.g. after shard_size changed, or
    waveform siblings after wave_hz became 0)."""
    planned = {job.relpath for job in jobs}
    if wave_hz:
        planned |= {wave_relpath(job.relpath) for job in jobs}
    removed = 0
    for split in RENDERED_SPLITS:
        for tar_path in sorted((out_dir / split).glob(IMAGE_SHARD_GLOB.format(split=split))):
            if f"{split}/{tar_path.name}" not in planned:
                tar_path.unlink()
                index_path(tar_path).unlink(missing_ok=True)
                if not tar_path.name.endswith(WAVE_SHARD_SUFFIX):
                    sidecar_path(tar_path).unlink(missing_ok=True)
                removed += 1
    return removed


def render_corpus(corpus_dir: str | Path, out_dir: str | Path, cfg, workers: int = 1, task_index: int = 0,
                  num_tasks: int = 1, progress: bool = True, verify: bool = True, plan_only: bool = False) -> dict:
    """The whole stage (or, with num_tasks > 1, this task's slice of shards: global shard i goes to task
    i % num_tasks, planned once: heartbeit.data.render.plan). `plan_only` writes the plan and renders
    nothing. Returns a summary dict."""
    from tqdm import tqdm

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not (corpus_dir / CORPUS_METADATA).is_file():
        raise FileNotFoundError(f"{corpus_dir / CORPUS_METADATA} (run `heartbeit ingest` first)")
    if not 0 <= task_index < num_tasks:
        raise ValueError(f"task index {task_index} outside 0..{num_tasks - 1}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if num_tasks == 1 and not plan_only:
        plan = plan_shards(build_manifest(read_metadata(corpus_dir), cfg), cfg.shard_size, cfg.shard_seed)
        jobs = build_jobs(plan, index_corpus(corpus_dir), cfg)
        buf = io.BytesIO()
        plan.to_parquet(buf, index=False)
        atomic_write_bytes(out_dir / IMAGES_MANIFEST, buf.getvalue())
        atomic_write_json(out_dir / IMAGES_LAYOUT, layout_record(cfg))
        removed = remove_stale(out_dir, jobs, cfg.wave_hz)
        if removed:
            log.info("removed %d shard(s) no longer in the plan", removed)
        mine = jobs
        n_ecgs, splits = int(len(plan)), plan["split"].value_counts().to_dict()
    else:
        source = source_digest(corpus_dir, cfg)
        record = read_plan(out_dir, source, num_tasks)
        if record is None:
            if not plan_only:
                log.warning("no current render plan for %d tasks in %s: this task plans the whole stage (run "
                            "`heartbeit render --plan-only --num-tasks %d` once before the array to spare every "
                            "task this)", num_tasks, out_dir, num_tasks)
            record = write_plan(corpus_dir, out_dir, cfg, num_tasks, source)
        n_ecgs, splits = record["ecgs"], record["splits"]
        jobs = [ShardJob(s["split"], s["relpath"], s["digest"], [], []) for s in record["shards"]]
        if plan_only:
            return {"ecgs": n_ecgs, "splits": splits, "shards": len(jobs), "rendered_now": 0,
                    "index_written": False, "planned": True}
        rows = task_rows(out_dir, task_index)
        mine = build_jobs(rows, None, cfg) if len(rows) else []
        planned = {s["relpath"]: s["digest"] for s in record["shards"] if s["task"] == task_index}
        if {j.relpath: j.digest for j in mine} != planned:  # the slice and plan.json disagree: a damaged plan
            raise ValueError(f"{out_dir / 'plan'}: task {task_index}'s slice does not match plan.json; delete the "
                             "plan folder and run `heartbeit render --plan-only` again")
    todo = [job for job in mine if not shard_is_done(out_dir, job, verify)]
    pending = {job.relpath for job in todo}
    indexed = 0
    for job in mine:  # complete shards from before the member index existed (or retokenized ones) get it now
        if job.relpath in pending:
            continue
        tars = [out_dir / job.relpath] + ([out_dir / wave_relpath(job.relpath)] if cfg.wave_hz else [])
        for tar in tars:
            if not index_is_current(tar):
                write_member_index(tar)
                indexed += 1
    if indexed:
        log.info("wrote the member index of %d complete shard file(s)", indexed)
    log.info("render: %d ECGs planned, %d shards; this task: %d shards, %d to do (%d already complete)",
             n_ecgs, len(jobs), len(mine), len(todo), len(mine) - len(todo))
    bar = tqdm(total=len(todo), desc="render shards", unit="shard", disable=not progress)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            for _ in pool.map(_render_shard_star, [(job, out_dir, cfg) for job in todo]):
                bar.update(1)
    else:
        for job in todo:
            render_shard(job, out_dir, cfg)
            bar.update(1)
    bar.close()
    index = write_index(out_dir, jobs, cfg)
    return {"ecgs": n_ecgs, "splits": {k: int(v) for k, v in sorted(splits.items())},
            "shards": len(jobs), "rendered_now": len(todo), "index_written": index is not None}
