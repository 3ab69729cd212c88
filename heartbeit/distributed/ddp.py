"""Data-parallel training for models that fit on one GPU: torch DistributedDataParallel behind the Engine
protocol, the paper profile's path (`pretrain.zero_stage: 0` with several ranks).

Why not ZeRO here: a 92 M-parameter model needs no partitioning for memory, and DeepSpeed's BF16_Optimizer
(ZeRO-1 with bf16 and fp32 gradient accumulation) all-reduced fp32 gradients after the backward pass without
overlap (~366 MB per step). DDP all-reduces in buckets while the backward pass is still running, and with
`precision: bf16` the buckets travel in bf16 (`bf16_compress_hook`: half the bytes).

The precision recipe is the one every engine follows: fp32 weights and optimizer state, the forward under
bf16 autocast (the step's own autocast, train/mim.py); gradients are fp32, reduced in bf16 on the wire.

Accumulation micro-steps skip the all-reduce (DDP's no_sync, armed before each forward). Replicas are
identical, so rank 0 writes a checkpoint in the single-process engine's layout (model.safetensors,
state.pt) with every rank's client state (loader position, RNG states) gathered into it; each rank reads
its own back. Determinism: on CPU/gloo a run and its exact resume give the same bytes (tested); on GPUs
NCCL's reduction order and cuDNN make runs reproducible within a tolerance, not bit-identical.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from heartbeit.records import ENGINE_META, ENGINE_STATE, ENGINE_WEIGHTS
from heartbeit.utils.io import atomic_dir, atomic_write_text

from .engine import LATEST, ParamGroupsOrFactory, latest_tag
from .env import device_for, init_distributed
from .local import LocalEngine

log = logging.getLogger("heartbeit.distributed")


class DDPEngine(LocalEngine):
    engine_name = "ddp"

    def __init__(self, model: torch.nn.Module, param_groups_or_optimizer_factory: ParamGroupsOrFactory, cfg):
        import torch.distributed as dist
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel

        denv = init_distributed()
        device = device_for(denv)
        super().__init__(model, param_groups_or_optimizer_factory, cfg, device=device)
        self.rank, self.world_size, self.local_rank = denv.rank, denv.world_size, denv.local_rank
        self._dist = dist
        self.model = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda" else None,
                                             gradient_as_bucket_view=True)
        self.comm_dtype = "bf16" if cfg.precision == "bf16" else "fp32"
        if self.comm_dtype == "bf16":
            self.model.register_comm_hook(None, default_hooks.bf16_compress_hook)
        self._arm_sync()
        log.info("engine: DDP over %d ranks, fp32 weights%s, gradients all-reduced in %s in buckets overlapped "
                 "with the backward pass", self.world_size, " + bf16 autocast" if cfg.precision == "bf16" else "",
                 self.comm_dtype)

    def _arm_sync(self) -> None:
        """All-reduce in the backward of the micro-step that ends an accumulation window only (the flag is
        read by the forward, so it is set before the next one)."""
        self.model.require_backward_grad_sync = (self._micro + 1) % self.grad_accum == 0

    def step(self) -> bool:
        stepped = super().step()
        self._arm_sync()
        return stepped

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, ckpt_dir: Path, tag: str, client_state: dict) -> None:
        """Collective: every rank's client state goes into rank 0's checkpoint."""
        from safetensors.torch import save_file

        buf = io.BytesIO()
        torch.save(client_state, buf)
        states: list[bytes | None] = [None] * self.world_size
        self._dist.all_gather_object(states, buf.getvalue())
        if self.rank == 0:
            ckpt_dir = Path(ckpt_dir)
            with atomic_dir(ckpt_dir / tag, overwrite=True) as tmp:
                weights = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
                save_file(weights, str(tmp / ENGINE_WEIGHTS))
                clients = [torch.load(io.BytesIO(s), weights_only=True) for s in states]
                out = io.BytesIO()
                torch.save({"optimizer": self.optimizer.state_dict(), "client_states": clients,
                            "micro_steps": self._micro}, out)
                (tmp / ENGINE_STATE).write_bytes(out.getvalue())
                (tmp / ENGINE_META).write_text(json.dumps({"engine": self.engine_name, "world_size": self.world_size,
                                                           "tag": tag}) + "\n")
            atomic_write_text(ckpt_dir / LATEST, tag + "\n")
            self._prune(ckpt_dir, keep=tag)
        self.barrier()

    def load_checkpoint(self, ckpt_dir: Path, tag: str | None = None) -> dict | None:
        from safetensors.torch import load_file

        ckpt_dir = Path(ckpt_dir)
        tag = tag or latest_tag(ckpt_dir)
        if tag is None:
            return None
        tag_dir = ckpt_dir / tag
        meta = json.loads((tag_dir / ENGINE_META).read_text())
        if meta.get("engine") != self.engine_name or meta.get("world_size") != self.world_size:
            raise RuntimeError(f"{tag_dir}: written by the {meta.get('engine')!r} engine over "
                               f"{meta.get('world_size')} rank(s); resume it with that engine and world size")
        self.module.load_state_dict(load_file(str(tag_dir / ENGINE_WEIGHTS), device=str(self.device)))
        state: dict[str, Any] = torch.load(tag_dir / ENGINE_STATE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self._micro = int(state["micro_steps"])
        self._arm_sync()
        log.info("resumed from %s", tag_dir)
        return state["client_states"][self.rank]

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        self._dist.barrier()

    def _reduce(self, value: float, op) -> Tensor:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t, op=op)
        return t

    def all_reduce_mean(self, value: float) -> float:
        return float(self._reduce(value, self._dist.ReduceOp.SUM)) / self.world_size

    def all_reduce_max(self, value: float) -> float:
        return float(self._reduce(value, self._dist.ReduceOp.MAX))

    def all_gather_floats(self, value: float) -> list[float]:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        parts = [torch.zeros_like(t) for _ in range(self.world_size)]
        self._dist.all_gather(parts, t)
        return [float(p) for p in parts]
