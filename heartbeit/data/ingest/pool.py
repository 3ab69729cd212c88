"""Ordered parallel map that survives a worker being killed.

`multiprocessing.Pool.imap` waits forever for the results of a worker the OOM killer (or a reader bug that
segfaults) took down. Here chunks go to a `ProcessPoolExecutor`, which notices a dead worker and fails the
pending futures (`BrokenProcessPool`). The chunks that were in flight are then redone one file at a time in
a fresh single-worker pool: the files that complete give their normal results, and a file that kills its
worker again gets `on_death(item)` (ingest turns it into a `worker_died` reject). Then the normal pool
restarts for the rest. Results come back in input order whatever happens, so the output never depends on the
number of workers or on which worker died."""
from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

_FN = None


def _init(fn, initializer, initargs) -> None:
    global _FN
    _FN = fn
    if initializer is not None:
        initializer(*initargs)


def _run_chunk(items: list) -> list:
    return [_FN(item) for item in items]


def _context():
    """fork (cheap, shares the read-only context), except where torch is loaded: forking its thread pools can
    deadlock (the same rule as heartbeit.data.synth.corpus)."""
    if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def ordered_map(fn: Callable, items: list, workers: int, chunk_size: int, on_death: Callable,
                initializer=None, initargs=()) -> Iterator:
    """Yield fn(item) for every item, in order. workers <= 1 runs in this process (nothing to survive)."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield fn(item)
        return
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]

    def new_pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(n, mp_context=_context(), initializer=_init, initargs=(fn, initializer, initargs))

    pool = new_pool(workers)
    pending: deque = deque()
    next_chunk = 0
    try:
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < 2 * workers:
                pending.append((chunks[next_chunk], pool.submit(_run_chunk, chunks[next_chunk])))
                next_chunk += 1
            chunk, fut = pending.popleft()
            try:
                results = fut.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                retry = [(chunk, None)] + list(pending)
                pending.clear()
                for c, f in retry:
                    if f is not None and f.done() and not f.cancelled() and f.exception() is None:
                        yield from f.result()  # finished before the pool broke
                    else:
                        yield from _one_by_one(c, new_pool, on_death)
                pool = new_pool(workers)
                continue
            yield from results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _one_by_one(chunk: Iterable, new_pool, on_death) -> Iterator:
    solo = new_pool(1)
    try:
        for item in chunk:
            try:
                yield solo.submit(_run_chunk, [item]).result()[0]
            except BrokenProcessPool:
                solo.shutdown(wait=True)
                solo = new_pool(1)
                yield on_death(item)
    finally:
        solo.shutdown(wait=True)
