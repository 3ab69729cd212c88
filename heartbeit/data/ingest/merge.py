"""Merging the part corpora of a Slurm array (`<out>.parts/task-*/`) into one corpus.

Parts are taken in task order, so the result keeps the global input order; a recording that an earlier task
already holds is moved to rejects (its shard is rewritten without it), and shards are renumbered. Each
part's `private/` (its rejects with source paths and its ecg_uid -> file map) is folded into the merged
corpus's `private/` and then removed from the part, so after a merge no file map remains outside `<out>/private/`."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from heartbeit.config import IngestConfig
from heartbeit.records import CORPUS_METADATA, CORPUS_REJECTS, CORPUS_SITE_CODES, CORPUS_SOURCES, CORPUS_SUMMARY

from heartbeit.data.corpus import SHARD_DIR, iter_shard, list_shards, npy_bytes, shard_name, write_shard
from heartbeit.data.ingest.stage import PARTS_SUFFIX
from heartbeit.data.lock import DirLock, lock_path
from heartbeit.data.ingest.publish import PRIVATE, _complete, _finish, _read_manifest
from heartbeit.data.reasons import Reason


def merge_parts(out: str | Path, cfg: IngestConfig, run_cfg=None, overwrite: bool = False) -> dict:
    out = Path(out)
    with DirLock(out, wait_s=cfg.lock_wait_s):
        return _merge_locked(out, cfg, run_cfg, overwrite)


def _merge_locked(out: Path, cfg: IngestConfig, run_cfg, overwrite: bool) -> dict:
    parts_root = out.with_name(out.name + PARTS_SUFFIX)
    parts = sorted(parts_root.glob("task-*"))
    if not parts:
        raise FileNotFoundError(f"no array parts under {parts_root}")
    running = [p.name for p in parts if lock_path(p).exists()]
    if running:
        raise RuntimeError(f"array parts still being written (lock files present): {', '.join(running)}")
    manifests = [_read_manifest(p) for p in parts]
    if any(m is None or "array" not in m for m in manifests):
        bad = [p.name for p, m in zip(parts, manifests) if m is None or "array" not in m]
        raise RuntimeError(f"array parts not finished: {', '.join(bad)}")
    count = manifests[0]["array"]["count"]
    listing = manifests[0]["array"]["listing"]
    tasks = sorted(m["array"]["task"] for m in manifests)
    if tasks != list(range(count)) or any(m["array"]["listing"] != listing for m in manifests):
        raise RuntimeError(f"array parts incomplete or from different inputs: have tasks {tasks} of {count}")
    fingerprint = hashlib.sha256(("merge\0" + "\0".join(m["fingerprint"] for m in manifests)).encode()).hexdigest()
    existing = _read_manifest(out) if out.exists() else None
    if existing is not None and existing.get("fingerprint") == fingerprint and _complete(out, existing):
        return {**json.loads((out / CORPUS_SUMMARY).read_text()), "up_to_date": True}
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    missing = [p.name for p in parts if not (p / PRIVATE / CORPUS_REJECTS).is_file()]
    if missing:
        raise RuntimeError(f"array parts lack their private ledger (already merged into another corpus?): "
                           f"{', '.join(missing)}; rerun those array tasks")

    tmp = out.with_name(f".{out.name}.merging")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / SHARD_DIR).mkdir(parents=True)
    rows: list[dict] = []
    rejects: list[dict] = []
    site_codes: dict[str, str] = {}
    seen: set[str] = set()
    next_index = 0
    n_inputs = 0
    accounting: dict = {"skipped": {}, "companions": 0, "labels_csv": {}}
    for part in parts:
        meta = pd.read_parquet(part / CORPUS_METADATA)
        rej = pd.read_parquet(part / PRIVATE / CORPUS_REJECTS)
        sources = pd.read_parquet(part / PRIVATE / CORPUS_SOURCES).set_index("ecg_uid")["source_path"].to_dict()
        site_codes.update(json.loads((part / PRIVATE / CORPUS_SITE_CODES).read_text()))
        summary = json.loads((part / CORPUS_SUMMARY).read_text())
        n_inputs += summary["n_inputs"]
        for k, v in summary.get("skipped", {}).items():
            accounting["skipped"][k] = accounting["skipped"].get(k, 0) + v
        accounting["companions"] += summary.get("n_companions", 0)
        for k, v in summary.get("labels_csv", {}).items():
            accounting["labels_csv"][k] = v if k == "rows" else accounting["labels_csv"].get(k, 0) + v
        rejects += rej.to_dict("records")
        part_rows = meta.to_dict("records")
        dup = {r["ecg_uid"] for r in part_rows if r["ecg_uid"] in seen}
        for r in part_rows:
            if r["ecg_uid"] in dup:
                src = sources.get(r["ecg_uid"], "")
                rejects.append({"reject_id": "d" + r["ecg_uid"][:11], "source_path": src,
                                "reason": Reason.DUPLICATE_RECORDING.value,
                                "detail": f"{src}: same waveform as an input of an earlier array task",
                                "format": r["format"]})
        renames: dict[str, str] = {}
        for shard in list_shards(part):
            new = shard_name(next_index)
            next_index += 1
            renames[shard.name] = new
            members = list(iter_shard(shard))
            if any(uid in dup for uid, _, _ in members):
                kept = [(uid, m, s) for uid, m, s in members if uid not in dup]
                if not kept:
                    next_index -= 1
                    renames[shard.name] = ""
                    continue
                write_shard(tmp / SHARD_DIR / new, [x for uid, m, s in kept for x in
                                                    ((f"{uid}.signal.npy", npy_bytes(s)),
                                                     (f"{uid}.json", json.dumps(m, sort_keys=True,
                                                                                separators=(",", ":")).encode()))])
            else:
                try:
                    os.link(shard, tmp / SHARD_DIR / new)  # parts and corpus share a file system
                except OSError:
                    shutil.copyfile(shard, tmp / SHARD_DIR / new)
        for r in part_rows:
            if r["ecg_uid"] in dup:
                continue
            seen.add(r["ecg_uid"])
            rows.append(dict(r, shard=renames[r["shard"]]))
    summary = _finish(tmp, out, rows, rejects, n_inputs, cfg, fingerprint, run_cfg, {"merged_from": len(parts)},
                      site_codes=site_codes, accounting=accounting)
    for part in parts:  # the file maps now live in <out>/private only
        shutil.rmtree(part / PRIVATE, ignore_errors=True)
    return summary
