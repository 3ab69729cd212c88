"""Which engine a run gets (heartbeit.distributed.engine's protocol): `LocalEngine` for one process at ZeRO
stage 0, `DDPEngine` (torch DDP, bf16 all-reduce overlapped with the backward pass) for several ranks at
stage 0, the DeepSpeed engine for ZeRO stages 1-3. Its own module so that engine.py, which local.py, deepspeed.py and
checkpoint.py import, imports none of them back (no import cycle)."""
from __future__ import annotations

import os

import torch

from .engine import Engine, ParamGroupsOrFactory


def world_size_from_env() -> int:
    """World size as the launcher set it (torchrun/deepspeed/mpirun/srun); 1 when started plainly."""
    try:
        from heartbeit.distributed.env import discover
    except ImportError:
        return int(os.environ.get("WORLD_SIZE", "1"))
    return discover().world_size


def build_engine(model: torch.nn.Module, param_groups_or_optimizer_factory: ParamGroupsOrFactory, cfg) -> Engine:
    """LocalEngine for one process at ZeRO stage 0, DDPEngine for several; the DeepSpeed engine at stages 1-3.

    `cfg` is a PretrainConfig (zero_stage, grad_accum, clip_grad, lr, betas, weight_decay, precision).
    `param_groups_or_optimizer_factory`: parameter groups (dicts with 'params' and 'weight_decay'), from
    which AdamW is built, or a callable taking an iterable of parameters and returning an optimizer."""
    world_size = world_size_from_env()
    if cfg.zero_stage == 0 and world_size == 1:
        from heartbeit.distributed.local import LocalEngine

        return LocalEngine(model, param_groups_or_optimizer_factory, cfg)
    if cfg.zero_stage == 0:
        from heartbeit.distributed.ddp import DDPEngine

        return DDPEngine(model, param_groups_or_optimizer_factory, cfg)
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

