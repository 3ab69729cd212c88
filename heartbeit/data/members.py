"""Byte ranges of the samples in an image shard (the member-offset index), and reads of just those bytes.

`heartbeit render` writes shards with members sorted by name, so each sample's members (`<key>.png`,
`<key>.json`, ... : every name sharing the prefix `<key>.`) form one contiguous run of tar records. The index
of a shard `<split>/<split>-NNNNNN.tar` is `<split>/<split>-NNNNNN.idx.json` (a waveform sibling
`...wave.tar` gets `...wave.idx.json`):

    {"format": 1, "tar_bytes": N, "keys": [k0, k1, ...], "start": [...], "end": [...]}

sample i occupies bytes [start[i], end[i]) of the tar (its first header to the end of its last member's
padded data), keys in tar order. The index lets a reader take any subset of a shard's samples with one read
per run of consecutive samples: a 1 % training cell reads ~1 % of the split's bytes, and more loader slots
(ranks x workers) than shards can share a shard sample by sample (heartbeit.data.loading.loader).

The render stage writes the index after each tar (and adds a missing or stale one to shards it finds
complete); `heartbeit tokenizer encode`, which rewrites tars, writes it again. An index whose `tar_bytes`
differs from the tar's size is stale and is not used; every sample read through an index is checked
against the key the index names for it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from heartbeit.records import IMAGES_MANIFEST, MEMBER_INDEX_SUFFIX, SHARD_SUFFIX
from heartbeit.utils.io import atomic_write_text

TAR_BLOCK = 512
INDEX_FORMAT = 1


def _octal(field: bytes, path: str, pos: int) -> int:
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise ValueError(f"{path}: bad tar header at byte {pos}") from None


def _tar_field(header: bytes, start: int, end: int) -> str:
    return header[start:end].split(b"\0", 1)[0].decode("utf-8")


def parse_samples(buf: bytes, path: str, base: int = 0) -> Iterator[dict]:
    """Samples in a run of ustar records (a whole shard, or the bytes of some of its samples starting at
    byte `base`) as webdataset groups them: {"__key__", "__url__", ext: bytes} for consecutive members
    sharing the key (the name up to the first dot of its basename). Every header's checksum is verified in
    one numpy sum (the per-member Python work is what a loader process spends besides decoding); member
    types other than regular files and directories are refused with the file named, as `heartbeit render`
    never writes them."""
    total = len(buf)
    members: list[tuple[int, int]] = []  # (header offset, member size)
    pos = 0
    while pos + TAR_BLOCK <= total:
        if buf[pos] == 0 and buf.count(0, pos, pos + TAR_BLOCK) == TAR_BLOCK:  # end-of-archive marker
            break
        size = _octal(buf[pos + 124:pos + 136], path, base + pos)
        members.append((pos, size))
        pos += TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK
    else:
        if pos < total:
            raise ValueError(f"{path}: truncated tar header")
    if not members:
        return
    blocks = np.frombuffer(buf, np.uint8, count=total // TAR_BLOCK * TAR_BLOCK).reshape(-1, TAR_BLOCK)
    heads = blocks[np.array([m[0] for m in members], dtype=np.int64) // TAR_BLOCK]
    # the checksum counts its own eight bytes as spaces
    sums = (heads.sum(axis=1, dtype=np.int64) - heads[:, 148:156].sum(axis=1, dtype=np.int64) + 8 * 32).tolist()
    current: dict | None = None
    for (pos, size), computed in zip(members, sums):
        if _octal(buf[pos + 148:pos + 156], path, base + pos) != computed:
            raise ValueError(f"{path}: bad tar header checksum at byte {base + pos}")
        name = _tar_field(buf, pos, pos + 100)
        if buf[pos + 345] != 0 and buf[pos + 257:pos + 262] == b"ustar":
            name = _tar_field(buf, pos + 345, pos + 500) + "/" + name
        start = pos + TAR_BLOCK
        if start + size > total:
            raise ValueError(f"{path}: member {name} is truncated")
        kind = buf[pos + 156:pos + 157]
        if kind not in (b"0", b"\0"):
            if kind == b"5":  # a directory
                continue
            raise ValueError(f"{path}: member {name} has tar type {kind!r}; image shards hold regular files "
                             "only (ustar, as `heartbeit render` writes them)")
        slash = name.rfind("/")
        dot = name.find(".", slash + 1)
        if dot < 0:
            continue
        key = name[:dot]
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": path}
        current[name[dot + 1:]] = buf[start:start + size]
    if current is not None:
        yield current


def read_tar_samples(path: str | Path) -> Iterator[dict]:
    """Every sample of a ustar shard, the shard read in one call (see `parse_samples`)."""
    path = str(path)
    with open(path, "rb") as f:
        buf = f.read()
    yield from parse_samples(buf, path)


# ------------------------------------------------------------------------------------------------ index


def index_path(tar_path: str | Path) -> Path:
    tar_path = Path(tar_path)
    if not tar_path.name.endswith(SHARD_SUFFIX):
        raise ValueError(f"not a tar name: {tar_path.name!r}")
    return tar_path.with_name(tar_path.name[:-len(SHARD_SUFFIX)] + MEMBER_INDEX_SUFFIX)


def build_member_index(tar_path: str | Path) -> dict:
    """The index of a shard from its headers alone (one 512-byte read per member)."""
    tar_path = Path(tar_path)
    keys: list[str] = []
    start: list[int] = []
    end: list[int] = []
    size_total = tar_path.stat().st_size
    with open(tar_path, "rb") as f:
        pos = 0
        while pos + TAR_BLOCK <= size_total:
            f.seek(pos)
            head = f.read(TAR_BLOCK)
            if head.count(0) == TAR_BLOCK:
                break
            size = _octal(head[124:136], str(tar_path), pos)
            name = _tar_field(head, 0, 100)
            nxt = pos + TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK
            if head[156:157] in (b"0", b"\0"):
                base = name.rsplit("/", 1)[-1]
                key = name[:len(name) - len(base)] + base.split(".", 1)[0]
                if "." in base:
                    if keys and keys[-1] == key:
                        end[-1] = nxt
                    else:
                        keys.append(key)
                        start.append(pos)
                        end.append(nxt)
            pos = nxt
    if len(set(keys)) != len(keys):
        raise ValueError(f"{tar_path}: a sample's members are not contiguous (not written by `heartbeit render`)")
    return {"format": INDEX_FORMAT, "tar_bytes": size_total, "keys": keys, "start": start, "end": end}


def write_member_index(tar_path: str | Path) -> dict:
    index = build_member_index(tar_path)
    # compact: ~30 bytes per sample, so a million-sample split's indexes stay small
    atomic_write_text(index_path(tar_path), json.dumps(index, separators=(",", ":")) + "\n")
    return index


def index_is_current(tar_path: str | Path) -> bool:
    path = index_path(tar_path)
    if not path.is_file():
        return False
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return index.get("format") == INDEX_FORMAT and index.get("tar_bytes") == Path(tar_path).stat().st_size


@lru_cache(maxsize=4096)
def _load_index(path: str, tar_size: int, mtime_ns: int) -> dict | None:
    try:
        index = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if index.get("format") != INDEX_FORMAT or index.get("tar_bytes") != tar_size:
        return None
    index["position"] = {k: i for i, k in enumerate(index["keys"])}
    return index


def load_member_index(tar_path: str | Path) -> dict | None:
    """The shard's current index (with "position": key -> sample number added), or None when it has none
    or a stale one (its tar changed size since). Cached per process."""
    path = index_path(tar_path)
    try:
        st = path.stat()
        tar_size = Path(tar_path).stat().st_size
    except OSError:
        return None
    return _load_index(str(path), tar_size, st.st_mtime_ns)


def read_indexed_samples(tar_path: str | Path, index: dict, positions: list[int]) -> Iterator[dict]:
    """The samples at `positions` (ascending sample numbers of the index), in that order; consecutive
    samples are read in one call. Each sample is checked against the key the index names."""
    path = str(tar_path)
    with open(path, "rb") as f:
        i = 0
        while i < len(positions):
            j = i + 1
            while j < len(positions) and positions[j] == positions[j - 1] + 1:
                j += 1
            lo, hi = index["start"][positions[i]], index["end"][positions[j - 1]]
            f.seek(lo)
            buf = f.read(hi - lo)
            got = list(parse_samples(buf, path, lo))
            want = [index["keys"][p] for p in positions[i:j]]
            if [s["__key__"] for s in got] != want:
                raise ValueError(f"{path}: its member index does not match the tar (run `heartbeit render` "
                                 "again: it rewrites the index of every complete shard)")
            yield from got
            i = j


def read_samples(tar_path: str | Path, keys: Iterable[str] | None = None) -> Iterator[dict]:
    """The samples of a shard in tar order: all of them, or those whose key is in `keys` (through the shard's
    member index when it has a current one, so only their bytes are read). The shard reader of the
    tokenizer's encoding and of the report; the loader plans its reads with the same two functions."""
    if keys is None:
        yield from read_tar_samples(tar_path)
        return
    wanted = set(keys)
    index = load_member_index(tar_path)
    if index is not None:
        positions = sorted(index["position"][k] for k in wanted if k in index["position"])
        yield from read_indexed_samples(tar_path, index, positions)
        return
    yield from (sample for sample in read_tar_samples(tar_path) if sample["__key__"] in wanted)


# --------------------------------------------------------------------------------------------- manifest


@lru_cache(maxsize=4)
def _manifest(path: str, size: int, mtime_ns: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_manifest(images_dir: str | Path) -> pd.DataFrame:
    """IMAGES/manifest.parquet, read once per process while the file is unchanged (the loader's plans, the
    stream's subset selection and a cell's set-up all use it). Treat it as read-only."""
    path = Path(images_dir) / IMAGES_MANIFEST
    st = path.stat()
    return _manifest(str(path), st.st_size, st.st_mtime_ns)
