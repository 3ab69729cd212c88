"""Architectures of the fine-tuning matrix, created through `timm.create_model` only.

    model, init_kind = create_classifier("heartbeit_micro_patch8_64", pretrained_file="heartbeit-micro_patch8_64.safetensors")
    mean, std = normalization("heartbeit_micro_patch8_64")   # floats, for 1-channel images in [0, 1]

Signal-domain models (`signal_*`, heartbeit.models.signal1d) take the stored filtered waveform [B, 12, L]
in mV and are always randomly initialised.

init_kind: 'pretrained' (HeartBEiT from the MIM export), 'imagenet' (weights found in a local directory;
nothing is downloaded), or 'random'. All models take 1-channel images; timm folds an ImageNet stem's RGB
filters into one channel when loading 3-channel weights.

Normalisation follows the weights a model starts from: 0.5 / 0.5 for HeartBEiT (Vaid et al.) and for the
same-size random-init baselines vit_tiny/micro (identical input statistics isolate the effect of
pretraining); otherwise timm's pretrained_cfg mean/std (ImageNet statistics for ResNet/EfficientNet),
averaged over the three channels for a 1-channel input.
"""
from __future__ import annotations

from pathlib import Path

import torch

import heartbeit.models.heartbeit as _registry  # noqa: F401  (registers heartbeit_* / vit_* sizes with timm)
import heartbeit.models.signal1d as _signal_registry  # noqa: F401  (registers signal_xresnet1d_* with timm)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
SAME_SIZE_BASELINES = ("vit_tiny_patch8_112", "vit_tiny_patch8_64", "vit_micro_patch8_64")
TRANSFORMER_PREFIXES = ("heartbeit_", "vit_", "beit_", "deit_")
SIGNAL_PREFIX = "signal_"  # waveform models: input [B, 12, L] in mV instead of an image


def is_signal_arch(arch: str) -> bool:
    return arch.startswith(SIGNAL_PREFIX)


def input_modality(arch: str) -> str:
    """'wave' for signal-domain models, 'image' for the rest (the loader's `modality`)."""
    return "wave" if is_signal_arch(arch) else "image"


def _imagenet_file(arch: str, weights_dir: str | Path) -> Path | None:
    """`<dir>/<arch>.safetensors|.pth|.pt|.bin` or `<dir>/<arch>/model.safetensors|pytorch_model.bin`."""
    root = Path(weights_dir)
    for suffix in WEIGHT_SUFFIXES:
        if (root / f"{arch}{suffix}").is_file():
            return root / f"{arch}{suffix}"
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (root / arch / name).is_file():
            return root / arch / name
    return None


def create_classifier(arch: str, num_classes: int = 2, img_size: int = 224, in_chans: int = 1,
                      pretrained_file: str | None = None, imagenet_weights_dir: str | None = None,
                      **kwargs) -> tuple[torch.nn.Module, str]:
    """(model, init_kind) for one matrix architecture."""
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"unknown architecture {arch!r} (not registered in timm)")
    if arch.startswith(TRANSFORMER_PREFIXES):
        kwargs["img_size"] = img_size
    if is_signal_arch(arch):
        in_chans = 12  # one input channel per lead; no image-size argument
    common = dict(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if arch.startswith("heartbeit_"):
        if not pretrained_file:
            raise ValueError(f"{arch} needs the pretraining export (pretrained_file); its random-init "
                             f"counterpart is the vit_* baseline of the same size")
        if not Path(pretrained_file).is_file():
            raise FileNotFoundError(f"HeartBEiT export not found: {pretrained_file}")
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)),
                                  **common)
        return model, "pretrained"
    weights = _imagenet_file(arch, imagenet_weights_dir) if imagenet_weights_dir and arch not in SAME_SIZE_BASELINES \
        else None
    if weights is not None:
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)), **common)
        return model, "imagenet"
    return timm.create_model(arch, pretrained=False, **common), "random"


def normalization(arch: str) -> tuple[float, float]:
    """(mean, std) for 1-channel images scaled to [0, 1]; for waveform models (0, 1) on mV."""
    if is_signal_arch(arch):
        return 0.0, 1.0
    if arch.startswith("heartbeit_") or arch in SAME_SIZE_BASELINES:
        return 0.5, 0.5
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    mean = getattr(cfg, "mean", None) or (0.485, 0.456, 0.406)
    std = getattr(cfg, "std", None) or (0.229, 0.224, 0.225)
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))
