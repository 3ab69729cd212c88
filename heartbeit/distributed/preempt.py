"""Stop cleanly before Slurm's time limit or a preemption: checkpoint, then exit so the job can requeue.

Two ways a stop request arrives, because launchers differ in who gets signals:
- a signal (SIGUSR1 from `--signal=USR1@120` or `scancel --signal=USR1`, SIGTERM from a preemption)
  delivered to this process;
- a file, `$HEARTBEIT_STOP_FILE`, that slurm/pretrain.sh creates on the batch node when *its* shell gets
  the signal (`--signal=B:USR1@...`): the ranks on that node see it, and the all-reduce below tells the
  rest, so workers behind torchrun on every node stop together.

`should_stop(engine)` is a collective (a max all-reduce of one number) so every rank agrees on the same
step to stop at; call it once per optimizer step. A single-process job (a matrix cell) reads `local`.

A process that stopped with a checkpoint raises `Stopped` up to its command, which exits with
`STOPPED_EXIT` after `mark_checkpointed()`; the Slurm script sees the marker and requeues the job.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger("heartbeit.distributed")

STOP_FILE_ENV = "HEARTBEIT_STOP_FILE"
CHECKPOINTED_FILE_ENV = "HEARTBEIT_CHECKPOINTED_FILE"
STOPPED_EXIT = 75  # EX_TEMPFAIL: stopped early with a checkpoint; run the same command again to continue


class Stopped(Exception):
    """Raised out of a training loop that saved a checkpoint because a stop was requested."""


def stop_file_present() -> bool:
    """The batch shell asked every process of the job to stop (slurm/*.sh create $HEARTBEIT_STOP_FILE)."""
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and Path(path).exists()


class StopRequest:
    def __init__(self, signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM)):
        self._requested = False
        self.stop_file = Path(os.environ[STOP_FILE_ENV]) if os.environ.get(STOP_FILE_ENV) else None
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():  # elsewhere only the stop file counts
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            _INSTALLED.append(self)

    def close(self) -> None:
        """Put back the handlers this request replaced (a cell's request ends with the cell)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        if self in _INSTALLED:
            _INSTALLED.remove(self)

    def _handle(self, signum, _frame) -> None:
        self._requested = True
        log.warning("received %s: will checkpoint and stop after this step", signal.Signals(signum).name)

    @property
    def local(self) -> bool:
        return self._requested or (self.stop_file is not None and self.stop_file.exists())

    def should_stop(self, engine) -> bool:
        return engine.all_reduce_max(1.0 if self.local else 0.0) > 0


_INSTALLED: list[StopRequest] = []  # requests whose handlers are in place, oldest first


def release_all() -> None:
    """Put back every handler a stop request replaced, newest first: after a cell, however it ended (one that
    failed mid-training never reached its own close), so SIGTERM kills the process again between cells."""
    for request in reversed(list(_INSTALLED)):
        request.close()


def mark_checkpointed() -> None:
    """Tell slurm/pretrain.sh that the run stopped early with a checkpoint, so it requeues the job. Every
    rank marks it: the marker lives on the batch node's local disk, and which rank runs there is up to the
    rendezvous."""
    path = os.environ.get(CHECKPOINTED_FILE_ENV)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
