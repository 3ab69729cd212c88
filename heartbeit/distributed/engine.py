"""The seam between the training loop and distribution (torchtitan's separation).

The loop only ever talks to an `Engine`: it calls `engine.model(...)` for the forward pass and the methods
below for everything else. `LocalEngine` (local.py) is one process with plain torch; the DeepSpeed engine
(deepspeed.py) implements the same protocol for ZeRO 0-3 across ranks. Conventions every engine keeps:

* `backward(loss)` takes the loss of one micro batch; the engine divides by the accumulation count.
* `step()` is called after every micro batch; it steps (clip, optimizer step, zero grad) only at an
  accumulation boundary and says whether it did.
* `save_checkpoint` is collective; each rank passes its own `client_state` (loader position, RNG states)
  and `load_checkpoint` hands each rank its own back. A tag directory appears complete or not at all, and
  the `latest` pointer file is written last.
* `full_state_dict()` returns fp32 CPU tensors on rank 0 (other ranks may get an empty dict).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import torch
from torch import Tensor

LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be resumed from (the message names the path and the problem)."""


@runtime_checkable
class Engine(Protocol):
    model: torch.nn.Module
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    def backward(self, loss: Tensor) -> None: ...
    def step(self) -> bool: ...
    def set_lr(self, lr: float) -> None: ...
    def grad_norm(self) -> float | None: ...
    def save_checkpoint(self, ckpt_dir: Path, tag: str, client_state: dict) -> None: ...
    def load_checkpoint(self, ckpt_dir: Path, tag: str | None = None) -> dict | None: ...
    def full_state_dict(self) -> dict[str, Tensor]: ...
    def barrier(self) -> None: ...
    def all_reduce_mean(self, value: float) -> float: ...
    def all_reduce_max(self, value: float) -> float: ...


ParamGroupsOrFactory = Iterable[dict[str, Any]] | Callable[..., torch.optim.Optimizer]


def make_adamw(param_groups: Iterable[dict[str, Any]], lr: float, betas: tuple[float, float],
               weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """torch AdamW, fused where this torch build has a fused kernel for the device, else foreach.
    (Nothing JIT-compiles; groups carry their own weight_decay, the default applies otherwise.)"""
    kwargs: dict[str, Any] = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    groups = list(param_groups)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=device.type != "cpu", **kwargs)


def latest_tag(ckpt_dir: Path) -> str | None:
    """The tag named by `ckpt_dir/latest`, or None when there is no checkpoint yet."""
    pointer = Path(ckpt_dir) / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not tag or not (Path(ckpt_dir) / tag).is_dir():
        raise CheckpointError(f"{pointer} names tag {tag!r}, which is not a checkpoint directory in {ckpt_dir}")
    return tag
