"""One logging set-up for every stage: console + optional file, rank-aware."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


class _FileHandler(logging.FileHandler):
    """A log file that fails quietly: on a full or read-only disk every log line would otherwise print a
    traceback; the console handler still shows the line, and the command reports the disk error once."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def get_logger(name: str = "heartbeit") -> logging.Logger:
    return logging.getLogger(name)


def setup_logging(level: str = "INFO", log_file: str | Path | None = None) -> logging.Logger:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank not in (None, "0") else ""
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger("heartbeit")
    root.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_heartbeit", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        h._heartbeit = True  # type: ignore[attr-defined]
        root.addHandler(h)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = _FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    return root
