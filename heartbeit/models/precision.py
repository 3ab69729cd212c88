"""Precision and memory format of a matrix cell: a fixed row per device type in the family table
(heartbeit/models/families.py, `Family.numerics`; these notes say where the rows come from).

`matrix.precision: auto` reads this table; `bf16` or `fp32` forces one precision for every architecture
(memory format still from the table). The effective precision is part of a cell's id (heartbeit.matrix),
so a cell trained in bf16 is never mistaken for its fp32 twin.

CPU rows: `heartbeit bench --quick` (bench/train_step.py, one thread, 64 px, batch 16, the ci profile's models;
results/bench/train_step.json, 2-core AMD EPYC, 2026-12-01), speed of one training step against eager fp32:
  heartbeit_micro bf16 1.50x; vit_micro bf16 1.48x;
  efficientnet_b0 bf16 0.74x, bf16 + channels-last 0.75x, fp32 + channels-last 1.22x  -> fp32, channels-last;
  resnet18 bf16 1.25x, bf16 + channels-last 1.39x, fp32 + channels-last 1.03x        -> bf16, channels-last;
  signal_xresnet1d_tiny (12 x 2,500 samples, batch 64, same machine, 2026-12-05): bf16 1.41x -> bf16.
On this CPU bf16 autocast makes depthwise-convolution networks (EfficientNet) slower, so they train in fp32.
CUDA rows: bf16 autocast everywhere (tensor cores), channels-last for CNNs (cuDNN's NHWC kernels); not yet
measured on a GPU here, the standard setting on A100/H100. CNN cells on CUDA also let cuDNN
time its convolution algorithms once per input shape (`cudnn.benchmark`; a cell's images all have one size,
so the search is paid once): the fastest algorithm can differ between runs, so GPU runs are reproducible
within a tolerance, not bit-identical (docs/gpu-performance.md). A CPU run never changes it.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

from heartbeit.models.families import Numerics, numerics_of

PRECISIONS = ("auto", "bf16", "fp32")


def device_type_of(device_setting: str) -> str:
    """'cpu' or 'cuda' for a matrix.device setting ("auto" = the GPU when this machine has one)."""
    if device_setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device_setting.startswith("cuda") else "cpu"


def numerics_for(arch: str, device_type: str, precision: str = "auto") -> Numerics:
    """The table's row for `arch` on `device_type`, with `precision` forcing bf16/fp32 unless "auto"."""
    if precision not in PRECISIONS:
        raise ValueError(f"matrix.precision must be one of {PRECISIONS}, got {precision!r}")
    row = numerics_of(arch, device_type)
    return row if precision == "auto" else replace(row, precision=precision)


@contextmanager
def cudnn_autotune(arch: str, device_type: str) -> Iterator[bool]:
    """`torch.backends.cudnn.benchmark` as the table says for this cell while it trains (on for CNNs on
    CUDA, off otherwise, so one cell's setting never leaks into the next in the same worker process);
    restored afterwards. Yields whether it is on."""
    import torch

    on = device_type == "cuda" and numerics_for(arch, device_type).cudnn_benchmark
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield on
    finally:
        torch.backends.cudnn.benchmark = before
