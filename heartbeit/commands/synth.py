"""`heartbeit synth`: write the synthetic corpus (MUSE XML / WFDB / npz files, labels, ground truth)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from heartbeit.commands import fail
from heartbeit.config.layout import RunLayout

HELP = """Write synthetic 12-lead ECGs with known ground truth as real export files.

Output (DIR): muse/<site>/<accession>.xml, wfdb/<site>/records<fs>/... + ptbxl_database.csv,
arrays/<site>/<accession>.npz + .json, labels.csv, ground_truth.csv, synth.json, config.resolved.yaml.

Example: heartbeit synth --out runs/ci/synth --n 50 --seed 1

`heartbeit synth compare --real DIR [--real DIR ...] --n 300 --out results/realism` measures the generator
against real ECGs and published adult reference ranges (heartbeit/eval/realism.py): realism.csv/.json/.md,
realism.png, features_real.csv (records by index and format only), features_synthetic.csv."""

log = logging.getLogger("heartbeit.synth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("--out", default=None, help="output folder (default: <workdir>/synth)")
    parser.add_argument("--n", type=int, default=None, help="number of patients (overrides synth.n_patients)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides synth.seed)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: synth.workers; 0 = all cores); never changes the output")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_config_args(parser)
    sub = parser.add_subparsers(dest="action", metavar="[compare]")
    cmp = sub.add_parser("compare", help="measure synthetic ECGs against real ones and reference ranges",
                         description="Measure the generator's ECGs against real ECGs and published adult "
                                     "reference ranges (heartbeit/eval/realism.py). Options go after 'compare'.")
    cmp.add_argument("--real", action="append", required=True, metavar="DIR",
                     help="folder (or file) of real ECGs: MUSE XML, WFDB, npy/npz/mat arrays (repeatable)")
    cmp.add_argument("--n", type=int, default=300, help="synthetic ECGs to draw, as the corpus draws them (default 300)")
    cmp.add_argument("--seed", type=int, default=None, help="corpus seed (overrides synth.seed)")
    cmp.add_argument("--out", default="results/realism", help="output folder (default results/realism)")
    add_common_config_args(cmp)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "compare":
        return run_compare(args)
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.config import write_resolved
    from heartbeit.data.synth.corpus import write_corpus
    from heartbeit.utils.io import atomic_dir, resolve_workers

    overrides = list(args.overrides or [])
    if args.n is not None:
        overrides.append(f"synth.n_patients={args.n}")
    if args.seed is not None:
        overrides.append(f"synth.seed={args.seed}")
    args.overrides = overrides
    cfg = resolve_config(args)  # config errors surface here, before any work
    out = Path(args.out) if args.out else RunLayout.of(cfg).synth
    if out.exists() and not args.overwrite:
        return fail("synth", f"{out} already exists (use --overwrite to replace it)")
    workers = resolve_workers(args.workers if args.workers is not None else cfg.synth.workers)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        summary = write_corpus(cfg.synth, tmp, workers=workers, progress=not args.no_progress)
        write_resolved(cfg, tmp)
    print(f"synth: {summary['ecgs']} ECGs of {summary['patients']} patients "
          f"({summary['broken']} deliberately broken) -> {out}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.eval.realism import measure_real, measure_synthetic, write_outputs

    if args.n < 1:
        return fail("synth compare", "--n must be >= 1")
    if args.seed is not None:
        args.overrides = [*(args.overrides or []), f"synth.seed={args.seed}"]
    cfg = resolve_config(args)  # config errors surface here, before any work
    real, skipped = measure_real(args.real, cfg.render)
    if real.empty:
        return fail("synth compare", f"no readable real ECG under the given folders (skipped: {dict(skipped)})")
    log.info("measured %d real ECGs (%d skipped); drawing %d synthetic ECGs", len(real), sum(skipped.values()), args.n)
    synthetic = measure_synthetic(cfg.synth, args.n, cfg.render)
    summary = write_outputs(args.out, real, synthetic, skipped, {
        "command": "heartbeit synth compare", "profile": cfg.profile, "synth_seed": cfg.synth.seed, "n": args.n})
    verdict = ("every real median lies in the synthetic 10-90 % range" if summary["all_real_medians_in_synthetic_10_90"]
               else f"real medians outside the synthetic 10-90 % range: {', '.join(summary['out_of_range'])}")
    print(f"synth compare: {summary['real_records']} real vs {summary['synthetic_ecgs']} synthetic ECGs "
          f"({summary['synthetic_normal']} normal); {verdict} -> {args.out}")
    return 0
