"""HeartBEiT: timm's BEiT backbone + a learned mask token + an lm head, registered in timm.

One class serves both uses:

* fine-tuning / classification (the default, ``vocab_size=0``): exactly timm's ``Beit`` on 1-channel ECG
  images (mean = std = 0.5, relative position bias per layer, layer scale, mean pooling + ``fc_norm``);
* masked image modeling (``vocab_size > 0``, built by :func:`create_mim_model`): the same backbone with the
  relative position bias shared across layers (BEiT's pretraining recipe), a learned ``mask_token`` that
  replaces the embeddings of masked patches, and ``lm_head`` (embed -> vocabulary).

Importing this module registers the architectures, so after ``import heartbeit.models``::

    timm.create_model("heartbeit_base_patch16_224", pretrained=True,
                      pretrained_cfg_overlay=dict(file="heartbeit-base_patch16_224.safetensors"), num_classes=2)

loads an export of :func:`export_backbone`. :func:`checkpoint_filter_fn` drops the MIM-only tensors, expands a
shared relative position bias to every layer, and refuses a checkpoint with missing or unexpected backbone
keys (timm itself loads non-strictly whenever the class count changes, which would hide such a mismatch).

The final LayerNorm: timm's mean-pooling Beit names it ``fc_norm`` and applies it to the pooled token. The MIM
path applies the same module to every patch token before ``lm_head``, so the pretrained norm is the one
fine-tuning uses (BEiT's reference re-initialises it instead) and the export has no missing keys.

Baselines ``vit_tiny_patch8_112`` / ``vit_micro_patch8_64`` are the *same* architecture as the HeartBEiT
variant of that size, always randomly initialised: a comparison against them isolates pretraining.
Every model here takes ``in_chans=1``; ECG images are grayscale and nothing is gained by repeating a channel.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.beit import Beit
from timm.models.beit import checkpoint_filter_fn as beit_checkpoint_filter_fn

#: tensors that exist only for masked image modeling; never part of a fine-tuning backbone
MIM_ONLY_PREFIXES = ("mask_token", "lm_head.")
SHARED_REL_POS_KEY = "rel_pos_bias.relative_position_bias_table"


class HeartBEiT(Beit):
    """timm ``Beit`` plus, when ``vocab_size > 0``, a mask token and an lm head for masked image modeling."""

    def __init__(self, vocab_size: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        if vocab_size > 0:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
            self.lm_head = nn.Linear(self.embed_dim, vocab_size)
            trunc_normal_(self.mask_token, std=0.02)
            trunc_normal_(self.lm_head.weight, std=0.02)
            nn.init.zeros_(self.lm_head.bias)

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = set(super().no_weight_decay())
        if self.vocab_size > 0:
            names.add("mask_token")
        return names

    def forward_features_mim(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, D] after the blocks and the final norm, masked patches replaced by the mask token.
        `mask`: the masked positions as indices int64 [B, n_masked] (models.masking.MaskSampler), or a
        boolean [B, N] mask."""
        if self.vocab_size <= 0:
            raise RuntimeError("this HeartBEiT has no MIM head (vocab_size=0); build it with create_mim_model()")
        x = self.patch_embed(x)
        batch, n_patches, _ = x.shape
        if mask.dtype == torch.bool:
            if mask.shape != (batch, n_patches):
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match [batch, patches] = {(batch, n_patches)}")
            w = mask.unsqueeze(-1).to(x.dtype)
        else:
            if mask.dim() != 2 or mask.shape[0] != batch:
                raise ValueError(f"mask indices shape {tuple(mask.shape)} is not [batch = {batch}, n_masked]")
            # the same 0/1 weights as a boolean mask, from the indices (a scatter: no host sync)
            w = torch.zeros(batch, n_patches, 1, dtype=x.dtype, device=x.device).scatter_(
                1, mask.unsqueeze(-1), 1.0)
        x = x * (1.0 - w) + self.mask_token.to(x.dtype) * w
        x = torch.cat((self.cls_token.expand(batch, -1, -1).to(x.dtype), x), dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = self.pos_drop(x)
        rel_pos_bias = self.rel_pos_bias() if self.rel_pos_bias is not None else None
        for blk in self.blocks:
            x = blk(x, shared_rel_pos_bias=rel_pos_bias)
        x = self.norm(x)  # Identity under mean pooling; fc_norm is the final norm (see module docstring)
        return self.fc_norm(x[:, self.num_prefix_tokens:])

    def forward_mim(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [n_masked, vocab] for the masked positions (row-major over batch, then patches).
        With index masks the masked tokens are gathered (fixed shape, no host sync); a boolean mask indexes,
        which makes the host wait for the device (kept for callers that have one)."""
        tokens = self.forward_features_mim(x, mask)
        if mask.dtype == torch.bool:
            return self.lm_head(tokens[mask])
        picked = tokens.gather(1, mask.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return self.lm_head(picked.reshape(-1, tokens.shape[-1]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Classification logits (timm Beit), or MIM logits when a mask is given. Routing MIM through
        forward() lets a wrapper that hooks __call__ (DDP, DeepSpeed ZeRO-3 gathering) see the MIM pass."""
        if mask is not None:
            return self.forward_mim(x, mask)
        return super().forward(x)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    cfg = {
        "url": "", "num_classes": 0, "input_size": (1, 224, 224), "pool_size": None,
        "crop_pct": 1.0, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": (0.5,), "std": (0.5,), "first_conv": "patch_embed.proj", "classifier": "head",
        "license": "apache-2.0",
    }
    cfg.update(kwargs)
    return cfg


default_cfgs = generate_default_cfgs({
    "heartbeit_base_patch16_224": _cfg(),
    "heartbeit_tiny_patch8_112": _cfg(input_size=(1, 112, 112)),
    "heartbeit_micro_patch8_64": _cfg(input_size=(1, 64, 64)),
    "vit_tiny_patch8_112": _cfg(input_size=(1, 112, 112)),
    "vit_micro_patch8_64": _cfg(input_size=(1, 64, 64)),
    "heartbeit_tiny_patch8_64": _cfg(input_size=(1, 64, 64)),
    "vit_tiny_patch8_64": _cfg(input_size=(1, 64, 64)),
})

# one place for the sizes: (patch, embed_dim, depth, heads, img)
ARCHS: dict[str, dict[str, int]] = {
    "base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, img_size=224),
    "tiny_patch8_112": dict(patch_size=8, embed_dim=192, depth=4, num_heads=3, img_size=112),
    "micro_patch8_64": dict(patch_size=8, embed_dim=64, depth=2, num_heads=2, img_size=64),
    "tiny_patch8_64": dict(patch_size=8, embed_dim=192, depth=4, num_heads=3, img_size=64),
}


def _expand_shared_rel_pos_bias(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """BEiT pretrains one relative position bias shared by all layers; fine-tuning gives each layer a copy."""
    out = {k: v for k, v in state_dict.items() if k != SHARED_REL_POS_KEY}
    table = state_dict[SHARED_REL_POS_KEY]
    for i in range(depth):
        out[f"blocks.{i}.attn.relative_position_bias_table"] = table.clone()
    return out


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapt a HeartBEiT checkpoint (a pretraining state dict or an export) to `model`; fail on a key mismatch."""
    state_dict = state_dict.get("model", state_dict)
    model_keys = set(model.state_dict().keys())
    keep_mim = "mask_token" in model_keys  # loading into another MIM model (e.g. continued pretraining)
    sd = {k: v for k, v in state_dict.items() if keep_mim or not k.startswith(MIM_ONLY_PREFIXES)}
    if SHARED_REL_POS_KEY in sd and SHARED_REL_POS_KEY not in model_keys:
        sd = _expand_shared_rel_pos_bias(sd, len(model.blocks))
    head = getattr(model, "head", None)
    for name in ("head.weight", "head.bias"):  # a classifier of another shape is re-initialised by fine-tuning
        if name in sd and (not isinstance(head, nn.Linear) or sd[name].shape != model.state_dict()[name].shape):
            del sd[name]
    sd = beit_checkpoint_filter_fn(sd, model)  # resizes patch embed / rel-pos tables for another image size
    backbone = {k for k in model_keys if not k.startswith("head.")}
    missing = sorted(backbone - set(sd))
    unexpected = sorted(set(sd) - model_keys)
    if missing or unexpected:
        raise RuntimeError(
            f"HeartBEiT checkpoint does not match {type(model).__name__}: missing backbone keys {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            " (was it exported from a different architecture?)")
    return sd


def _create(variant: str, arch: str, pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    model_args = dict(ARCHS[arch], in_chans=1, mlp_ratio=4, use_abs_pos_emb=False, use_rel_pos_bias=True,
                      init_values=0.1)
    model_args.update(kwargs)
    return build_model_with_cfg(HeartBEiT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=3, feature_cls="getter"), **model_args)


@register_model
def heartbeit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """HeartBEiT (Vaid et al. 2023) = BEiT-B/16: 12 layers, 768 wide, 12 heads, 224 px, 1 channel."""
    return _create("heartbeit_base_patch16_224", "base_patch16_224", pretrained, **kwargs)


@register_model
def heartbeit_tiny_patch8_112(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """Demo profile: 4 layers, 192 wide, 3 heads, 112 px, patch 8 -> 14x14 grid (sized to pretrain on a CPU)."""
    return _create("heartbeit_tiny_patch8_112", "tiny_patch8_112", pretrained, **kwargs)


@register_model
def heartbeit_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """ci profile: 2 layers, 64 wide, 2 heads, 64 px, patch 8 -> 8x8 grid."""
    return _create("heartbeit_micro_patch8_64", "micro_patch8_64", pretrained, **kwargs)


@register_model
def heartbeit_tiny_patch8_64(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """Demo profile on 2 CPU cores: the tiny transformer (4 layers, 192 wide, 3 heads) at 64 px -> 8x8 grid,
    about 3x cheaper per image than at 112 px so the whole matrix fits the demo's time budget."""
    return _create("heartbeit_tiny_patch8_64", "tiny_patch8_64", pretrained, **kwargs)


@register_model
def vit_tiny_patch8_64(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """Random-init baseline with exactly heartbeit_tiny_patch8_64's architecture."""
    return _create("vit_tiny_patch8_64", "tiny_patch8_64", pretrained, **kwargs)


@register_model
def vit_tiny_patch8_112(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """Random-init baseline with exactly heartbeit_tiny_patch8_112's architecture."""
    return _create("vit_tiny_patch8_112", "tiny_patch8_112", pretrained, **kwargs)


@register_model
def vit_micro_patch8_64(pretrained: bool = False, **kwargs: Any) -> HeartBEiT:
    """Random-init baseline with exactly heartbeit_micro_patch8_64's architecture."""
    return _create("vit_micro_patch8_64", "micro_patch8_64", pretrained, **kwargs)


def create_mim_model(name: str, vocab_size: int, drop_path_rate: float = 0.1, layer_scale_init: float = 0.1,
                     img_size: int | None = None, **kwargs: Any) -> HeartBEiT:
    """The pretraining model: registered backbone + mask token + lm head, relative position bias shared."""
    import timm

    from .families import needs_mim_export

    if not needs_mim_export(name):  # the family this pretraining's export is for
        raise ValueError(f"masked image modeling needs a heartbeit_* architecture, got {name!r}")
    if img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(name, pretrained=False, num_classes=0, vocab_size=vocab_size,
                             drop_path_rate=drop_path_rate, init_values=layer_scale_init,
                             use_rel_pos_bias=False, use_shared_rel_pos_bias=True, **kwargs)


def export_backbone(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """fp32, contiguous backbone weights in the fine-tuning layout (per-layer rel-pos bias, no MIM tensors)."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith(MIM_ONLY_PREFIXES + ("head.",))}
    if SHARED_REL_POS_KEY in sd:
        sd = _expand_shared_rel_pos_bias(sd, depth)
    return {k: v.detach().to(torch.float32).cpu().contiguous().clone() for k, v in sorted(sd.items())}
