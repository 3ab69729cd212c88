"""The corpus on disk, and the reader API other stages use.

Layout (written by `heartbeit ingest`):
  shards/corpus-000000.tar ...  WebDataset tars; per sample `<ecg_uid>.signal.npy` (np.save of int16
                                [12, n] at corpus_fs, 1 uV per LSB) and `<ecg_uid>.json` (the sample's
                                metadata.parquet row without the `shard` column, NaN written as null)
  metadata.parquet              one row per ECG, sorted by (shard, ecg_uid) = iteration order
  summary.json, manifest.json, config.resolved.yaml
  private/                      mode 0700, the only files that name inputs: rejects.parquet (reject_id,
                                source_path, reason, detail, format), site_codes.json, sources.parquet

Tars are byte-deterministic: members sorted by name, mtime 0, uid/gid 0, empty owner names, mode 0644,
USTAR format; each tar is written to a temporary name and renamed into place."""
from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from heartbeit.records import (CORPUS_METADATA, CORPUS_PRIVATE, CORPUS_REJECTS, CORPUS_SHARD_DIR as SHARD_DIR,
                               CORPUS_SHARD_GLOB, CORPUS_SHARD_PATTERN as SHARD_PATTERN)
from heartbeit.utils.io import atomic_path

SIGNAL_EXT = "signal.npy"
META_EXT = "json"
UV_PER_LSB = 1.0


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating,)):
        return _json_safe(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def sample_json(row: dict) -> bytes:
    """The per-sample JSON member: the metadata row minus `shard` (a location, not a property)."""
    clean = {k: _json_safe(v) for k, v in row.items() if k != "shard"}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def npy_bytes(signal: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(signal, dtype=np.int16), allow_pickle=False)
    return buf.getvalue()


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_shard(path: str | Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """Write a deterministic tar of (member name, bytes) atomically; members are sorted by name."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in sorted(members, key=lambda m: m[0]):
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return path


class ShardWriter:
    """Collects samples and writes `shards/corpus-NNNNNN.tar` files of `shard_size` samples each.

    `add` returns the finished shard's name when a shard was written, so the caller can record progress
    (the ingest ledger) exactly at shard boundaries."""

    def __init__(self, out_dir: str | Path, shard_size: int, start_index: int = 0):
        self.dir = Path(out_dir) / SHARD_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.index = start_index
        self.pending: list[tuple[dict, np.ndarray]] = []

    @property
    def current_name(self) -> str:
        return shard_name(self.index)

    def add(self, row: dict, signal: np.ndarray) -> tuple[str, list[dict]] | None:
        row = dict(row, shard=self.current_name)
        self.pending.append((row, signal))
        if len(self.pending) >= self.shard_size:
            return self.flush()
        return None

    def flush(self) -> tuple[str, list[dict]] | None:
        """Write pending samples (if any); returns (shard name, their rows sorted by ecg_uid)."""
        if not self.pending:
            return None
        name = self.current_name
        members = []
        for row, signal in self.pending:
            members.append((f"{row['ecg_uid']}.{SIGNAL_EXT}", npy_bytes(signal)))
            members.append((f"{row['ecg_uid']}.{META_EXT}", sample_json(row)))
        write_shard(self.dir / name, members)
        rows = sorted((row for row, _ in self.pending), key=lambda r: r["ecg_uid"])
        self.pending = []
        self.index += 1
        return name, rows


def list_shards(corpus_dir: str | Path) -> list[Path]:
    return sorted((Path(corpus_dir) / SHARD_DIR).glob(CORPUS_SHARD_GLOB))


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict, np.ndarray]]:
    """(ecg_uid, json metadata, int16 [12, n]) for each sample of one shard, in member order."""
    with tarfile.open(path, "r") as tar:
        pending: dict[str, dict] = {}
        for member in tar:
            if not member.isfile():
                continue
            uid, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()
            entry = pending.setdefault(uid, {})
            if ext == META_EXT:
                entry["meta"] = json.loads(data)
            elif ext == SIGNAL_EXT:
                entry["signal"] = np.load(io.BytesIO(data), allow_pickle=False)
            if "meta" in entry and "signal" in entry:
                yield uid, entry["meta"], entry["signal"]
                del pending[uid]
        if pending:
            raise ValueError(f"{Path(path).name}: incomplete samples {sorted(pending)[:3]}")


def read_metadata(corpus_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(corpus_dir) / CORPUS_METADATA)


def read_rejects(corpus_dir: str | Path) -> pd.DataFrame:
    """The private rejects ledger (names input files: read it, never copy it out of private/)."""
    return pd.read_parquet(Path(corpus_dir) / CORPUS_PRIVATE / CORPUS_REJECTS)


def iter_corpus(corpus_dir: str | Path) -> Iterator[tuple[dict, np.ndarray]]:
    """(metadata row as dict, float32 [12, n] millivolts) for every ECG, shards in name order, samples in
    member order (= metadata.parquet order)."""
    meta = read_metadata(corpus_dir)
    rows = {r["ecg_uid"]: r for r in meta.to_dict("records")}
    for shard in list_shards(corpus_dir):
        for uid, _, signal in iter_shard(shard):
            row = rows.get(uid)
            if row is None:
                continue  # not in the manifest (superseded); the manifest is authoritative
            yield row, signal.astype(np.float32) * np.float32(UV_PER_LSB / 1000.0)
