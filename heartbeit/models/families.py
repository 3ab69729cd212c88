"""The one table of architecture families (FAMILY_TABLE of `Family` records): which names belong to which
family, in the paper's display order, and everything each family implies (input kind, optimizer and its
parameter groups, drop path, how a new classifier head starts, which weights fine-tuning starts from,
normalisation, precision and memory format). Every family decision reads it (`family_of(arch)` or the small
helpers below), so a new architecture is added here once.

No torch/timm import: the report's table code reads this without building models."""
from __future__ import annotations

from dataclasses import dataclass, field

# BEiT-family fine-tuning (HeartBEiT, its same-size random twin, BEiT-B/16): the BEiT reference loader's
# drop path rate. Other families keep timm's default (0).
BEIT_FINETUNE_DROP_PATH = 0.1

# How every new classifier head starts (fine-tuning): Family.head_init. No family keeps its library's own head
# init: timm's BEiT/ViT scale theirs by head_init_scale=0.001 (weights std ~2e-5) and EfficientNet's "goog"
# init draws +-1/sqrt(num_classes) (+-0.71 for 2 classes). With unweighted cross-entropy at 8-16 % prevalence
# the first thing a head must learn is the prior's log-odds; a near-zero head learns it through the
# mean-feature direction and drags the backbone onto it (the random ViT's collapse before recipe 2). So:
#   weights  - "trunc_normal": truncated normal, std 0.02 (the BEiT/ViT reference init for Linear layers)
#            - "torch_default": PyTorch's default Linear init, U(+-1/sqrt(fan_in)) (what ResNet's head has)
#   bias     - always the training prevalence's log-odds: b1 - b0 = logit(p) for the two-logit softmax head,
#              split symmetrically (b0 = -logit(p)/2, b1 = +logit(p)/2), so the first scores are the prior.
TRUNC_NORMAL = ("trunc_normal", 0.02)
TORCH_DEFAULT: tuple[str, float | None] = ("torch_default", None)

# The AdamW recipe's parameter groups (HeartBEiT and its same-size random twin; BEiT's fine-tuning recipe):
# no weight decay on biases, norms, position tables, layer scale and tokens (every tensor of ndim <= 1, plus
# the model's no_weight_decay() names -- the same rule as pretraining's groups), weight decay on the rest,
# and layer-wise lr decay (matrix.layer_decay; 1.0 = off) over the transformer's blocks. The paper's
# baselines keep the paper's recipe: Adam, no weight decay, one group.
ADAMW_WEIGHT_DECAY = 0.01  # torch's AdamW default, the value the HeartBEiT cells have always used

# The fine-tuning recipe's version, hashed into every cell id (heartbeit/matrix.py): bump it whenever a code
# change alters what a cell computes without changing its config, so that finished cells of the old recipe
# are re-run instead of silently reused. 1: up to the head-init fix (library head inits, one optimizer
# group, selection on validation AUROC; cell ids without a recipe field). 2: the Family head inits with the
# prior bias, BEiT's parameter groups and layer decay, matrix.selection.
FINETUNE_RECIPE_VERSION = 2


@dataclass(frozen=True)
class Numerics:
    """Precision and memory format of a cell's training (heartbeit/models/precision.py reads them)."""
    precision: str  # "bf16" (autocast) | "fp32"
    channels_last: bool
    cudnn_benchmark: bool = False  # CUDA only: cuDNN picks its algorithms by timing them (fixed-size inputs)


# Measured rows (models/precision.py says where each CPU row comes from); CUDA: bf16 autocast everywhere.
_BF16 = Numerics("bf16", False)
_TRANSFORMER_NUMERICS = {"cpu": _BF16, "cuda": _BF16}
# A family without a row of its own (an architecture outside the table) trains in these.
DEFAULT_NUMERICS = {"cpu": Numerics("fp32", False), "cuda": _BF16}


@dataclass(frozen=True)
class Family:
    """Every decision that depends on an architecture's family, in one record.

    name           the family in tables and figures (cell.json's arch_family)
    prefixes       architecture names of the family; `names`: exact names (matched first)
    kind           "transformer" (takes img_size), "cnn", or "signal" (12-lead waveform [B, 12, L] in mV)
    optimizer      "AdamW" (BEiT's groups, ADAMW_WEIGHT_DECAY, layer decay) or "Adam" (one group, the paper's)
    drop_path      drop path rate while fine-tuning
    head_init      (weight rule, std) of a new classifier head (the rules in the comment above TRUNC_NORMAL)
    weights        where fine-tuning starts: "mim_export" (this benchmark's pretraining export, required),
                   "imagenet" (a weights folder's file when it has one), "random"
    normalisation  "heartbeit" (0.5 / 0.5, Vaid et al.), "timm" (the architecture's pretrained_cfg, averaged
                   over RGB), "none" (waveforms: mV as they are)
    numerics       {device type: Numerics}; a device type missing here takes DEFAULT_NUMERICS
    """
    name: str
    prefixes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    kind: str = "cnn"
    optimizer: str = "Adam"
    drop_path: float = 0.0
    head_init: tuple[str, float | None] = TORCH_DEFAULT
    weights: str = "imagenet"
    normalisation: str = "timm"
    numerics: dict[str, Numerics] = field(default_factory=dict)


# The same-size random-init transformers that isolate the effect of pretraining: HeartBEiT's own architecture
# (timm BEiT backbone) without the MIM weights. They are "vit_*" by name and in tables, but get HeartBEiT's
# fine-tuning recipe, normalisation and no ImageNet weights, so the only difference is the pretraining.
SAME_SIZE_BASELINES = ("vit_tiny_patch8_112", "vit_tiny_patch8_64", "vit_micro_patch8_64")

# In display order (rows of every table, colours of every figure); a name matches the first record whose
# `names` hold it, else the record whose `prefixes` it starts with.
FAMILY_TABLE: tuple[Family, ...] = (
    Family("heartbeit", ("heartbeit_",), kind="transformer", optimizer="AdamW", drop_path=BEIT_FINETUNE_DROP_PATH,
           head_init=TRUNC_NORMAL, weights="mim_export", normalisation="heartbeit", numerics=_TRANSFORMER_NUMERICS),
    # the paper's "ViT-B/16" baseline is BEiT-B/16 with ImageNet weights
    Family("beit", ("beit_",), kind="transformer", drop_path=BEIT_FINETUNE_DROP_PATH, head_init=TRUNC_NORMAL,
           numerics=_TRANSFORMER_NUMERICS),
    Family("vit", names=SAME_SIZE_BASELINES, kind="transformer", optimizer="AdamW",
           drop_path=BEIT_FINETUNE_DROP_PATH, head_init=TRUNC_NORMAL, weights="random", normalisation="heartbeit",
           numerics=_TRANSFORMER_NUMERICS),
    Family("vit", ("vit_", "deit_"), kind="transformer", head_init=TRUNC_NORMAL, numerics=_TRANSFORMER_NUMERICS),
    Family("efficientnet", ("efficientnet_", "tf_efficientnet_"),
           numerics={"cpu": Numerics("fp32", True), "cuda": Numerics("bf16", True, cudnn_benchmark=True)}),
    Family("resnet", ("resnet",),
           numerics={"cpu": Numerics("bf16", True), "cuda": Numerics("bf16", True, cudnn_benchmark=True)}),
    Family("signal", ("signal_",), kind="signal", weights="random", normalisation="none",
           numerics={"cpu": _BF16, "cuda": _BF16}),
)
FAMILY_ORDER = tuple(dict.fromkeys(f.name for f in FAMILY_TABLE))
IMAGE_FAMILIES = tuple(f.name for f in FAMILY_TABLE if f.kind != "signal" and f.prefixes)


def family_of(arch: str) -> Family:
    """The table's record of `arch`; an unknown name gets a record of its own, named by its first '_' part
    (kept apart in tables), with the defaults: Adam, no drop path, PyTorch's head, ImageNet weights if any."""
    for family in FAMILY_TABLE:
        if arch in family.names:
            return family
    for family in FAMILY_TABLE:
        if family.prefixes and arch.startswith(family.prefixes):
            return family
    return Family(arch.split("_")[0])


def arch_family(arch: str) -> str:
    """Family of an architecture name (tables, figures, cell.json)."""
    return family_of(arch).name


def same_size_baseline(arch: str) -> str | None:
    """HeartBEiT's random-init twin (heartbeit_tiny_patch8_64 -> vit_tiny_patch8_64): the same network with
    zero pretraining steps. None for other architectures and sizes without a twin."""
    twin = "vit_" + arch.removeprefix("heartbeit_")
    return twin if family_of(arch).weights == "mim_export" and twin in SAME_SIZE_BASELINES else None


def head_init(arch: str) -> tuple[str, float | None]:
    """(weight rule, std) of a new classifier head of `arch`."""
    return family_of(arch).head_init


def needs_mim_export(arch: str) -> bool:
    """Fine-tuning starts from this benchmark's pretraining export (HeartBEiT)."""
    return family_of(arch).weights == "mim_export"


def takes_imagenet_weights(arch: str) -> bool:
    """Baselines that start from ImageNet weights when a weights folder has them: not HeartBEiT (its own
    export), not the waveform models, not the same-size random-init ViTs that isolate pretraining."""
    return family_of(arch).weights == "imagenet"


def uses_heartbeit_recipe(arch: str) -> bool:
    """HeartBEiT's optimizer (AdamW, its parameter groups, layer decay): HeartBEiT and the same-size random
    ViT, so the only difference between the two is the pretrained weights. The paper's baselines use Adam."""
    return family_of(arch).optimizer == "AdamW"


def is_signal_arch(arch: str) -> bool:
    """Waveform models: input [B, 12, L] in mV instead of an image."""
    return family_of(arch).kind == "signal"


def is_transformer(arch: str) -> bool:
    """Architectures built for one input size (timm's img_size argument)."""
    return family_of(arch).kind == "transformer"


def numerics_of(arch: str, device_type: str) -> Numerics:
    """The family's precision and memory format on `device_type` ("cpu" | "cuda")."""
    return family_of(arch).numerics.get(device_type) or DEFAULT_NUMERICS[device_type]


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
        "drop_path": family_of(arch).drop_path,
        "recipe_version": FINETUNE_RECIPE_VERSION,
    }
