"""Pretraining length, batch and learning rate as BEiT defines them, resolved for the job at hand.

    resolved, record = resolve_schedule(cfg.pretrain, train_images=n, world_size=w)

BEiT (and the HeartBEiT paper) state a recipe as *epochs over the corpus at a global batch* with a peak lr
for that batch (1.5e-3 at 2048). A fixed `steps` count only means that on one cluster shape and one corpus
size: 16 GPUs instead of 32 would halve the epochs and double the lr-to-batch ratio. So when the config
gives `epochs`, the optimizer steps follow from the train split's size; when it gives `global_batch`, the
gradient accumulation follows from the world size; when it gives `lr_batch`, the peak lr scales linearly
with the global batch actually reached. A profile that sets none of them (ci, demo) keeps its explicit
`steps`, `grad_accum`, `lr` and `warmup_steps` unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from heartbeit.config import ConfigError, PretrainConfig
from heartbeit.records import IMAGES_INDEX

# The values a resolved schedule fixes; a resumed run must find the same ones in its checkpoint.
SCHEDULE_KEYS = ("steps", "grad_accum", "global_batch", "lr", "min_lr", "warmup_steps", "world_size",
                 "train_images")


def lr_at(step: int, lr: float, warmup_steps: int, steps: int, min_lr: float) -> float:
    """The learning rate at optimizer step `step` (0-based): linear warmup to `lr` over `warmup_steps`, then
    cosine decay to `min_lr` at `steps`. A pure function of the step, so a resumed run follows the same curve;
    pretraining and the distributed self-test both read it."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def train_image_count(images_dir: str | Path, split: str = "train") -> int:
    """Images in a split, from the render stage's index.json (written once every shard is complete)."""
    index = Path(images_dir) / IMAGES_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{Path(images_dir)}: no index.json (run `heartbeit render` to completion)")
    return int(json.loads(index.read_text())["splits"].get(split, {}).get("count", 0))


def resolve_schedule(cfg: PretrainConfig, train_images: int | None, world_size: int
                     ) -> tuple[PretrainConfig, dict[str, Any]]:
    """A copy of `cfg` with steps, grad_accum, lr, min_lr and warmup_steps derived for this job, and the
    record of how (for the log, the resolved config and the checkpoint)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    per_step = cfg.batch_size * world_size
    if cfg.global_batch:
        # whole micro batches per rank: the nearest global batch they can make (at least one micro batch)
        grad_accum = max(1, round(cfg.global_batch / per_step))
    else:
        grad_accum = cfg.grad_accum
    global_batch = per_step * grad_accum
    lr = cfg.lr * global_batch / cfg.lr_batch if cfg.lr_batch else cfg.lr
    if cfg.epochs:
        if not train_images:
            raise ConfigError("pretrain.epochs needs the train split's image count (index.json of the image "
                              "shards), and the train split is empty or unknown")
        steps = math.ceil(cfg.epochs * train_images / global_batch)
        warmup = (round(cfg.warmup_epochs * train_images / global_batch) if cfg.warmup_epochs
                  else cfg.warmup_steps)
    else:
        steps, warmup = cfg.steps, cfg.warmup_steps
    if cfg.epochs and warmup >= steps:
        raise ConfigError(f"pretraining warmup ({warmup} steps) is not shorter than the run ({steps} steps)")
    min_lr = min(cfg.min_lr, lr)
    resolved = dataclasses.replace(cfg, steps=steps, grad_accum=grad_accum, lr=lr, min_lr=min_lr,
                                   warmup_steps=warmup)
    record = {"steps": steps, "grad_accum": grad_accum, "global_batch": global_batch, "lr": lr,
              "min_lr": min_lr, "warmup_steps": warmup, "world_size": world_size,
              "train_images": int(train_images or 0),
              "epochs": (steps * global_batch / train_images) if train_images else None,
              "mode": "epochs" if cfg.epochs else "steps"}
    if cfg.global_batch and global_batch != cfg.global_batch:
        record["note"] = (f"global batch {global_batch} (= {cfg.batch_size} x {grad_accum} x {world_size} ranks) "
                          f"instead of {cfg.global_batch}: micro batches are whole"
                          + ("; lr scaled with it" if cfg.lr_batch else ""))
    return resolved, record


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuse to resume a run whose schedule would change (another world size, corpus or recipe): the
    lr curve, the data position and the step count are all defined by it."""
    if not saved:
        return  # a checkpoint from before schedules were recorded: nothing to compare
    keys = [k for k in SCHEDULE_KEYS if k != "train_images" or current.get("mode") == "epochs"]
    diff = {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}
    if diff:
        what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
        raise RuntimeError(f"the checkpoint's schedule differs from this run's ({what}); resume with the same "
                           f"number of ranks, images and settings (world size {saved.get('world_size')}), or "
                           "start a new --out")
