"""Architectures of the fine-tuning matrix, created through `timm.create_model` only.

    model, loaded = create_classifier("heartbeit_micro_patch8_64", pretrained_file="heartbeit-micro_patch8_64.safetensors")
    mean, std = normalization("heartbeit_micro_patch8_64")   # floats, for 1-channel images in [0, 1]

Signal-domain models (`signal_*`, heartbeit.models.signal1d) take the stored filtered waveform [B, 12, L]
in mV and are always randomly initialised. Architecture families live in heartbeit.models.families.

The second value is a LoadRecord: kind 'pretrained' (HeartBEiT from the MIM export), 'imagenet' (weights found
in a local directory, loaded strictly; nothing is downloaded), or 'random', with the file, its sha256 and
the tensors that loaded. All models take 1-channel images; timm folds an ImageNet stem's RGB
filters into one channel when loading 3-channel weights.

Normalisation follows the weights a model starts from: 0.5 / 0.5 for HeartBEiT (Vaid et al.) and for the
same-size random-init baselines vit_tiny/micro (identical input statistics isolate the effect of
pretraining); otherwise timm's pretrained_cfg mean/std (ImageNet statistics for ResNet/EfficientNet),
averaged over the three channels for a 1-channel input.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

import heartbeit.models.heartbeit as _registry  # noqa: F401  (registers heartbeit_* / vit_* sizes with timm)
import heartbeit.models.signal1d as _signal_registry  # noqa: F401  (registers signal_xresnet1d_* with timm)

from .families import family_of, head_init, is_signal_arch, is_transformer, needs_mim_export, \
    takes_imagenet_weights
from .weights import LoadRecord, WeightLoadError, create_with_weights, ensure_imagenet_file


def input_modality(arch: str) -> str:
    """'wave' for signal-domain models, 'image' for the rest (the loader's `modality`)."""
    return "wave" if is_signal_arch(arch) else "image"


def classifier_kwargs(arch: str, num_classes: int = 2, img_size: int = 224, in_chans: int = 1,
                      finetune: bool = True) -> dict:
    """timm.create_model arguments of a matrix classifier (one home for fine-tuning and for reloading a cell).
    Drop path while fine-tuning is the family's (BEiT family: 0.1, as the BEiT reference); no effect in eval mode."""
    kwargs: dict = {"num_classes": num_classes, "in_chans": 12 if is_signal_arch(arch) else in_chans}
    if is_transformer(arch):
        kwargs["img_size"] = img_size
    if finetune and family_of(arch).drop_path:
        kwargs["drop_path_rate"] = family_of(arch).drop_path
    return kwargs


def classifier_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The final Linear layer of a classifier's head (timm's get_classifier(); the signal model's head is a
    Sequential ending in one)."""
    head = model.get_classifier()
    if isinstance(head, torch.nn.Sequential):
        head = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"classifier head is {type(head).__name__}, not a Linear layer")
    return head


def prior_logit(prevalence: float, n: int | None = None) -> float:
    """logit(p), with p kept off 0 and 1 (by half an example when the count is known) so that a fraction
    without positives still gets a finite bias."""
    eps = 0.5 / n if n else 1e-3
    p = min(max(float(prevalence), eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


@torch.no_grad()
def init_new_head(model: torch.nn.Module, arch: str, prevalence: float | None = None,
                  n_train: int | None = None) -> None:
    """Start a new classifier head where it can learn (Family.head_init): weights by the family's rule,
    bias at the training prevalence's log-odds (two logits: b1 - b0 = logit(p)); without a prevalence the
    bias is zero. It reads no tensor back, so a model on the meta device initialises too (head_statistics
    reports the result)."""
    head = classifier_head(model)
    rule, std = head_init(arch)
    if rule == "trunc_normal":
        torch.nn.init.trunc_normal_(head.weight, std=std, a=-2 * std, b=2 * std)
    else:
        head.reset_parameters()
    head.bias.zero_()
    if prevalence is not None:
        if head.out_features != 2:
            raise ValueError(f"a prevalence bias needs a two-logit head, not {head.out_features} outputs")
        gap = prior_logit(prevalence, n_train)
        head.bias.copy_(torch.tensor([-gap / 2, gap / 2], dtype=head.bias.dtype))


@torch.no_grad()
def head_statistics(model: torch.nn.Module) -> dict:
    """What a classifier head holds now: weight std and max |w|, the bias, and b1 - b0 for two logits."""
    head = classifier_head(model)
    shape = {"in_features": head.in_features, "out_features": head.out_features}
    if head.weight.is_meta:  # a model built on the meta device (FLOP counting) holds no values
        return {"weight_std": None, "weight_absmax": None, "bias": None, "bias_gap": None, **shape}
    w, b = head.weight.detach().float(), head.bias.detach().float()
    return {"weight_std": round(float(w.std()), 6), "weight_absmax": round(float(w.abs().max()), 6),
            "bias": [round(float(v), 6) for v in b],
            "bias_gap": round(float(b[1] - b[0]), 6) if b.numel() == 2 else None, **shape}


def build_classifier(arch: str, num_classes: int = 2, img_size: int = 224) -> torch.nn.Module:
    """A randomly initialised matrix classifier, e.g. to load a finished cell's weights into."""
    import timm

    return timm.create_model(arch, pretrained=False, **classifier_kwargs(arch, num_classes, img_size, finetune=False))


def create_classifier(arch: str, num_classes: int = 2, img_size: int = 224, in_chans: int = 1,
                      pretrained_file: str | None = None, imagenet_weights_dir: str | None = None,
                      allow_random_init: bool = True, prevalence: float | None = None,
                      n_train: int | None = None) -> tuple[torch.nn.Module, LoadRecord]:
    """(model, what truly loaded) for one matrix architecture. Weights load strictly (weights.py): a file that
    does not fit its architecture is an error, never a silent random init. `allow_random_init=False` makes
    a missing ImageNet file an error too (the paper profile's baselines need their weights). The new head
    starts by the family's rule with its bias at `prevalence`'s log-odds (init_new_head)."""
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"unknown architecture {arch!r} (not registered in timm)")
    kwargs = classifier_kwargs(arch, num_classes, img_size, in_chans)
    if needs_mim_export(arch):
        if not pretrained_file:
            raise ValueError(f"{arch} needs the pretraining export (pretrained_file); its random-init "
                             f"counterpart is the vit_* baseline of the same size")
        if not Path(pretrained_file).is_file():
            raise FileNotFoundError(f"HeartBEiT export not found: {pretrained_file}")
        model, record = create_with_weights(arch, pretrained_file, "pretrained", **kwargs)
        init_new_head(model, arch, prevalence, n_train)
        return model, record
    takes_imagenet = takes_imagenet_weights(arch)
    weights = ensure_imagenet_file(arch, imagenet_weights_dir) if imagenet_weights_dir and takes_imagenet else None
    if weights is not None:
        model, record = create_with_weights(arch, weights, "imagenet", **kwargs)
        init_new_head(model, arch, prevalence, n_train)
        return model, record
    if takes_imagenet and not allow_random_init:
        raise WeightLoadError(f"{arch}: no ImageNet weights in {imagenet_weights_dir or '(matrix.imagenet_weights_dir unset)'}"
                              " and matrix.allow_random_init is false")
    model = timm.create_model(arch, pretrained=False, **kwargs)
    init_new_head(model, arch, prevalence, n_train)
    return model, LoadRecord(kind="random", tensors_in_model=len(model.state_dict()))


def normalization(arch: str) -> tuple[float, float]:
    """(mean, std) for 1-channel images scaled to [0, 1]; for waveform models (0, 1) on mV (Family.normalisation)."""
    rule = family_of(arch).normalisation
    if rule == "none":
        return 0.0, 1.0
    if rule == "heartbeit":
        return 0.5, 0.5
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    mean = getattr(cfg, "mean", None) or (0.485, 0.456, 0.406)
    std = getattr(cfg, "std", None) or (0.229, 0.224, 0.225)
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))
