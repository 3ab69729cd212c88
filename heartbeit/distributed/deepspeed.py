"""DeepSpeed ZeRO 0-3 behind the loop's Engine protocol.

Stage 0 is the DDP-equivalent baseline (every rank holds everything, gradients are all-reduced); stages
1/2/3 partition optimizer states / gradients / parameters. The optimizer is a plain torch AdamW handed to
`deepspeed.initialize`, so nothing JIT-compiles (DeepSpeed's own fused Adam would take ~35 s to build on
CPU). The paper profile trains with torch DDP instead (distributed/ddp.py); ZeRO is here for models that do
not fit.

bf16 is the recipe every engine follows: fp32 parameters and optimizer state, the forward under
bf16 autocast (DeepSpeed's `torch_autocast`), the gradients of Linear/Conv weights reduced in bf16. (The
previous `bf16` mode kept the parameters themselves in bf16 and, at ZeRO-1 with fp32 gradient accumulation,
selected DeepSpeed's BF16_Optimizer, which all-reduces fp32 gradients after the backward pass without
overlap.) ZeRO-2 overlaps its gradient reduction with the backward pass (`overlap_comm`); the engine logs
which DeepSpeed optimizer it ended up with (`DeepSpeedEngine.optimizer_path`).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from heartbeit.config.pretrain import PretrainConfig

from . import checkpoint as ckpt
from .env import DistEnv, device_for, init_distributed

log = logging.getLogger("heartbeit.distributed")

def extensions_dir() -> Path:
    """Where DeepSpeed's JIT-compiled ops are cached: the user's cache folder, never the checkout (builds
    there would dirty the working tree and travel with copies of it), one folder per Python environment.
    Environments at other paths compile with other include paths, so a shared folder would be rebuilt in
    place whenever another checkout's venv used it -- under a process that has the old build loaded."""
    import hashlib
    import sys

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:12]
    return Path(base) / "heartbeit" / "torch_extensions" / env


def prepare_deepspeed():
    """Import DeepSpeed with a persistent extension cache and quiet logs; returns the module.

    The first DeepSpeed import on CPU JIT-compiles a shared-memory comm op (~20 s); keep it in a cache
    that survives between runs and tests."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    # DeepSpeed calls torch collectives torch 2.14 deprecates; one warning per call drowns the logs.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*is deprecated\. Please use")
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(os.environ.get("HEARTBEIT_DS_LOG_LEVEL", "WARNING"))
    import deepspeed

    return deepspeed


def make_ds_config(cfg: PretrainConfig, world_size: int) -> dict:
    """The DeepSpeed JSON config for a PretrainConfig; `cfg.ds_config_overrides` is merged in last."""
    from heartbeit.config.core import deep_merge

    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage >= 1:
        # ZeRO-2 reduces gradient buckets while the backward pass goes on (the reduction order does not
        # change: CPU/gloo runs resume to the same bytes); buckets are large enough for ci and paper models.
        zero.update(overlap_comm=cfg.zero_stage == 2, contiguous_gradients=True, reduce_bucket_size=int(5e7),
                    allgather_bucket_size=int(5e7))
    if getattr(cfg, "zero_offload", False) and cfg.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        if cfg.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": float(cfg.clip_grad) if cfg.clip_grad and cfg.clip_grad > 0 else 0.0,
        "zero_optimization": zero,
        # a torch optimizer is "untested" to DeepSpeed's ZeRO checks; it is what we want on CPU.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "checkpoint": {"tag_validation": "FAIL"},
    }
    if cfg.precision == "bf16":  # fp32 weights + bf16 autocast: the recipe of every engine
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    overrides = getattr(cfg, "ds_config_overrides", None) or {}
    return deep_merge(config, overrides)


def default_optimizer(params: Iterable, cfg: PretrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The same torch AdamW the single-process engine builds (fused where available): no JIT build."""
    from .engine import make_adamw

    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    return make_adamw(groups, cfg.lr, tuple(cfg.betas), cfg.weight_decay, device)


class DeepSpeedEngine:
    """The Engine protocol over a `deepspeed.DeepSpeedEngine`. `model` is the DeepSpeed engine itself
    (ZeRO-3 gathers parameters in its forward hooks; under bf16 it runs the forward in autocast).
    `optimizer_path`: the class of the optimizer DeepSpeed wrapped the torch AdamW in."""

    def __init__(self, ds_engine, denv: DistEnv, cfg: PretrainConfig):
        import deepspeed.comm as dist

        self._ds = ds_engine
        self._dist = dist
        self.cfg = cfg
        self.model = ds_engine
        self.rank, self.world_size, self.local_rank = denv.rank, denv.world_size, denv.local_rank
        self.device = ds_engine.device if isinstance(ds_engine.device, torch.device) else torch.device(ds_engine.device)
        self.zero_stage = cfg.zero_stage
        self.optimizer_path = type(ds_engine.optimizer).__name__

    @property
    def ds_engine(self):
        return self._ds

    def backward(self, loss: torch.Tensor) -> None:
        self._ds.backward(loss)  # DeepSpeed divides by gradient_accumulation_steps itself

    def step(self) -> bool:
        boundary = self._ds.is_gradient_accumulation_boundary()
        self._ds.step()  # clips, steps and zeroes only at the boundary
        return bool(boundary)

    def set_lr(self, lr: float) -> None:
        # ZeRO keeps the torch optimizer's group dicts (flattened params, same keys), so a per-group
        # lr_scale (layer-wise decay) survives partitioning.
        for group in self._ds.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def get_lr(self) -> float:
        return float(self._ds.optimizer.param_groups[0]["lr"])

    def grad_norm(self) -> float | None:
        norm = self._ds.get_global_grad_norm()
        if norm is None:
            return None
        return float(norm.item() if torch.is_tensor(norm) else norm)

    def save_checkpoint(self, ckpt_dir: Path, tag: str, client_state: dict) -> None:
        ckpt.save(self, Path(ckpt_dir), tag, client_state)

    def load_checkpoint(self, ckpt_dir: Path, tag: str | None = None) -> dict | None:
        return ckpt.load(self, Path(ckpt_dir), tag)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 weights (the optimizer's master copy where one exists) gathered from every partition; a
        collective, so every rank calls it; rank 0 receives the dict, the others an empty one."""
        from deepspeed.utils import safe_get_full_fp32_param

        module = self._ds.module
        keys = list(module.state_dict().keys())
        params = dict(module.named_parameters(remove_duplicate=False))
        buffers = dict(module.named_buffers(remove_duplicate=False))
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            if key in params:
                full = safe_get_full_fp32_param(params[key])  # collective under ZeRO
                value = full if full is not None else params[key].detach()
                value = value.detach().float()
            elif key in buffers:
                b = buffers[key].detach()
                value = b.float() if b.is_floating_point() else b
            else:
                continue
            if self.rank == 0:
                out[key] = value.cpu().clone()
        return out

    def barrier(self) -> None:
        self._dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def all_reduce_sum(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t)
        return float(t.item())

    def all_reduce_max(self, value: float) -> float:
        import torch.distributed as tdist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return float(t.item())

    def all_gather_floats(self, value: float) -> list[float]:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        parts = [torch.zeros_like(t) for _ in range(self.world_size)]
        self._dist.all_gather(parts, t)
        return [float(p.item()) for p in parts]


def build_deepspeed_engine(model: torch.nn.Module,
                           param_groups_or_optimizer_factory: Iterable | Callable[..., torch.optim.Optimizer]
                           | torch.optim.Optimizer | None,
                           cfg: PretrainConfig) -> DeepSpeedEngine:
    """Wrap `model` for ZeRO `cfg.zero_stage` (0-3) under whatever launcher started this process.

    `param_groups_or_optimizer_factory` is one of: parameter groups (list of dicts, as timm's
    `param_groups_weight_decay` makes) or an iterable of parameters -> AdamW from cfg; a callable taking
    the parameters and returning a torch optimizer; an already-built torch optimizer; or None -> AdamW
    over all trainable parameters."""
    deepspeed = prepare_deepspeed()

    denv = init_distributed()
    device = device_for(denv)
    model = model.to(device)
    if param_groups_or_optimizer_factory is None:
        optimizer = default_optimizer([p for p in model.parameters() if p.requires_grad], cfg, device)
    elif isinstance(param_groups_or_optimizer_factory, torch.optim.Optimizer):
        optimizer = param_groups_or_optimizer_factory
    elif callable(param_groups_or_optimizer_factory):
        optimizer = param_groups_or_optimizer_factory([p for p in model.parameters() if p.requires_grad])
    else:
        optimizer = default_optimizer(param_groups_or_optimizer_factory, cfg, device)
    deepspeed.init_distributed(dist_backend=None, auto_mpi_discovery=False)
    ds_config = make_ds_config(cfg, denv.world_size)
    ds_engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    log.info("DeepSpeed ZeRO stage %d, %s, micro batch %d x accum %d x %d ranks", cfg.zero_stage, cfg.precision,
             cfg.batch_size, cfg.grad_accum, denv.world_size)
    engine = DeepSpeedEngine(ds_engine, denv, cfg)
    zero = ds_config.get("zero_optimization", {})
    log.info("DeepSpeed optimizer path: %s (ZeRO stage %d, overlap_comm %s; %s)", engine.optimizer_path,
             cfg.zero_stage, "on" if zero.get("overlap_comm") else "off",
             "fp32 weights + bf16 autocast, Linear/Conv gradients reduced in bf16"
             if ds_config.get("torch_autocast", {}).get("enabled") else
             "bf16 weights" if ds_config.get("bf16", {}).get("enabled") else "fp32")
    return engine
