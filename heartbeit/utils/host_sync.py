"""Counting the host syncs our own code makes: every call that makes the host wait for the GPU.

On a GPU, kernels are queued and the host runs ahead; a call that needs a device value on the host (`.item()`,
`.cpu()`, `.tolist()`, `.numpy()`, `float(t)` / `int(t)` / `bool(t)`), a data-dependent shape (`nonzero`,
`masked_select`, indexing or assigning with a boolean mask) or a blocking copy (`.to(device)` without
`non_blocking=True`) stops it until the queue is drained. With a 14-23 ms step, every such wait adds the
host's next work to the step.

`HostSyncProbe` patches those entry points for the duration of a `with` block and counts the calls made
from the **main thread** by code under `roots` (this package by default; library internals such as
torch's optimizers calling `.item()` on host-side step counters are not ours and not counted). A CPU run
cannot tell a host tensor from a device tensor, so every such call from our code counts: the training
step keeps its values on the device and reads them only at `log_every`. `on_sync` runs at each counted
call (bench/host_overhead.py makes its modelled GPU wait there).

    with HostSyncProbe() as probe:
        step(...)
    assert probe.total == 0, probe.sites
"""
from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import torch

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_THIS = str(Path(__file__).resolve())

# Tensor methods that read a device value on the host
_READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


def _is_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _moves_blocking(args: tuple, kwargs: dict) -> bool:
    """Does `.to(...)` name a device (or another tensor's) without non_blocking=True? dtype-only is free."""
    if kwargs.get("non_blocking") or (len(args) >= 3 and isinstance(args[2], bool) and args[2]):
        return False
    if "device" in kwargs or "other" in kwargs:
        return True
    return any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args[:1])


class HostSyncProbe:
    def __init__(self, roots: Iterable[str | Path] = (PACKAGE_DIR,), on_sync: Callable[[str], None] | None = None):
        self.roots = tuple(str(Path(r).resolve()) for r in roots)
        self.on_sync = on_sync
        self.counts: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()  # "file:line kind" of each counted call
        self._saved: list[tuple[object, str, object]] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()
        self.sites.clear()

    def _ours(self, depth: int = 2):
        """The calling frame when the call comes from our code on the main thread, else None."""
        if threading.current_thread() is not threading.main_thread():
            return None
        frame = sys._getframe(depth)
        name = frame.f_code.co_filename
        if name == _THIS or not name.startswith(self.roots):
            return None
        return frame

    def _hit(self, kind: str) -> None:
        frame = self._ours(3)
        if frame is None:
            return
        self.counts[kind] += 1
        self.sites[f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {kind}"] += 1
        if self.on_sync is not None:
            self.on_sync(kind)

    def _patch(self, owner, name: str, wrapper) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    def __enter__(self) -> "HostSyncProbe":
        T, probe = torch.Tensor, self
        for name in _READS:
            original = getattr(T, name)

            def read(self_t, *a, _orig=original, _kind=name.strip("_"), **kw):
                probe._hit(_kind)
                return _orig(self_t, *a, **kw)

            self._patch(T, name, read)
        get, put, to, nonzero = T.__getitem__, T.__setitem__, T.to, T.nonzero

        def getitem(self_t, index):
            if _is_bool_index(index):
                probe._hit("bool_index")
            return get(self_t, index)

        def setitem(self_t, index, value):
            if _is_bool_index(index):
                probe._hit("bool_index")
            return put(self_t, index, value)

        def move(self_t, *args, **kwargs):
            if _moves_blocking(args, kwargs):
                probe._hit("blocking_to")
            return to(self_t, *args, **kwargs)

        def tensor_nonzero(self_t, *args, **kwargs):
            probe._hit("nonzero")
            return nonzero(self_t, *args, **kwargs)

        self._patch(T, "__getitem__", getitem)
        self._patch(T, "__setitem__", setitem)
        self._patch(T, "to", move)
        self._patch(T, "nonzero", tensor_nonzero)
        for fn in ("nonzero", "masked_select", "argwhere"):
            original = getattr(torch, fn)

            def free(*a, _orig=original, _kind=fn, **kw):
                probe._hit(_kind)
                return _orig(*a, **kw)

            self._patch(torch, fn, free)
        return self

    def __exit__(self, *exc) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)
