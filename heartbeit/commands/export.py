"""`heartbeit export CELL_DIR --out MODEL_DIR`: a finished matrix cell as a self-contained model folder."""
from __future__ import annotations

import argparse

HELP = """Write a model folder from a finished matrix cell: model.safetensors, config.json (architecture and
timm arguments, image size, layout, filters, normalisation, the task and the meaning of each output, a
decision threshold chosen on validation by Youden's J, versions) and README.md (the model card: training
data, metrics with 95 % CIs, intended use, limits). See heartbeit/modelio.py.

  heartbeit export runs/ci/matrix/cells/<cell_id> --out models/stemi_resnet18
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cell_dir", help="a finished cell: <workdir>/matrix/cells/<cell_id>")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--config", default=None,
                        help="the run's resolved config (default: <cell_dir>/../../config.resolved.yaml)")


def run(args: argparse.Namespace) -> int:
    from heartbeit.modelio import ModelDirError, export_cell

    try:
        config = export_cell(args.cell_dir, args.out, args.config)
    except (ModelDirError, ValueError) as exc:
        print(f"heartbeit export: {exc}")
        return 2
    print(f"model folder: {args.out} ({config['architecture']}, task {config['tasks'][0]}, "
          f"threshold {config['threshold']['value']:.4f})")
    return 0
