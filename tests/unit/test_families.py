"""The family table (heartbeit/models/families.py FAMILY_TABLE) is the one place a family decision is made:
every architecture of the profiles gets the recipe, weights, normalisation and numerics it had before the
table existed, and no library module decides by spelling a family's name prefix itself."""
from __future__ import annotations

import re

import pytest

from heartbeit.models import zoo
from heartbeit.models.families import (FAMILY_ORDER, IMAGE_FAMILIES, Numerics, family_of, needs_mim_export,
                                       numerics_of, recipe_of, same_size_baseline, takes_imagenet_weights,
                                       uses_heartbeit_recipe)
from tests.conftest import ROOT

BF16, FP32 = Numerics("bf16", False), Numerics("fp32", False)
CNN_CUDA = Numerics("bf16", True, cudnn_benchmark=True)

# arch: (family, optimizer, drop path, head rule, weights, normalisation, cpu numerics, cuda numerics), as the
# separate helpers (zoo, precision, families) decided before the table
GOLDEN = {
    "heartbeit_micro_patch8_64": ("heartbeit", "AdamW", 0.1, "trunc_normal", "mim_export", "heartbeit", BF16, BF16),
    "heartbeit_base_patch16_224": ("heartbeit", "AdamW", 0.1, "trunc_normal", "mim_export", "heartbeit", BF16, BF16),
    "vit_micro_patch8_64": ("vit", "AdamW", 0.1, "trunc_normal", "random", "heartbeit", BF16, BF16),
    "vit_tiny_patch8_112": ("vit", "AdamW", 0.1, "trunc_normal", "random", "heartbeit", BF16, BF16),
    "vit_base_patch16_224": ("vit", "Adam", 0.0, "trunc_normal", "imagenet", "timm", BF16, BF16),
    "deit_small_patch16_224": ("vit", "Adam", 0.0, "trunc_normal", "imagenet", "timm", BF16, BF16),
    "beit_base_patch16_224": ("beit", "Adam", 0.1, "trunc_normal", "imagenet", "timm", BF16, BF16),
    "efficientnet_b0": ("efficientnet", "Adam", 0.0, "torch_default", "imagenet", "timm",
                        Numerics("fp32", True), CNN_CUDA),
    "tf_efficientnet_lite0": ("efficientnet", "Adam", 0.0, "torch_default", "imagenet", "timm",
                              Numerics("fp32", True), CNN_CUDA),
    "resnet18": ("resnet", "Adam", 0.0, "torch_default", "imagenet", "timm", Numerics("bf16", True), CNN_CUDA),
    "signal_xresnet1d_tiny": ("signal", "Adam", 0.0, "torch_default", "random", "none", BF16, BF16),
    "convnext_tiny": ("convnext", "Adam", 0.0, "torch_default", "imagenet", "timm", FP32, BF16),  # not in the table
}


@pytest.mark.parametrize("arch", sorted(GOLDEN))
def test_every_family_decision_reads_the_table(arch):
    family, optimizer, drop_path, head, weights, norm, cpu, cuda = GOLDEN[arch]
    record = family_of(arch)
    assert (record.name, record.optimizer, record.drop_path, record.head_init[0], record.weights,
            record.normalisation) == (family, optimizer, drop_path, head, weights, norm)
    assert numerics_of(arch, "cpu") == cpu and numerics_of(arch, "cuda") == cuda  # matrix.precision: auto
    assert uses_heartbeit_recipe(arch) == (optimizer == "AdamW")
    assert needs_mim_export(arch) == (weights == "mim_export")
    assert takes_imagenet_weights(arch) == (weights == "imagenet")
    recipe = recipe_of(arch, 0.75)
    assert (recipe["family"], recipe["optimizer"], recipe["drop_path"]) == (family, optimizer, drop_path)
    assert recipe["layer_decay"] == (0.75 if optimizer == "AdamW" else None)


def test_classifier_arguments_and_normalisation_follow_the_table():
    assert zoo.classifier_kwargs("heartbeit_micro_patch8_64", img_size=64)["drop_path_rate"] == 0.1
    assert "drop_path_rate" not in zoo.classifier_kwargs("resnet18")
    assert "img_size" in zoo.classifier_kwargs("vit_base_patch16_224") and "img_size" not in zoo.classifier_kwargs("resnet18")
    assert zoo.classifier_kwargs("signal_xresnet1d_tiny")["in_chans"] == 12
    assert zoo.normalization("vit_micro_patch8_64") == (0.5, 0.5)
    assert zoo.normalization("signal_xresnet1d_tiny") == (0.0, 1.0)
    assert zoo.normalization("resnet18") == pytest.approx((0.449, 0.226))


def test_display_order_and_twins():
    assert FAMILY_ORDER == ("heartbeit", "beit", "vit", "efficientnet", "resnet", "signal")
    assert IMAGE_FAMILIES == ("heartbeit", "beit", "vit", "efficientnet", "resnet")
    assert same_size_baseline("heartbeit_tiny_patch8_64") == "vit_tiny_patch8_64"
    assert same_size_baseline("heartbeit_base_patch16_224") is None and same_size_baseline("resnet18") is None


# A family decided by its name: `arch.startswith("heartbeit_")`, `name.startswith(("vit_", ...))`.
PREFIX_CHECK = re.compile(r"""\.startswith\(\(?\s*["'](heartbeit|beit|vit|deit|efficientnet|tf_efficientnet|resnet|signal)""")
# config/ must not import the models package (it registers timm models, importing torch): its one
# name check, "no signal_* model as a linear probe", stays a prefix test
ALLOWED = {"heartbeit/config/matrix.py"}


def test_no_family_prefix_checks_outside_the_table():
    found = []
    for path in sorted(p for top in ("heartbeit", "bench") for p in (ROOT / top).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "heartbeit/models/families.py" or rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PREFIX_CHECK.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "read the family table (heartbeit.models.families) instead:\n" + "\n".join(found)
