"""Masked-image-modeling pretraining settings (`heartbeit pretrain`)."""
from __future__ import annotations

from dataclasses import dataclass

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
    seed: int = 0
    compile: bool = False

    def validate(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
