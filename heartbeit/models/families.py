"""The one table of architecture families: which names belong to which family, in the paper's display order,
and what each family implies for fine-tuning (optimizer, drop path). Imported by the matrix, fine-tuning,
saliency and the report, so a new architecture is added here once.

No torch/timm import: the report's table code reads this without building models."""
from __future__ import annotations

# (family, name prefixes), in display order: rows of every table, colours of every figure.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("heartbeit", ("heartbeit_",)),
    ("beit", ("beit_",)),  # the paper's "ViT-B/16" baseline is BEiT-B/16 with ImageNet weights
    ("vit", ("vit_", "deit_")),
    ("efficientnet", ("efficientnet_", "tf_efficientnet_")),
    ("resnet", ("resnet",)),
    ("signal", ("signal_",)),
)
FAMILY_ORDER = tuple(name for name, _ in FAMILIES)
IMAGE_FAMILIES = tuple(f for f in FAMILY_ORDER if f != "signal")
TRANSFORMER_FAMILIES = ("heartbeit", "beit", "vit")
CNN_FAMILIES = ("efficientnet", "resnet")

# The same-size random-init transformers that isolate the effect of pretraining: HeartBEiT's own architecture
# (timm BEiT backbone) without the MIM weights. They are "vit_*" by name but get HeartBEiT's fine-tuning recipe.
SAME_SIZE_BASELINES = ("vit_tiny_patch8_112", "vit_tiny_patch8_64", "vit_micro_patch8_64")


def same_size_baseline(arch: str) -> str | None:
    """HeartBEiT's random-init twin (heartbeit_tiny_patch8_64 -> vit_tiny_patch8_64): the same network with
    zero pretraining steps. None for other architectures and sizes without a twin."""
    twin = "vit_" + arch.removeprefix("heartbeit_")
    return twin if arch.startswith("heartbeit_") and twin in SAME_SIZE_BASELINES else None


# BEiT-family fine-tuning (HeartBEiT, its same-size random twin, BEiT-B/16): the BEiT reference loader's
# drop path rate. Other families keep timm's default (0).
BEIT_FINETUNE_DROP_PATH = 0.1


def arch_family(arch: str) -> str:
    """Family of an architecture name; unknown names get their first '_' part (kept apart in tables)."""
    for family, prefixes in FAMILIES:
        if arch.startswith(prefixes):
            return family
    return arch.split("_")[0]


def is_beit_family(arch: str) -> bool:
    """Architectures built on timm's BEiT backbone (relative position bias, layer scale)."""
    return arch_family(arch) in ("heartbeit", "beit") or arch in SAME_SIZE_BASELINES


def takes_imagenet_weights(arch: str) -> bool:
    """Baselines that start from ImageNet weights when a weights folder has them: not HeartBEiT (its own
    export), not the waveform models, not the same-size random-init ViTs that isolate pretraining."""
    return arch_family(arch) not in ("heartbeit", "signal") and arch not in SAME_SIZE_BASELINES


def uses_heartbeit_recipe(arch: str) -> bool:
    """HeartBEiT's optimizer (AdamW) and schedule: HeartBEiT and the same-size random ViT, so the only
    difference between the two is the pretrained weights. The paper's baselines use Adam."""
    return arch_family(arch) == "heartbeit" or arch in SAME_SIZE_BASELINES
