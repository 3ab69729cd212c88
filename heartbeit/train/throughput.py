"""Images/s, MFU and peak memory of a multi-rank run, summed over ranks: what the distributed self-test
(heartbeit.train.dist_selftest) reports. MFU is computed by heartbeit.train.flops.mfu, as pretraining's log does."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from heartbeit.distributed.observe import peak_memory_bytes

from .flops import device_peak_flops, mfu


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
        utilisation, peak_source = None, None
        if self.flops_per_sample:
            peak, peak_source = device_peak_flops(engine.device, self.precision, self.peak_tflops)
            utilisation = mfu(total, self.flops_per_sample, peak, engine.world_size)
        return {
            "world_size": engine.world_size,
            "images_per_s": total,
            "images_per_s_per_rank": per_rank,
            "step_time_s": elapsed / self.steps if self.steps else None,
            "mfu": utilisation,
            "peak_flops_source": peak_source,
            "peak_memory_bytes_per_rank": [int(p) for p in peaks],
            "peak_memory_delta_bytes_per_rank": [int(d) for d in deltas],
            "memory_kind": "cuda_max_allocated" if engine.device.type == "cuda" else "host_peak_rss",
        }
