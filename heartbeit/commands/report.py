"""`heartbeit report`: metrics with CIs, tables, figures, saliency, Wasserstein -> results/REPORT.md."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

from heartbeit.config.layout import RunLayout

HELP = """Turn the benchmark matrix's finished cells and the image shards into the results folder:
tables/ (AUROC/AUPRC with 95% CIs, paired DeLong tests, calibration, subgroups, data counts, the
Wasserstein modality distance; Markdown, LaTeX, CSV), figures/ (ROC/PR, performance vs fraction,
reliability), saliency/ (Grad-CAM and FullGrad overlays, per-lead and lead x time tables, the synthetic
STEMI territory analysis) and REPORT.md / REPORT.html, which embed them and state the command that
regenerates them. Parts that cannot be built yet (no cells, a cell without its weights, no image shards)
are listed in the report's "Missing" section.

Defaults: --cells <workdir>/matrix/cells, --images <workdir>/images, --out the profile's results_dir.

Scale: cells are scored in report.workers processes (same bytes for any count), and each cell's metric
rows are kept in <workdir>/report/scores. On Slurm, score the cells as an array first
(`heartbeit report --score-only`, each task taking cells i, i + N, ...; --task-index/--num-tasks default
to SLURM_ARRAY_TASK_ID/_COUNT); the report that follows only gathers the rows.

Example: heartbeit report --profile ci"""

log = logging.getLogger("heartbeit.report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("--cells", default=None, help="matrix cells folder (default: <workdir>/matrix/cells)")
    parser.add_argument("--images", default=None, help="image shard folder (default: <workdir>/images)")
    parser.add_argument("--out", default=None, help="results folder (default: the config's results_dir)")
    parser.add_argument("--score-only", action="store_true",
                        help="score this array task's share of the cells into <workdir>/report/scores and stop")
    parser.add_argument("--task-index", type=int, default=None, help="with --score-only: this array task "
                        "(default $SLURM_ARRAY_TASK_ID or 0)")
    parser.add_argument("--num-tasks", type=int, default=None, help="with --score-only: array size "
                        "(default $SLURM_ARRAY_TASK_COUNT or 1)")
    add_common_config_args(parser)


def command_line(args: argparse.Namespace) -> str:
    """The exact `heartbeit report ...` invocation that reproduces this run's settings."""
    parts = ["heartbeit", "report", "--profile", args.profile]
    if args.config:
        parts += ["--config", args.config]
    for text in args.overrides or []:
        parts += ["--set", text]
    for flag, value in (("--workdir", args.workdir), ("--cells", args.cells), ("--images", args.images),
                        ("--out", args.out)):
        if value:
            parts += [flag, value]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.eval.report import run_report

    cfg = resolve_config(args)
    if args.score_only:
        return _score_only(cfg, args)
    summary = run_report(cfg, cells_dir=args.cells, images_dir=args.images, out_dir=args.out,
                         command=command_line(args))
    out = args.out or cfg.results_dir
    print(f"report: {out}/REPORT.md ({summary['cells']} cells)")
    for problem in summary["problems"]:
        print(f"  missing: {problem}", file=sys.stderr)
    if summary["cells"] == 0:
        print("heartbeit report: no finished matrix cells; the report holds only the data summary "
              "(run `heartbeit matrix run` first)", file=sys.stderr)
        return 1
    return 0


def _score_only(cfg, args: argparse.Namespace) -> int:
    from pathlib import Path

    from heartbeit.commands.render import array_task
    from heartbeit.eval.cells import score_cells
    from heartbeit.eval.report import score_cache
    from heartbeit.eval.report_inputs import load_cells

    task_index, num_tasks = array_task(args.task_index, args.num_tasks)
    cellset = load_cells(Path(args.cells) if args.cells else RunLayout.of(cfg).cells)
    rc = cfg.report
    n = score_cells(cellset.cells, score_cache(cfg), task_index, num_tasks, workers=rc.workers, ci=rc.ci,
                    n_resamples=rc.bootstrap, seed=rc.seed, min_n=rc.min_n, ece_bins=rc.ece_bins)
    print(f"report --score-only: task {task_index} of {num_tasks} scored {n} of {len(cellset.cells)} cells "
          f"-> {score_cache(cfg)}")
    return 0
