"""Masked-image-modeling pretraining settings (`heartbeit pretrain`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .core import ConfigError, upgrade_section


@dataclass
class PretrainConfig:
    model: str = "heartbeit_base_patch16_224"
    # px, square: not a key of its own but render.image_size, copied here by load_config (pretraining trains on
    # the rendered images as they are)
    image_size: int = 224
    # Length: `steps` optimizer steps, or (epochs > 0) BEiT's definition: epochs over the train split at the
    # global batch, steps = ceil(epochs * train images / global batch), derived at start from the shards'
    # count and the world size (heartbeit.train.schedule) and written to the resolved config and the log.
    steps: int = 1000
    epochs: float = 0.0
    batch_size: int = 64  # per rank
    grad_accum: int = 1
    # > 0: the global batch the recipe is defined at; grad_accum is derived so that batch_size x grad_accum x
    # world size comes as close to it as whole micro batches allow (0 = batch_size x grad_accum x world size)
    global_batch: int = 0
    lr: float = 1.5e-3
    # > 0: `lr` is the peak lr at this global batch and scales linearly with the actual one (BEiT/Goyal et
    # al.); 0 = `lr` as given
    lr_batch: int = 0
    min_lr: float = 1e-5
    warmup_steps: int = 100
    warmup_epochs: float = 0.0  # > 0: warmup in epochs (with `epochs`), converted to steps like the length
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    drop_path: float = 0.1
    layer_scale_init: float = 0.1
    mask_patches: int = 75  # of the grid; scaled to the grid size for small profiles
    min_mask_block: int = 16
    precision: str = "fp32"  # fp32 | bf16
    zero_stage: int = 0  # 0 = one process, or torch DDP over several ranks; 1, 2, 3 = DeepSpeed ZeRO
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
    # Extra backbone exports at these fractions of the (resolved) `steps`, each in (0, 1); the final export
    # (1.0) is always written. They go to <out>/ablation/, which checkpoint rotation never touches, and are
    # what the matrix's pretraining ablation (matrix.ablation_label_fraction) fine-tunes. [] = none.
    export_at: list[float] = field(default_factory=list)

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
        if min(self.epochs, self.warmup_epochs, self.global_batch, self.lr_batch) < 0:
            raise ConfigError("epochs, warmup_epochs, global_batch and lr_batch must be >= 0")
        if self.warmup_epochs and not self.epochs:
            raise ConfigError("warmup_epochs needs epochs (the length in epochs); else set warmup_steps")
        if not all(0 < f < 1 for f in self.export_at) or len(set(self.export_at)) != len(self.export_at):
            raise ConfigError(f"export_at must be distinct fractions of the steps in (0, 1) (the final export at "
                              f"1.0 is always written), got {self.export_at}")
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs:g}) must be < epochs ({self.epochs:g})")


def export_steps(export_at: list[float], steps: int) -> dict[int, float]:
    """{optimizer step: fraction} of the intermediate exports of a run of `steps` steps: the nearest step to
    each fraction. A fraction that lands on step 0, on the final step or on another's step is an error."""
    out: dict[int, float] = {}
    for fraction in sorted(export_at):
        step = int(math.floor(fraction * steps + 0.5))
        if not 0 < step < steps or step in out:
            raise ValueError(f"pretrain.export_at {fraction:g} of {steps} steps is step {step}, which is "
                             + ("another fraction's step" if step in out else "not strictly inside the run")
                             + ": use fewer or farther apart fractions, or more steps")
        out[step] = fraction
    return out


def same_run(config_a: dict, config_b: dict) -> bool:
    """Do two recorded `pretrain_config`s describe the same training run? `export_at` only says which
    steps are exported, not what is trained, so it is left out; a record written before a key was renamed
    compares under the new name."""
    def strip(c: dict) -> dict:
        return {k: v for k, v in upgrade_section("pretrain", c, warn=False).items() if k != "export_at"}

    return strip(config_a) == strip(config_b)
