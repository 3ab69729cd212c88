"""`heartbeit ingest`: MUSE XML / WFDB / arrays -> de-identified corpus + rejects ledger."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from heartbeit.config.layout import RunLayout
from heartbeit.records import SYNTH_LABELS, SYNTH_RECORD

HELP = """Read GE MUSE XML, WFDB (.hea + .dat/.mat, PTB-XL layout) and array files (.npy/.npz/.mat) into a
de-identified corpus: WebDataset shards (int16 microvolts at ingest.corpus_fs + JSON metadata),
metadata.parquet, summary.json (counts: accepted, rejected by reason, skipped by reason), and private/
(mode 0700: rejects.parquet with every refused file's path and reason, site pseudonyms). Console and logs
name a refused file only by its reject_id.

Formats are detected by content (--format forces one). Arrays need a <stem>.json sidecar or --fs/--units/
--leads. Patient ids become HMAC-SHA256 under --key (created with mode 0600 on first use; it may not lie
inside --out). Input written by `heartbeit synth` is hashed under the documented public synthetic key
instead (the same splits on every machine); real data never is.

  heartbeit ingest DATA/ --out runs/x/corpus --labels labels.csv --label-key accession
  heartbeit ingest DATA/ --out CORPUS --array            # one Slurm array task (SLURM_ARRAY_TASK_ID/COUNT)
  heartbeit ingest --merge --out CORPUS                  # join the array parts in CORPUS.parts/
"""

log = logging.getLogger("heartbeit.ingest")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args
    from heartbeit.data.ingest.stage import FORMATS

    parser.add_argument("inputs", nargs="*", help="files or folders (default: config input_dirs, else <workdir>/synth)")
    parser.add_argument("--out", default=None, help="corpus directory (default <workdir>/corpus)")
    parser.add_argument("--labels", default=None, help="labels CSV (lvef, lvef_le40, hcm, stemi and ingest.label_columns; blank = missing)")
    parser.add_argument("--label-key", default=None, help="labels column joined to each record: accession, mrn, ..., or record (the file stem); default ingest.label_key")
    parser.add_argument("--key", default=None, help="HMAC key file (default ingest.key_file or <workdir>/secret/deid.key)")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="force one input format (default: by content)")
    parser.add_argument("--fs", type=float, default=None, help="arrays without sidecar: sampling rate in Hz")
    parser.add_argument("--units", default=None, choices=("mV", "uV", "V"), help="arrays without sidecar: units")
    parser.add_argument("--leads", default=None, help="arrays without sidecar: comma-separated lead order")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default ingest.workers; 0 = all cores)")
    parser.add_argument("--site", action="append", default=None, metavar="NAME",
                        help="site label of an input root, once per input in order (default: each root's own "
                             "folder name as typed; site text inside files maps via ingest.site_map)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus made from other inputs")
    parser.add_argument("--array", action="store_true",
                        help="run one Slurm array task: slice from SLURM_ARRAY_TASK_ID/_MIN/_COUNT, write <out>.parts/")
    parser.add_argument("--array-task", type=int, default=None, help="array task index (0-based; overrides SLURM_*)")
    parser.add_argument("--array-count", type=int, default=None, help="number of array tasks")
    parser.add_argument("--merge", action="store_true", help="merge <out>.parts/task-* into <out>")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_config_args(parser)


def _array_slot(args) -> tuple[int, int] | None:
    if args.array_task is None and not args.array:
        return None
    task, count = args.array_task, args.array_count
    if task is None:
        try:
            task = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        except (KeyError, ValueError):
            raise SystemExit("heartbeit ingest --array: SLURM_ARRAY_TASK_ID is not set (or pass --array-task)")
    if count is None:
        try:
            count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        except (KeyError, ValueError):
            raise SystemExit("heartbeit ingest --array: SLURM_ARRAY_TASK_COUNT is not set (or pass --array-count)")
    return task, count


def run(args: argparse.Namespace) -> int:
    from heartbeit.commands import describe_os_error, fail
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.data.ingest.arrays import ArrayDefaults
    from heartbeit.data.ingest.deid import KeyFileError
    from heartbeit.data.ingest.stage import part_dir, run_ingest
    from heartbeit.data.ingest.publish import format_summary
    from heartbeit.data.ingest.labels import LabelError
    from heartbeit.data.ingest.listing import SiteLabelError, check_site_label
    from heartbeit.data.lock import LockBusy
    from heartbeit.data.ingest.merge import merge_parts
    from heartbeit.utils.io import resolve_workers
    from heartbeit.utils.logging import setup_logging

    cfg = resolve_config(args)
    icfg = cfg.ingest
    layout = RunLayout.of(cfg)
    out = Path(args.out) if args.out else layout.corpus
    try:
        setup_logging(logging.getLevelName(logging.getLogger("heartbeit").level),
                      log_file=out.parent / "logs" / f"ingest-{out.name}.log")
    except OSError as exc:  # a read-only or full disk shows here first
        return fail("ingest", f"cannot write the log beside --out: {describe_os_error(exc)}")

    if args.merge:
        try:
            summary = merge_parts(out, icfg, run_cfg=cfg, overwrite=args.overwrite)
        except (LockBusy, FileExistsError, RuntimeError, FileNotFoundError) as exc:
            return fail("ingest --merge", exc)
        print(_text(summary, format_summary))
        return 0

    inputs = list(args.inputs) or list(cfg.input_dirs)
    if not inputs and layout.synth.is_dir():
        inputs = [str(layout.synth)]
    if not inputs:
        return fail("ingest", "no inputs (give folders/files, set input_dirs, or run `heartbeit synth` first)")
    sites = args.site
    if sites is not None:
        if len(sites) != len(inputs):
            return fail("ingest", f"--site given {len(sites)} times for {len(inputs)} inputs (one per input)")
        bad = [s for s in sites if not s or not all(c.isalnum() or c in "_-." for c in s)]
        if bad:
            return fail("ingest", f"--site {bad[0]!r}: use letters, digits, '_', '-' or '.'")
        try:
            for i, s in enumerate(sites):
                check_site_label(s, f"--site of input {i + 1}")
        except SiteLabelError as exc:
            return fail("ingest", exc)
    labels = args.labels or cfg.labels_csv or None
    if labels is None and len(inputs) == 1 and (Path(inputs[0]) / SYNTH_LABELS).is_file():
        labels = str(Path(inputs[0]) / SYNTH_LABELS)  # the synthetic default ships its labels beside the files
        log.info("using labels %s", labels)
    key_path = Path(args.key or icfg.key_file or layout.deid_key)
    if key_path.resolve() == out.resolve() or out.resolve() in key_path.resolve().parents:
        return fail("ingest", f"the key file {key_path} lies inside --out {out}; replacing the corpus "
                              "(--overwrite) would delete it. Keep it outside (default <workdir>/secret/deid.key)")
    defaults = ArrayDefaults(
        fs=args.fs if args.fs is not None else icfg.array_fs,
        units=args.units or icfg.array_units,
        leads=[x.strip() for x in args.leads.split(",")] if args.leads else list(icfg.array_leads),
    )
    slot = _array_slot(args)
    target = part_dir(out, slot[0]) if slot else out
    workers = resolve_workers(args.workers if args.workers is not None else icfg.workers)
    _print_sites(inputs, sites)
    try:  # the key file is read (or created) only for real data: synthetic input uses the public key
        summary = run_ingest(inputs, target, icfg, key_path, labels_csv=labels, label_key=args.label_key,
                             fmt=args.format, array_defaults=defaults, workers=workers, run_cfg=cfg,
                             array_task=slot, overwrite=args.overwrite, progress=not args.no_progress,
                             sites=sites)
    except (LabelError, FileExistsError, KeyFileError, LockBusy, FileNotFoundError, SiteLabelError) as exc:
        return fail("ingest", exc)
    except OSError as exc:  # a full or read-only disk: nothing is published; the partial folder resumes
        return fail("ingest", f"cannot write the corpus: {describe_os_error(exc, inputs)}; nothing was published, "
                              "and a rerun resumes from the last finished shard")
    print(_text(summary, format_summary))
    print(f"corpus: {target}")
    return 0


def _print_sites(inputs: list[str], sites: list[str] | None) -> None:
    """Every site label from outside the files, before the run (labels from inside the files - MUSE
    SiteName, a sidecar's site - are ingest.site_map labels or keyed pseudonyms, listed in the summary)."""
    from heartbeit.data.ingest.listing import root_label
    from heartbeit.utils.text import safe_text

    for i, typed in enumerate(inputs):
        if sites:
            text = f"{sites[i]} (--site)"
        elif (Path(typed) / SYNTH_RECORD).is_file():
            text = "the sites its synth.json declares (heartbeit synth output)"
        else:
            label = root_label(typed)
            text = (f"{safe_text(label, 80)} (its folder name as typed)" if label else
                    "a keyed pseudonym site-<hex> (a file or '.' names no folder; name it with --site NAME)")
        print(f"site of input {i + 1}: {text}")


def _text(summary: dict, fmt) -> str:
    note = " (up to date: nothing to do)" if summary.get("up_to_date") else ""
    return fmt(summary) + note
