"""What a multi-rank run tells its operator: one log file per rank, progress on rank 0 only, images/s and
MFU summed over ranks, and peak memory per rank (host RSS peak on CPU, CUDA allocator peak on GPU)."""
from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass, field
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


@dataclass
class Throughput:
    """Counts this rank's samples between `start()` and `summary()`; summary() is a collective."""

    flops_per_sample: float | None = None  # training FLOPs per image (2 x MACs x 3), for MFU
    precision: str = "fp32"
    peak_tflops: float = 0.0  # 0 = heartbeit.train.flops' GPU table or CPU estimate
    samples: int = 0
    steps: int = 0
    _t0: float = field(default=0.0, repr=False)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self.samples = 0
        self.steps = 0

    def add(self, samples: int, steps: int = 0) -> None:
        self.samples += samples
        self.steps += steps

    def summary(self, engine, baseline_bytes: int = 0) -> dict:
        """`baseline_bytes`: this rank's memory before the model existed (interpreter, libraries), so the
        delta shows what the model, gradients and optimizer states (ZeRO's business) cost."""
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        per_rank = engine.all_gather_floats(self.samples / elapsed)
        peak_bytes = peak_memory_bytes(engine.device)
        peaks = engine.all_gather_floats(float(peak_bytes))
        deltas = engine.all_gather_floats(float(peak_bytes - baseline_bytes))
        total = sum(per_rank)
        mfu, peak_source = None, None
        if self.flops_per_sample:
            from heartbeit.train.flops import device_peak_flops

            peak, peak_source = device_peak_flops(engine.device, self.precision, self.peak_tflops)
            mfu = total * self.flops_per_sample / (peak * engine.world_size) if peak else None
        return {
            "world_size": engine.world_size,
            "images_per_s": total,
            "images_per_s_per_rank": per_rank,
            "step_time_s": elapsed / self.steps if self.steps else None,
            "mfu": mfu,
            "peak_flops_source": peak_source,
            "peak_memory_bytes_per_rank": [int(p) for p in peaks],
            "peak_memory_delta_bytes_per_rank": [int(d) for d in deltas],
            "memory_kind": "cuda_max_allocated" if engine.device.type == "cuda" else "host_peak_rss",
        }
