"""What a multi-rank run tells its operator: one log file per rank, progress on rank 0 only, and peak memory
per rank (host RSS peak on CPU, CUDA allocator peak on GPU). Images/s and MFU over ranks: heartbeit.train.throughput."""
from __future__ import annotations

import logging
import resource
import sys
from pathlib import Path

import torch


def setup_rank_logging(log_dir: str | Path | None, rank: int, level: str = "INFO") -> logging.Logger:
    """Every rank logs to `<log_dir>/rank<r>.log`; only rank 0 also writes INFO to the console (others
    print warnings and errors), so a 64-rank job's console stays readable while nothing is lost."""
    root = logging.getLogger("heartbeit")
    root.setLevel(level)
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for h in list(root.handlers):
        if getattr(h, "_heartbeit_rank", False):
            root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(fmt)
    console._heartbeit_rank = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(log_dir) / f"rank{rank}.log")
        fh.setFormatter(fmt)
        fh._heartbeit_rank = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    root.propagate = False
    return root


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is the process's peak resident set in KiB on Linux: a true peak, unlike a sampled RSS.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
