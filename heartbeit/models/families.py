"""The one table of architecture families: which names belong to which family, in the paper's display order,
and what each family implies for fine-tuning (optimizer and its parameter groups, drop path, how a new
classifier head starts). Imported by the matrix, fine-tuning, saliency and the report, so a new architecture
is added here once.

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


# How every new classifier head starts (fine-tuning), per family. No family keeps its library's own head init:
# timm's BEiT/ViT scale theirs by head_init_scale=0.001 (weights std ~2e-5) and EfficientNet's "goog" init
# draws +-1/sqrt(num_classes) (+-0.71 for 2 classes). With unweighted cross-entropy at 8-16 % prevalence the
# first thing a head must learn is the prior's log-odds; a near-zero head learns it through the mean-feature
# direction and drags the backbone onto it (the random ViT's collapse before recipe 2). So:
#   weights  - "trunc_normal": truncated normal, std 0.02 (the BEiT/ViT reference init for Linear layers)
#            - "torch_default": PyTorch's default Linear init, U(+-1/sqrt(fan_in)) (what ResNet's head has)
#   bias     - always the training prevalence's log-odds: b1 - b0 = logit(p) for the two-logit softmax head,
#              split symmetrically (b0 = -logit(p)/2, b1 = +logit(p)/2), so the first scores are the prior.
HEAD_INIT: dict[str, tuple[str, float | None]] = {
    "heartbeit": ("trunc_normal", 0.02),
    "beit": ("trunc_normal", 0.02),
    "vit": ("trunc_normal", 0.02),
    "efficientnet": ("torch_default", None),
    "resnet": ("torch_default", None),
    "signal": ("torch_default", None),
}


def head_init(arch: str) -> tuple[str, float | None]:
    """(weight rule, std) of a new classifier head of `arch` (HEAD_INIT; unknown families: PyTorch's default)."""
    return HEAD_INIT.get(arch_family(arch), ("torch_default", None))


# The AdamW recipe's parameter groups (HeartBEiT and its same-size random twin; BEiT's fine-tuning recipe):
# no weight decay on biases, norms, position tables, layer scale and tokens (every tensor of ndim <= 1, plus
# the model's no_weight_decay() names -- the same rule as pretraining's groups), weight decay on the rest,
# and layer-wise lr decay (matrix.layer_decay; 1.0 = off) over the transformer's blocks. The paper's
# baselines keep the paper's recipe: Adam, no weight decay, one group.
ADAMW_WEIGHT_DECAY = 0.01  # torch's AdamW default, the value the HeartBEiT cells have always used

# The fine-tuning recipe's version, hashed into every cell id (heartbeit/matrix.py): bump it whenever a code
# change alters what a cell computes without changing its config, so that finished cells of the old recipe
# are re-run instead of silently reused. 1: up to the head-init fix (library head inits, one optimizer
# group, selection on validation AUROC; cell ids without a recipe field). 2: HEAD_INIT with the prior bias,
# BEiT's parameter groups and layer decay, matrix.selection.
FINETUNE_RECIPE_VERSION = 2


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


def recipe_of(arch: str, layer_decay: float = 1.0) -> dict:
    """A family's fine-tuning recipe in words and numbers (the resolved config's `recipes` section and
    cell.json): optimizer, parameter groups, layer decay, head init, drop path, recipe version."""
    adamw = uses_heartbeit_recipe(arch)
    rule, std = head_init(arch)
    return {
        "family": arch_family(arch), "optimizer": "AdamW" if adamw else "Adam",
        "param_groups": (f"weight decay {ADAMW_WEIGHT_DECAY} on weight matrices; none on biases, norms, position "
                         "tables, layer scale and tokens" if adamw else "one group, no weight decay"),
        "layer_decay": layer_decay if adamw else None,
        "head_init": (f"truncated normal std {std}" if rule == "trunc_normal" else "PyTorch default Linear")
                     + "; bias = training prevalence log-odds",
        "drop_path": BEIT_FINETUNE_DROP_PATH if is_beit_family(arch) else 0.0,
        "recipe_version": FINETUNE_RECIPE_VERSION,
    }
