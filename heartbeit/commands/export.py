"""`heartbeit export CELL_DIR --out MODEL_DIR`: a finished matrix cell as a self-contained model folder."""
from __future__ import annotations

import argparse

HELP = """Write a model folder from a finished matrix cell: model.safetensors, config.json (architecture,
image size, layout, filters, normalisation, the task and the meaning of each output, a decision threshold
chosen on validation by Youden's J, versions) and README.md (the model card: training data, metrics with
95 % CIs, intended use, limits). Publishable by construction: every config.json key is on an allow-list, no
site map or site names, no paths, and counts below k (report.export_min_count, default 10; --min-count)
appear as "< k". Written into a temporary folder beside --out and renamed into place. See
heartbeit/modelio.py and docs/model-folder.md.

  heartbeit export runs/ci/matrix/cells/<cell_id> --out models/stemi_resnet18
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cell_dir", help="a finished cell: <workdir>/matrix/cells/<cell_id>")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder whole")
    parser.add_argument("--min-count", type=int, default=None, metavar="K",
                        help="publish counts below K as '< K' (default: the run's report.export_min_count, 10)")
    parser.add_argument("--config", default=None,
                        help="the run's resolved config (default: <cell_dir>/../../config.resolved.yaml)")


def run(args: argparse.Namespace) -> int:
    from heartbeit.commands import fail
    from heartbeit.modelio import ModelDirError, export_cell

    if args.min_count is not None and not 1 <= args.min_count <= 1000:
        return fail("export", f"--min-count must be in 1..1000, got {args.min_count}")
    try:
        config = export_cell(args.cell_dir, args.out, args.config, overwrite=args.overwrite,
                             min_count=args.min_count)
    except (ModelDirError, FileExistsError) as exc:
        return fail("export", exc)
    print(f"model folder: {args.out} ({config['architecture']}, task {config['tasks'][0]}, "
          f"threshold {config['threshold']['value']:.4f}, counts below {config['suppression']['min_count']} withheld)")
    return 0
