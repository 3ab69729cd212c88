"""One process, plain torch: the Engine the loop uses on a laptop, a workstation GPU or a CPU test.

Checkpoint layout (`ckpt_dir/<tag>/`): `model.safetensors` (weights, loadable without pickle at all),
`state.pt` (optimizer state, client state: tensors and plain containers, read with weights_only=True) and
`meta.json`. The tag directory is written under a temporary name and renamed into place, and
`ckpt_dir/latest` is rewritten after that, so a kill at any instant leaves a resumable directory.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from heartbeit.records import ENGINE_META, ENGINE_STATE, ENGINE_WEIGHTS
from heartbeit.utils.io import atomic_dir, atomic_write_text

from .engine import LATEST, ParamGroupsOrFactory, latest_tag, make_adamw

log = logging.getLogger("heartbeit.distributed")


class LocalEngine:
    rank = 0
    world_size = 1
    local_rank = 0
    engine_name = "local"  # in meta.json: a checkpoint resumes with the engine that wrote it

    def __init__(self, model: torch.nn.Module, param_groups_or_optimizer_factory: ParamGroupsOrFactory, cfg,
                 device: torch.device | None = None):
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.module = self.model  # the bare model (DDPEngine wraps `model` and keeps this)
        if callable(param_groups_or_optimizer_factory):
            self.optimizer = param_groups_or_optimizer_factory(p for p in model.parameters() if p.requires_grad)
        else:
            self.optimizer = make_adamw(param_groups_or_optimizer_factory, cfg.lr, tuple(cfg.betas),
                                        cfg.weight_decay, self.device)
        self.grad_accum = max(1, int(cfg.grad_accum))
        self.clip_grad = float(cfg.clip_grad or 0.0)
        self.keep_checkpoints = int(getattr(cfg, "keep_checkpoints", 0) or 0)
        self._micro = 0
        self._grad_norm: Tensor | None = None  # on the device; read by grad_norm() (a sync) at log steps

    # ------------------------------------------------------------------ training
    def backward(self, loss: Tensor) -> None:
        (loss / self.grad_accum).backward()
        self._micro += 1

    def step(self) -> bool:
        if self._micro % self.grad_accum:
            return False
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.clip_grad > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])) if params \
                else torch.zeros(())
        self._grad_norm = norm.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def grad_norm(self) -> float | None:
        return None if self._grad_norm is None else float(self._grad_norm)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, ckpt_dir: Path, tag: str, client_state: dict) -> None:
        from safetensors.torch import save_file

        ckpt_dir = Path(ckpt_dir)
        with atomic_dir(ckpt_dir / tag, overwrite=True) as tmp:
            weights = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
            save_file(weights, str(tmp / ENGINE_WEIGHTS))
            buf = io.BytesIO()
            torch.save({"optimizer": self.optimizer.state_dict(), "client_state": client_state,
                        "micro_steps": self._micro}, buf)
            (tmp / ENGINE_STATE).write_bytes(buf.getvalue())
            (tmp / ENGINE_META).write_text(json.dumps({"engine": self.engine_name, "world_size": 1, "tag": tag}) + "\n")
        atomic_write_text(ckpt_dir / LATEST, tag + "\n")
        self._prune(ckpt_dir, keep=tag)

    def _prune(self, ckpt_dir: Path, keep: str) -> None:
        """Keep the newest `keep_checkpoints` tags (0 = keep all); `latest` is never removed."""
        if self.keep_checkpoints <= 0:
            return
        tags = sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and (p / ENGINE_META).is_file()),
                      key=lambda p: p.stat().st_mtime_ns)
        for old in tags[:-self.keep_checkpoints]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, ckpt_dir: Path, tag: str | None = None) -> dict | None:
        from safetensors.torch import load_file

        ckpt_dir = Path(ckpt_dir)
        tag = tag or latest_tag(ckpt_dir)
        if tag is None:
            return None
        tag_dir = ckpt_dir / tag
        for name in (ENGINE_WEIGHTS, ENGINE_STATE, ENGINE_META):
            if not (tag_dir / name).is_file():
                raise RuntimeError(f"{tag_dir}: incomplete checkpoint ({name} missing)")
        meta = json.loads((tag_dir / ENGINE_META).read_text())
        if meta.get("engine") != self.engine_name:
            raise RuntimeError(f"{tag_dir}: written by the {meta.get('engine')!r} engine; resume it with that engine")
        self.module.load_state_dict(load_file(str(tag_dir / ENGINE_WEIGHTS), device=str(self.device)))
        state: dict[str, Any] = torch.load(tag_dir / ENGINE_STATE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self._micro = int(state["micro_steps"])
        log.info("resumed from %s", tag_dir)
        return state["client_state"]

    def full_state_dict(self) -> dict[str, Tensor]:
        return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
                for k, v in self.module.state_dict().items()}

    # ------------------------------------------------------------------ collectives (trivial here)
    def barrier(self) -> None:
        pass

    def all_reduce_mean(self, value: float) -> float:
        return float(value)

    def all_reduce_max(self, value: float) -> float:
        return float(value)

    def all_gather_floats(self, value: float) -> list[float]:
        return [float(value)]
