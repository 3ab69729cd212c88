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

import os
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


def world_size_from_env() -> int:
    """World size as the launcher set it (torchrun/deepspeed/mpirun/srun); 1 when started plainly."""
    try:
        from heartbeit.distributed.env import discover
    except ImportError:
        return int(os.environ.get("WORLD_SIZE", "1"))
    return discover().world_size


def build_engine(model: torch.nn.Module, param_groups_or_optimizer_factory: ParamGroupsOrFactory, cfg) -> Engine:
    """LocalEngine for one process at ZeRO stage 0; the DeepSpeed engine otherwise.

    `cfg` is a PretrainConfig (zero_stage, grad_accum, clip_grad, lr, betas, weight_decay, precision).
    `param_groups_or_optimizer_factory`: parameter groups (dicts with 'params' and 'weight_decay'), from
    which AdamW is built, or a callable taking an iterable of parameters and returning an optimizer."""
    world_size = world_size_from_env()
    if cfg.zero_stage == 0 and world_size == 1:
        from heartbeit.distributed.local import LocalEngine

        return LocalEngine(model, param_groups_or_optimizer_factory, cfg)
    try:
        from heartbeit.distributed.deepspeed import build_deepspeed_engine
    except ModuleNotFoundError as exc:
        if exc.name not in ("heartbeit.distributed.deepspeed", "deepspeed"):
            raise
        raise RuntimeError(
            f"ZeRO stage {cfg.zero_stage} with {world_size} rank(s) needs the DeepSpeed engine "
            f"(heartbeit.distributed.deepspeed and the deepspeed package), which could not be imported: {exc}. "
            "Run single-process with pretrain.zero_stage=0, or install deepspeed.") from None
    return build_deepspeed_engine(model, param_groups_or_optimizer_factory, cfg)


def latest_tag(ckpt_dir: Path) -> str | None:
    """The tag named by `ckpt_dir/latest`, or None when there is no checkpoint yet."""
    pointer = Path(ckpt_dir) / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not tag or not (Path(ckpt_dir) / tag).is_dir():
        raise CheckpointError(f"{pointer} names tag {tag!r}, which is not a checkpoint directory in {ckpt_dir}")
    return tag
