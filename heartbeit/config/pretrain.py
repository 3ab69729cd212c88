"""Masked-image-modeling pretraining settings (`heartbeit pretrain`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .core import ConfigError


@dataclass
class PretrainConfig:
    model: str = "heartbeit_base_patch16_224"
    img_size: int = 224
    steps: int = 1000
    batch_size: int = 64  # per rank
    grad_accum: int = 1
    lr: float = 1.5e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    drop_path: float = 0.1
    layer_scale_init: float = 0.1
    mask_patches: int = 75  # of the grid; scaled to the grid size for small profiles
    min_mask_block: int = 16
    precision: str = "fp32"  # fp32 | bf16
    zero_stage: int = 0  # 0 = DDP-equivalent; 1, 2, 3 under DeepSpeed
    checkpoint_every: int = 200
    log_every: int = 10
    num_workers: int = 2
    decode_threads: int = 1  # threads decoding each batch inside a loader process (libpng runs without the GIL)
    seed: int = 0
    compile: bool = False
    keep_checkpoints: int = 2  # newest checkpoint tags kept (0 = all)
    peak_tflops: float = 0.0  # device peak for MFU; 0 = GPU table / CPU estimate (heartbeit.train.flops)
    tokens: str = "auto"  # auto: precomputed grids from the shards when they match the tokenizer | shards | online
    zero_offload: bool = False  # ZeRO >= 1: optimizer states (and stage-3 params) in host memory
    ds_config_overrides: dict[str, Any] = field(default_factory=dict)  # merged last into the DeepSpeed config

    def validate(self) -> None:
        if self.decode_threads < 1:
            raise ConfigError(f"decode_threads must be >= 1, got {self.decode_threads}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.tokens not in ("auto", "shards", "online"):
            raise ConfigError(f"tokens must be auto, shards or online, got {self.tokens!r}")
        if min(self.steps, self.batch_size, self.grad_accum, self.log_every, self.checkpoint_every) < 1:
            raise ConfigError("steps, batch_size, grad_accum, log_every and checkpoint_every must be >= 1")
        if self.warmup_steps < 0 or not 0 <= self.min_lr <= self.lr:
            raise ConfigError("need warmup_steps >= 0 and 0 <= min_lr <= lr")
