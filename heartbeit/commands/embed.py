"""`heartbeit embed`: frozen backbone features per ECG of the rendered image shards -> Parquet."""
from __future__ import annotations

import argparse

from heartbeit.config.layout import RunLayout

HELP = """Backbone features (the pooled vector a classifier head reads) of every ECG in the image shards, from
a frozen backbone: the HeartBEiT pretraining export (default), any matrix architecture (--arch, with its
ImageNet file or random), or an exported model folder (--model). One row per ECG: ecg_uid, split, site,
f0..f<D-1>. The matrix's linear-probe cells (matrix.probe_architectures) fit logistic regression on the
same features.

  heartbeit embed --out runs/ci/embed/heartbeit.parquet
  heartbeit embed --model models/stemi --out feats.parquet --split test
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("--out", required=True, help="Parquet file to write (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never a link or folder)")
    parser.add_argument("--images", default=None, help="image shards (default: <workdir>/images)")
    parser.add_argument("--arch", default=None, help="backbone (default: the profile's pretraining model)")
    parser.add_argument("--pretrained", default=None, help="HeartBEiT export (default: <workdir>/pretrain/...)")
    parser.add_argument("--model", default=None, help="an exported model folder instead")
    parser.add_argument("--split", action="append", default=None, help="only these splits (repeatable)")
    parser.add_argument("--batch-size", type=_positive, default=64)
    add_common_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from heartbeit.commands import fail
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.modelio import ModelDirError
    from heartbeit.predict_io import PredictError, check_outputs
    from heartbeit.config.layout import export_paths
    from heartbeit.models.families import needs_mim_export
    from heartbeit.train.probe import embed_images

    cfg = resolve_config(args)
    layout = RunLayout.of(cfg)
    arch = args.arch or cfg.pretrain.model
    pretrained = args.pretrained
    if pretrained is None and not args.model and needs_mim_export(arch):
        pretrained = str(export_paths(layout.pretrain, arch)[0])
    images = args.images or layout.images
    try:
        # the same rules as predict's --out: never a link, a folder, an existing file without --overwrite, or
        # a place inside the image shards or the model folder
        check_outputs(args.out, [str(images)], [args.model, pretrained], None, args.overwrite, siblings=False)
        summary = embed_images(images, args.out, arch, pretrained_file=pretrained,
                               model_dir=args.model, img_size=cfg.matrix.image_size, splits=args.split,
                               batch_size=args.batch_size, device=cfg.matrix.device)
    except (ModelDirError, PredictError, FileNotFoundError, ValueError) as exc:
        return fail("embed", exc)
    print(f"embed: {summary['ecgs']} ECGs x {summary['features']} features ({summary['arch']}) -> {args.out}")
    return 0
