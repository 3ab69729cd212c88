"""Mid-cell checkpoints: a matrix cell outlives a Slurm time limit, a preemption or a crash.

A paper-scale cell (BEiT-B, 20 epochs over millions of ECGs) runs for most of a day, longer than many
clusters' `--time`. While a cell trains, `CellCheckpoint` saves into `cells/.resume/<cell_id>/` (config/
layout.py `cell_resume_dir`, outside the cell's temporary folder, which a rerun discards):

- every `matrix.checkpoint_minutes` of wall time (0 = never on a timer), and
- when a stop is requested (SIGUSR1/SIGTERM to the process, or `$HEARTBEIT_STOP_FILE`, which
  slurm/matrix.sh creates when Slurm signals the batch shell before the time limit): the cell saves at the
  end of the current optimizer step, marks the job "checkpointed" and raises `Stopped`, and the script
  requeues the job (heartbeit/distributed/preempt.py, shared with pretraining).

A checkpoint holds the model, optimizer and scheduler, every RNG (train/rng.py), the loader position (the
epoch and, through the loader's own exact-resume state, which samples of it were consumed, so skipped
samples are never decoded) and the training loop's own variables -- step, epoch, running loss, validation
curves and the selection state, saved *as whatever it is* (`encode`: tensors, numpy arrays and scalars,
tuples, lists, dicts, numbers, strings), so a change of the selection rule needs no change here. A resumed
cell therefore continues bit for bit: on the same device and thread count its predictions are
byte-identical to an uninterrupted run's (tests/integration/test_cell_checkpoint.py). The checkpoint names its cell id
(which hashes the whole fine-tuning config); one of another id is ignored. `matrix.run_cells` deletes the
folder once the cell is complete. Files load with `torch.load(weights_only=True)`.

The interval is not part of a cell's id: when a cell checkpoints does not change what it computes.
"""
from __future__ import annotations

import itertools
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from heartbeit.records import CELL_CHECKPOINT as CHECKPOINT, CELL_CHECKPOINT_PROGRESS as PROGRESS
from heartbeit.distributed.preempt import StopRequest, Stopped, mark_checkpointed
from heartbeit.train.rng import rng_state, set_rng_state
from heartbeit.utils.io import atomic_path, atomic_write_json

log = logging.getLogger("heartbeit.finetune")

FORMAT = 1


# ---- any selection state as plain containers and tensors (what weights_only=True reads back)

def encode(obj: Any) -> Any:
    if isinstance(obj, np.generic):  # first: np.float64 is also a float
        return {"__npscalar__": encode(np.asarray(obj))}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__ndarray_object__": [encode(x) for x in obj.tolist()], "shape": list(obj.shape)}
        raw = np.frombuffer(np.ascontiguousarray(obj).tobytes(), dtype=np.uint8).copy()
        return {"__ndarray__": torch.from_numpy(raw), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(x) for x in obj]}
    if isinstance(obj, list):
        return [encode(x) for x in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("cannot checkpoint a dict with non-string keys")
        return {k: encode(v) for k, v in obj.items()}
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} (extend heartbeit.train.cell_checkpoint.encode)")


def decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [decode(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "__ndarray__" in obj:
        raw = obj["__ndarray__"].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "__ndarray_object__" in obj:
        out = np.empty(len(obj["__ndarray_object__"]), dtype=object)
        out[:] = [decode(x) for x in obj["__ndarray_object__"]]
        return out.reshape(obj["shape"])
    if "__npscalar__" in obj:
        return decode(obj["__npscalar__"])[()]
    if "__tuple__" in obj:
        return tuple(decode(x) for x in obj["__tuple__"])
    return {k: decode(v) for k, v in obj.items()}


# ---- the loader position inside an epoch

class TrainBatches:
    """One epoch's training batches, counted; resumed at `position` (from an earlier `position()`). A source
    with the loader's exact-resume state (`state_dict`/`load_state_dict`, heartbeit.data.loading.loader) continues
    there without reading the consumed samples; any other iterable is advanced past them."""

    def __init__(self, source: Iterable, position: dict | None = None):
        self.source, self.count = source, 0
        self._resume = position

    def __iter__(self) -> Iterator:
        skip = 0
        if self._resume is not None:
            self.count = int(self._resume["batches"])
            if self._resume.get("loader") is not None and hasattr(self.source, "load_state_dict"):
                self.source.load_state_dict(self._resume["loader"])
            else:
                skip = self.count
            self._resume = None
        for batch in itertools.islice(iter(self.source), skip, None):
            self.count += 1
            yield batch

    def position(self, epoch: int) -> dict:
        loader = self.source.state_dict() if hasattr(self.source, "state_dict") else None
        return {"epoch": epoch, "batches": self.count, "loader": loader}


# ---- the checkpoint of one cell

class CellCheckpoint:
    """`folder` None: no checkpoints and no signal handling (direct calls, tests of other things)."""

    def __init__(self, folder: str | Path | None, cell_id: str, interval_minutes: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder) if folder is not None else None
        self.cell_id = cell_id
        self.interval_s = max(0.0, float(interval_minutes)) * 60.0
        self.clock = clock
        self.last_save = clock()
        self.stop = StopRequest() if self.folder is not None else None
        self._position: dict | None = None
        self.saves = 0

    @property
    def file(self) -> Path | None:
        return self.folder / CHECKPOINT if self.folder is not None else None

    def restore(self, model: torch.nn.Module, optimizer, scheduler) -> dict | None:
        """Load a checkpoint of this cell into model/optimizer/scheduler and every RNG; returns the loop's
        variables as saved, or None (no checkpoint, or one of another cell id: ignored). Call it right
        before the training loop, after everything that draws random numbers while setting up."""
        if self.file is None or not self.file.is_file():
            return None
        try:
            state = torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over rather than fail the cell forever
            log.warning("cell %s: unreadable mid-cell checkpoint (%s: %s); starting from step 0", self.cell_id,
                        type(exc).__name__, str(exc)[:200])
            return None
        if state.get("format") != FORMAT or state.get("cell_id") != self.cell_id:
            log.warning("cell %s: the mid-cell checkpoint is another cell's or format's; starting from step 0",
                        self.cell_id)
            return None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self._position = state["position"]
        loop = decode(state["loop"])
        log.info("cell %s: resumed at step %d (epoch %d, batch %d of it)", self.cell_id, loop["step"],
                 self._position["epoch"], self._position["batches"])
        return loop

    def batches(self, source: Iterable, epoch: int) -> TrainBatches:
        """Wrap an epoch's batches; the resumed epoch continues at the saved position."""
        position = self._position if self._position is not None and self._position["epoch"] == epoch else None
        self._position = None
        return TrainBatches(source, position)

    def after_step(self, batches: TrainBatches, epoch: int, loop: Callable[[], dict], model, optimizer,
                   scheduler) -> None:
        """Once per optimizer step: save when the interval has passed or a stop was requested; after a
        requested stop, mark the job checkpointed and raise `Stopped`."""
        if self.folder is None:
            return
        stop = self.stop.local
        if not stop and not (self.interval_s and self.clock() - self.last_save >= self.interval_s):
            return
        variables = loop()
        self.save(batches.position(epoch), variables, model, optimizer, scheduler)
        if stop:
            mark_checkpointed()
            self.close()
            raise Stopped(f"cell {self.cell_id}: stopped at step {variables['step']} with a checkpoint")

    def save(self, position: dict, loop: dict, model, optimizer, scheduler) -> None:
        t0 = time.perf_counter()
        state = {"format": FORMAT, "cell_id": self.cell_id, "model": encode(model.state_dict()),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                 "position": position, "loop": encode(loop)}
        with atomic_path(self.file) as tmp:
            torch.save(state, tmp)
        atomic_write_json(self.folder / PROGRESS, {"step": loop["step"], "saved": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.saves += 1
        self.last_save = self.clock()
        log.info("cell %s: checkpoint at step %d written in %.2f s", self.cell_id, loop["step"],
                 time.perf_counter() - t0)

    def close(self) -> None:
        if self.stop is not None:
            self.stop.close()


def discard(folder: str | Path) -> None:
    """A completed cell's mid-cell checkpoints are of no further use."""
    shutil.rmtree(folder, ignore_errors=True)
