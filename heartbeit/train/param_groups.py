"""Optimizer parameter groups, one rule for pretraining and fine-tuning (BEiT's): no weight decay on biases,
norms, position tables, layer scale and tokens -- every tensor of ndim <= 1 plus the model's
`no_weight_decay()` names -- and, for fine-tuning, optional layer-wise lr decay (timm's grouping by the
model's `group_matcher`: the embeddings get layer_decay ** (depth + 1), the head 1).

    groups = param_groups(model, weight_decay=0.05)                     # pretraining: two groups
    groups = param_groups(model, weight_decay=0.01, layer_decay=0.65)   # fine-tuning: per layer, 'lr_scale'

Each group may carry `lr_scale`; the fine-tuning schedule multiplies its peak lr by it (group_peak_lrs)."""
from __future__ import annotations

from typing import Any

import torch


def _no_weight_decay_names(model: torch.nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: [decay, no-decay] without layer decay; with it, timm's per-layer groups (lr_scale)."""
    skip = _no_weight_decay_names(model)
    if layer_decay != 1.0:
        from timm.optim._param_groups import param_groups_layer_decay

        if not hasattr(model, "group_matcher"):
            raise ValueError(f"{type(model).__name__} has no group_matcher: layer-wise lr decay needs layers")
        return param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=skip,
                                        layer_decay=layer_decay)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def group_peak_lrs(groups: list[dict[str, Any]], max_lr: float) -> list[float]:
    """The peak lr of each group: max_lr x its lr_scale (1 without layer decay)."""
    return [max_lr * float(g.get("lr_scale", 1.0)) for g in groups]


def describe_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each group holds (for cell.json and the resolved config): tensors, parameters, decay, lr scale."""
    return [{"tensors": len(g["params"]), "parameters": int(sum(p.numel() for p in g["params"])),
             "weight_decay": float(g.get("weight_decay", 0.0)), "lr_scale": round(float(g.get("lr_scale", 1.0)), 6)}
            for g in groups if g["params"]]
