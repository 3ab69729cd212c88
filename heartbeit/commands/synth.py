"""`heartbeit synth`: write the synthetic corpus (MUSE XML / WFDB / npz files, labels, ground truth)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = """Write synthetic 12-lead ECGs with known ground truth as real export files.

Output (DIR): muse/<site>/<accession>.xml, wfdb/<site>/records<fs>/... + ptbxl_database.csv,
arrays/<site>/<accession>.npz + .json, labels.csv, ground_truth.csv, synth.json, config.resolved.yaml.

Example: heartbeit synth --out runs/ci/synth --n 50 --seed 1"""

log = logging.getLogger("heartbeit.synth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.cli import add_common_config_args

    parser.add_argument("--out", default=None, help="output folder (default: <workdir>/synth)")
    parser.add_argument("--n", type=int, default=None, help="number of patients (overrides synth.n_patients)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides synth.seed)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: synth.workers; 0 = all cores); never changes the output")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from heartbeit.cli import resolve_config
    from heartbeit.config import write_resolved
    from heartbeit.data.synth_corpus import write_corpus
    from heartbeit.utils.io import atomic_dir, resolve_workers

    overrides = list(args.overrides or [])
    if args.n is not None:
        overrides.append(f"synth.n_patients={args.n}")
    if args.seed is not None:
        overrides.append(f"synth.seed={args.seed}")
    args.overrides = overrides
    cfg = resolve_config(args)  # config errors surface here, before any work
    out = Path(args.out) if args.out else Path(cfg.workdir) / "synth"
    if out.exists() and not args.overwrite:
        print(f"heartbeit synth: {out} already exists (use --overwrite to replace it)")
        return 1
    workers = resolve_workers(args.workers if args.workers is not None else cfg.synth.workers)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        summary = write_corpus(cfg.synth, tmp, workers=workers, progress=not args.no_progress)
        write_resolved(cfg, tmp)
    print(f"synth: {summary['ecgs']} ECGs of {summary['patients']} patients "
          f"({summary['broken']} deliberately broken) -> {out}")
    return 0
