"""`ImageLoader`: a torch DataLoader over one `ImageStream` (heartbeit.data.loading.loader), with epochs, equal steps
across ranks and exact resume.

Persistent workers. A loader is made once and iterated epoch after epoch (a matrix cell: its training, its
BatchNorm recalibration and its validation rounds; pretraining: every epoch). Its worker processes start at
the first iteration and stay (`persistent_workers`), so an epoch, a recalibration or a validation round no
longer pays for fresh processes (and their imports) before the first batch. A worker holds its own copy of
the stream, made when it started; what changes between iterations -- the epoch, the resume position (samples
to skip per logical worker) and the worker rotation -- is published to the workers through one small
shared-memory tensor (`ImageStream.control`) just before each iteration starts, and each worker reads it when
torch's DataLoader restarts the worker's iterator (the `_ResumeIteration` handshake: batches of an abandoned
iteration still in flight are dropped before the new one starts). `persistent=False` keeps the old behaviour
(fresh workers per iteration): the default for a loader read once (evaluation), and the benchmark's
baseline (bench/cell_loader.py).

The epoch plan. How many samples each (rank, worker) slot holds in an epoch -- behind equal steps across ranks
and the resume rotation -- comes from the stream's `SplitSelection`: the filter is resolved against the
manifest once, and each epoch only permutes the shards (seed, epoch) and sums (heartbeit.data.loading.dealing). The
plan of the current epoch is kept.

Resume: `state_dict()` records, per logical worker, how many samples the trainer has received, and which
worker served the last batch. Loading it makes each worker skip exactly those samples of its
(deterministic) stream and rotates the workers so torch's round-robin continues with the worker that was
next: with the same world size and worker count the remaining batches are exactly those an uninterrupted run
would have produced, in the same order.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from heartbeit.data.loading.batch_arrays import as_tensors, identity_collate
from heartbeit.data.loading.dealing import batches_per_worker


class ImageLoader:
    """A torch DataLoader over an ImageStream, with epochs, equal steps across ranks and exact resume."""

    def __init__(self, dataset, num_workers: int = 0, equalize: bool = False, pin_memory: bool = False,
                 multiprocessing_context: str | None = None, persistent: bool = False):
        self.dataset = dataset
        self.multiprocessing_context = multiprocessing_context if num_workers > 0 else None
        self.num_workers = int(num_workers)
        self.equalize = equalize
        self.pin_memory = pin_memory  # as asked; batches are pinned only where CUDA exists (`_pins`)
        self._pins = pin_memory and torch.cuda.is_available()
        self.persistent = persistent and self.num_workers > 0
        if self.persistent:  # [epoch, rotation, samples to skip per logical worker], read by the workers
            dataset.control = torch.zeros(2 + self.num_workers, dtype=torch.int64).share_memory_()
        self._dataloader = None  # made on the first iteration; kept while persistent
        self._active: object | None = None  # the iteration being read
        self._plan_of: tuple[int, np.ndarray] | None = None  # (epoch, its plan)
        self._state = self._fresh_state()

    @property
    def started(self) -> bool:
        """Whether worker processes may be running (the stream they hold can no longer be changed)."""
        return self._dataloader is not None

    def _fresh_state(self) -> dict:
        return {"epoch": self.dataset.epoch, "consumed": [0] * max(1, self.num_workers), "last_worker": -1,
                "batches": 0}

    def _plan(self) -> np.ndarray:
        d = self.dataset
        if self._plan_of is None or self._plan_of[0] != d.epoch:
            self._plan_of = (d.epoch, d.selection.plan(d.world_size, self.num_workers, d.epoch, d.seed, d.shuffle))
        return self._plan_of[1]

    def __len__(self) -> int:
        d = self.dataset
        plan = self._plan()
        if self.equalize:
            return int(min(batches_per_worker(row, d.batch_size, d.drop_last).sum() for row in plan))
        return int(batches_per_worker(plan[d.rank], d.batch_size, d.drop_last).sum())

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning at the next iteration."""
        self.dataset.set_epoch(epoch)
        self._state = self._fresh_state()

    def state_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._state.items()}

    def load_state_dict(self, state: dict) -> None:
        """Continue an epoch exactly where `state` (from state_dict) left it."""
        workers = max(1, self.num_workers)
        if len(state["consumed"]) != workers:
            raise ValueError(f"resume state has {len(state['consumed'])} workers, loader has {workers}")
        self.dataset.set_epoch(state["epoch"])
        self._state = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
        self.dataset.skip = dict(enumerate(self._state["consumed"]))
        d = self.dataset
        totals = batches_per_worker(self._plan()[d.rank], d.batch_size, d.drop_last)
        done = [-(-c // d.batch_size) for c in self._state["consumed"]]
        nxt = 0
        for step in range(1, workers + 1):  # the worker after the last served one that still has batches
            candidate = (self._state["last_worker"] + step) % workers
            if done[candidate] < totals[candidate]:
                nxt = candidate
                break
        self.dataset.rotation = nxt

    def _batches(self) -> Iterator[dict]:
        if self.num_workers == 0:  # the trainer's own process: no DataLoader machinery (~1 us per image)
            return iter(self.dataset)
        if self.persistent:
            self.dataset.publish()  # this iteration's epoch and position, for the workers' copies
        if self._dataloader is None or not self.persistent:
            self._dataloader = torch.utils.data.DataLoader(
                self.dataset, batch_size=None, num_workers=self.num_workers, collate_fn=identity_collate,
                pin_memory=self._pins, persistent_workers=self.persistent,
                multiprocessing_context=self.multiprocessing_context,
                # a DataLoader iterator draws a base seed; from the global RNG that draw would shift the
                # trainer's random stream (drop path) on every resume. Our streams are seeded explicitly.
                generator=torch.Generator().manual_seed(0))
        return iter(self._dataloader)

    def __iter__(self) -> Iterator[dict]:
        # One iteration at a time: a new one restarts the workers' streams (and the position), so an earlier
        # iteration still being read would silently continue with the new one's batches.
        token = self._active = object()
        limit = len(self) if self.equalize else None
        for batch in self._batches():
            if self._active is not token:
                raise RuntimeError("this loader was iterated again while an earlier iteration was still being "
                                   "read (use a replica of its stream for a second reader)")
            if limit is not None and self._state["batches"] >= limit:
                break
            batch = as_tensors(batch, pin=self._pins)
            self._state["consumed"][batch["worker"]] += batch["count"]
            self._state["last_worker"] = batch["worker"]
            self._state["batches"] += 1
            yield batch

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is garbage-collected)."""
        iterator = getattr(self._dataloader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._dataloader = None
