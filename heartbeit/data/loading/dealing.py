"""Which samples each (rank, worker) slot of the loader reads in an epoch, and how many, without reading a tar.

Shard order per epoch (`epoch_shards`), the node-then-worker split of whole shards (`assigned`) or, when
slots outnumber shards, of samples (`slot_reads`), the fraction/task/subset filter resolved against
manifest.parquet (`filtered_manifest`, `wanted_keys`), and the per-slot counts behind equal training
steps across ranks (`SplitSelection.plan`: the filter resolved once, shards permuted per epoch). Used by
heartbeit.data.loading.loader and heartbeit.data.loading.epoch_loader.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.records import IMAGES_INDEX

from heartbeit.data import members


def read_index(images_dir: str | Path) -> dict:
    path = Path(images_dir) / IMAGES_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path} (incomplete render output: run `heartbeit render` to completion)")
    return json.loads(path.read_text())


def shard_names(index: dict, split: str) -> list[str]:
    if split not in index["splits"]:
        raise ValueError(f"split {split!r} not in this image set (have: {sorted(index['splits'])})")
    return sorted(s["name"] for s in index["splits"][split]["shards"])


def epoch_shards(names: list[str], seed: int, epoch: int, shuffle: bool) -> list[str]:
    if not shuffle:
        return list(names)
    order = np.random.default_rng([int(seed), int(epoch), 0x5A]).permutation(len(names))
    return [names[i] for i in order]


def assigned(names: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The node split then the worker split (islice semantics of wds.split_by_node/split_by_worker)."""
    return names[rank::world_size][worker::num_workers]


def deals_samples(n_shards: int, world_size: int, num_workers: int) -> bool:
    """Fewer shards than loader slots (ranks x workers): shards are shared out sample by sample."""
    return n_shards < world_size * max(1, num_workers)


def slot_reads(names: list[str], totals: dict[str, int], rank: int, world_size: int, worker: int,
               num_workers: int) -> list[tuple[str, np.ndarray | None]]:
    """What one (rank, worker) slot reads this epoch: (shard, sample numbers or None = the whole shard).
    With at least as many shards as slots, whole shards (`assigned`). With fewer, every slot reads from
    every shard: stream position q (over the epoch's shards in order, `totals` samples each, samples in tar
    order) goes to rank q % world_size, then worker (q // world_size) % num_workers -- the node-then-worker
    split applied to samples, so each sample is read exactly once across slots."""
    workers = max(1, num_workers)
    if not deals_samples(len(names), world_size, workers):
        return [(u, None) for u in assigned(names, rank, world_size, worker, workers)]
    out, base = [], 0
    for u in names:
        q = np.arange(base, base + int(totals[u]))
        mine = np.flatnonzero((q % world_size == rank) & ((q // world_size) % workers == worker))
        base += int(totals[u])
        if len(mine):
            out.append((u, mine))
    return out


def shard_totals(index: dict, split: str) -> dict[str, int]:
    return {s["name"]: int(s["count"]) for s in index["splits"][split]["shards"]}


def filtered_manifest(images_dir: str | Path, split: str, fraction: float | None = None, task: str | None = None,
                      subset: frozenset | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the split's manifest rows, those the fraction/subset/task filter keeps), from manifest.parquet."""
    from heartbeit.data.splits import fraction_column

    man = members.read_manifest(images_dir)
    man = man[man["split"] == split]
    keep = pd.Series(True, index=man.index)
    if fraction is not None:
        if task is None:
            raise ValueError("training fractions are per task: pass the task with the fraction")
        col = fraction_column(fraction, task)
        if col not in man:
            raise ValueError(f"fraction {fraction} is not one of this image set's fractions")
        keep &= man[col].astype(bool)
    if subset is not None:
        keep &= man["ecg_uid"].astype(str).isin(list(subset))
    if task is not None:
        keep &= man[task].notna()
    return man, man[keep]


def _wanted(man: pd.DataFrame, kept: pd.DataFrame) -> dict[str, list[str]]:
    totals = man.groupby("shard").size()
    kept_by_shard = kept.groupby("shard")["key"].agg(list)
    out = {name: [] for name in totals.index if name not in kept_by_shard.index}
    out.update({name: keys for name, keys in kept_by_shard.items() if 2 * len(keys) <= totals[name]})
    return out


def wanted_keys(images_dir: str | Path, split: str, fraction: float | None = None, task: str | None = None,
                subset: frozenset | None = None) -> dict[str, list[str]]:
    """Shard -> keys the filter keeps, for the shards of the split where it keeps at most half: those are
    read by byte range. A shard it keeps mostly is read whole and filtered as it streams (a range read
    would save little, and the key lists travel to every loader worker)."""
    if fraction is None and task is None and subset is None:
        return {}
    return _wanted(*filtered_manifest(images_dir, split, fraction, task, subset))


class SplitSelection:
    """What a loader's filter (fraction / task / explicit subset) keeps of one split, resolved against
    manifest.parquet ONCE: the shards to read by byte range (`wanted`, what the stream needs) and the kept
    samples per shard, from which `plan` gives any epoch's samples per [rank, worker]. An epoch only permutes
    the shards by (seed, epoch) and sums their counts -- O(shards); where loader slots outnumber shards
    (samples dealt one by one), O(kept samples) over positions looked up once. Re-filtering the manifest every
    epoch on every rank costs ~20 s at 8.5 M rows, which this avoids. Main-process only: a loader worker
    receives `wanted` (the stream drops the selection when it is pickled)."""

    def __init__(self, images_dir: str | Path, split: str, fraction: float | None = None,
                 task: str | None = None, subset: frozenset | None = None):
        self.images_dir, self.split = Path(images_dir), split
        index = read_index(images_dir)
        self.names = shard_names(index, split)
        self.totals = shard_totals(index, split)
        man, kept = filtered_manifest(images_dir, split, fraction, task, subset)
        self.wanted = {} if fraction is None and task is None and subset is None else _wanted(man, kept)
        counts = kept.groupby("shard").size().to_dict()
        self.counts = {name: int(counts.get(name, 0)) for name in self.names}
        self._kept = kept[[c for c in ("shard", "key") if c in kept]]  # keys: only where samples are dealt
        self._positions: dict[str, np.ndarray] | None = None

    def positions(self) -> dict[str, np.ndarray]:
        """Shard -> the kept samples' numbers in tar order (member indexes; read once, when first dealt)."""
        if self._positions is None:
            out = {}
            for name, keys in self._kept.groupby("shard")["key"].agg(list).items():
                tar = self.images_dir / name
                member_index = members.load_member_index(tar)
                if member_index is None:
                    raise ValueError(f"{tar}: no current member index; loader slots outnumber the "
                                     f"{len(self.names)} {self.split} shards, which are then shared sample by "
                                     "sample through it. Run `heartbeit render` again: it adds the index to "
                                     "complete shards without re-rendering them")
                out[name] = np.array([member_index["position"][k] for k in keys], dtype=np.int64)
            self._positions = out
        return self._positions

    def plan(self, world_size: int, num_workers: int, epoch: int = 0, seed: int = 0,
             shuffle: bool = True) -> np.ndarray:
        """Samples per [rank, worker] in this epoch (the dealing of `slot_reads`; no tar is read)."""
        names = epoch_shards(self.names, seed, epoch, shuffle)
        workers = max(1, num_workers)
        if not deals_samples(len(names), world_size, workers):
            return np.array([[sum(self.counts[n] for n in assigned(names, r, world_size, w, workers))
                              for w in range(workers)] for r in range(world_size)], dtype=np.int64)
        positions = self.positions()
        plan = np.zeros((world_size, workers), dtype=np.int64)
        base = 0
        for name in names:
            if name in positions:
                q = base + positions[name]
                np.add.at(plan, (q % world_size, (q // world_size) % workers), 1)
            base += self.totals[name]
        return plan


def epoch_plan(images_dir: str | Path, split: str, world_size: int, num_workers: int, epoch: int = 0,
               seed: int = 0, shuffle: bool = True, fraction: float | None = None,
               task: str | None = None, subset: frozenset | None = None) -> np.ndarray:
    """Samples per [rank, worker] in one epoch (a loader keeps its `SplitSelection` and asks it per epoch)."""
    return SplitSelection(images_dir, split, fraction, task, subset).plan(world_size, num_workers, epoch, seed,
                                                                         shuffle)


def batches_per_worker(plan_row: np.ndarray, batch_size: int, drop_last: bool) -> np.ndarray:
    return plan_row // batch_size if drop_last else -(-plan_row // batch_size)


def steps_per_epoch(images_dir: str | Path, split: str, world_size: int, num_workers: int, batch_size: int,
                    drop_last: bool = True, **kw) -> int:
    """Batches every rank can deliver this epoch (the minimum over ranks)."""
    plan = epoch_plan(images_dir, split, world_size, num_workers, **kw)
    return int(min(batches_per_worker(row, batch_size, drop_last).sum() for row in plan))
