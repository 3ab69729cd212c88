"""The loader's batch arrays: allocated once per batch (in shared memory inside a DataLoader worker), decoded
into by several threads at once (`BatchDecode`), handed to the trainer as tensors without a copy."""
from __future__ import annotations

import itertools
from concurrent.futures import wait

import numpy as np
import torch


def batch_array(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A fresh batch tensor; inside a DataLoader worker it is allocated in shared memory up front, so the
    trip to the main process moves a handle instead of copying the pixels into shared memory."""
    out = torch.empty(shape, dtype=dtype)
    return out.share_memory_() if torch.utils.data.get_worker_info() is not None else out


def identity_collate(batch: dict) -> dict:
    return batch


def as_tensors(batch: dict, pin: bool = False) -> dict:
    """The batch with its numpy arrays as tensors (no copy), every tensor pinned when `pin` (a no-op for
    one the DataLoader's pin-memory thread already pinned)."""
    def convert(v):
        t = torch.from_numpy(v) if isinstance(v, np.ndarray) else v
        return t.pin_memory() if pin and isinstance(t, torch.Tensor) else t

    return {k: convert(v) for k, v in batch.items()}


class BatchDecode:
    """decode(i) for i in range(n), shared out by one counter: pool threads (one task per thread per batch; a
    future per image costs more) and, in `finish`, the thread that hands the batch out take the next index
    until none is left (next() on itertools.count is atomic under the GIL), so quick images balance slow ones."""

    def __init__(self, decode, n: int):
        self.decode, self.n = decode, n
        self.indices = itertools.count()
        self.futures: list = []

    def drain(self) -> None:
        """Decode the next index until none is left (all of them, when no pool thread takes part)."""
        for i in self.indices:
            if i >= self.n:
                return
            self.decode(i)

    def start(self, pool, threads: int) -> None:
        self.futures = [pool.submit(self.drain) for _ in range(min(self.n, threads))]

    def finish(self) -> None:
        """Decode what is left in this thread, wait for the pool's share, re-raise a decode error."""
        try:
            self.drain()
        finally:
            wait(self.futures)  # even after an error: no thread may still write into the batch when it is dropped
        for future in self.futures:
            future.result()

    def cancel(self) -> None:
        self.n = 0  # threads stop at their next index
        wait(self.futures)
