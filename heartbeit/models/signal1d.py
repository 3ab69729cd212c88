"""The signal-domain baseline: a 1-D XResNet on the filtered 12-lead waveform, registered in timm.

In the spirit of the PTB-XL benchmark (Strodthoff et al. 2021), where xresnet1d101 and inception1d were
the strongest waveform models: the XResNet "bag of tricks" (a three-convolution stem, an average-pool
shortcut when a block downsamples, the last BatchNorm of each residual branch initialised to zero) with
1-D convolutions of kernel 5, and a head that concatenates adaptive average and max pooling (LayerNorm
where fastai's head has BatchNorm, so a one-ECG batch trains).

Input: float32 [B, 12, L] in mV — the same filtered waveform the ECG image is drawn from, stored beside
the image in the shards (`<key>.wave.npy`), so image and signal models see identical ECGs, splits and
training fractions. ``in_chans`` is the lead count (12).

    timm.create_model("signal_xresnet1d101", num_classes=2)   # paper / workstation profiles
    timm.create_model("signal_xresnet1d_tiny", num_classes=2) # ci / demo on 2 CPU cores
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

KERNEL = 5


def _conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = KERNEL, act: bool = True,
             zero_bn: bool = False) -> nn.Sequential:
    bn = nn.BatchNorm1d(c_out)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class XResBlock1d(nn.Module):
    """Basic (expansion 1: two convs) or bottleneck (expansion 4: 1-k-1 convs) residual block."""

    def __init__(self, expansion: int, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * expansion
        if expansion == 1:
            self.branch = nn.Sequential(_conv_bn(c_in, width, stride), _conv_bn(width, c_out, act=False, zero_bn=True))
        else:
            self.branch = nn.Sequential(_conv_bn(c_in, width, kernel=1), _conv_bn(width, width, stride),
                                        _conv_bn(width, c_out, kernel=1, act=False, zero_bn=True))
        shortcut: list[nn.Module] = []
        if stride != 1:  # XResNet: average-pool, then a 1x1 conv, instead of a strided 1x1 conv
            shortcut.append(nn.AvgPool1d(stride, stride, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(_conv_bn(c_in, c_out, kernel=1, act=False))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class XResNet1d(nn.Module):
    """A plain nn.Module with timm's classifier interface (num_classes, forward_features, forward_head,
    reset_classifier, get_classifier)."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), widths: tuple[int, ...] = (64, 128, 256, 512),
                 expansion: int = 1, stem_widths: tuple[int, int, int] = (32, 32, 64), in_chans: int = 12,
                 num_classes: int = 2, drop_rate: float = 0.5, **_: Any):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {layers} and widths {widths} must have the same length")
        self.num_classes = num_classes
        s0, s1, s2 = stem_widths
        self.stem = nn.Sequential(_conv_bn(in_chans, s0, stride=2), _conv_bn(s0, s1), _conv_bn(s1, s2),
                                  nn.MaxPool1d(3, stride=2, padding=1))
        stages, c_in = [], s2
        for i, (n_blocks, width) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n_blocks):
                blocks.append(XResBlock1d(expansion, c_in, width, stride=2 if (j == 0 and i > 0) else 1))
                c_in = width * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = c_in
        self.drop_rate = drop_rate
        self.head = self._make_head(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def _make_head(self, num_classes: int) -> nn.Module:
        # concat(avg, max) pooled features -> norm -> dropout -> linear (fastai's head, used by the PTB-XL
        # models), with LayerNorm for its BatchNorm: a 1 % training fraction can end an epoch on a batch of
        # one ECG, where BatchNorm over the batch is undefined.
        if num_classes <= 0:
            return nn.Identity()
        return nn.Sequential(nn.LayerNorm(2 * self.num_features), nn.Dropout(self.drop_rate),
                             nn.Linear(2 * self.num_features, num_classes))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, leads, L] -> [B, C, L / 32]: the last stage's feature map (time kept, for saliency)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"expected waveforms [batch, leads, samples], got shape {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict:
    # mean 0 / std 1: inputs are filtered waveforms in mV (the stem's BatchNorm learns the scale). No
    # input_size: timm reads it as (C, H, W); the length here is free (10 s at 100 Hz = 1000 samples).
    return {"num_classes": 2, "mean": (0.0,), "std": (1.0,), "first_conv": "stem.0.0",
            "classifier": "head.2", "license": "apache-2.0", **kwargs}


default_cfgs = generate_default_cfgs({
    "signal_xresnet1d_tiny.untrained": _cfg(),
    "signal_xresnet1d18.untrained": _cfg(),
    "signal_xresnet1d50.untrained": _cfg(),
    "signal_xresnet1d101.untrained": _cfg(),
})

ARCHS = {
    # ci / demo on 2 CPU cores: one basic block per stage, narrow
    "signal_xresnet1d_tiny": dict(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_widths=(16, 16, 32)),
    "signal_xresnet1d18": dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512)),
    "signal_xresnet1d50": dict(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), expansion=4),
    # the PTB-XL benchmark's strongest waveform model
    "signal_xresnet1d101": dict(layers=(3, 4, 23, 3), widths=(64, 128, 256, 512), expansion=4),
}


def _create(variant: str, pretrained: bool, **kwargs: Any) -> XResNet1d:
    kwargs.setdefault("in_chans", 12)
    return build_model_with_cfg(XResNet1d, variant, pretrained, **{**ARCHS[variant], **kwargs})


@register_model
def signal_xresnet1d_tiny(pretrained: bool = False, **kwargs: Any) -> XResNet1d:
    """ci/demo signal baseline: 4 stages of one basic block, 16-128 wide (~0.2 M parameters)."""
    return _create("signal_xresnet1d_tiny", pretrained, **kwargs)


@register_model
def signal_xresnet1d18(pretrained: bool = False, **kwargs: Any) -> XResNet1d:
    """Basic blocks [2, 2, 2, 2], 64-512 wide."""
    return _create("signal_xresnet1d18", pretrained, **kwargs)


@register_model
def signal_xresnet1d50(pretrained: bool = False, **kwargs: Any) -> XResNet1d:
    """Bottleneck blocks [3, 4, 6, 3]."""
    return _create("signal_xresnet1d50", pretrained, **kwargs)


@register_model
def signal_xresnet1d101(pretrained: bool = False, **kwargs: Any) -> XResNet1d:
    """Bottleneck blocks [3, 4, 23, 3] (PTB-XL benchmark's xresnet1d101)."""
    return _create("signal_xresnet1d101", pretrained, **kwargs)
