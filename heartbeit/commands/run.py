"""`heartbeit run --profile P`: the whole study end to end, each stage through its own subcommand.

Every stage skips work that is already complete for the same config, so a rerun after a crash or a
preemption continues where the last one stopped, and a second run recomputes nothing."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from heartbeit.config.cli_args import add_common_config_args, common_argv
from heartbeit.config.layout import RunLayout
from heartbeit.config.stages import PIPELINE, STAGE_NAMES

HELP = """Run the whole study for a profile: synth (unless real input_dirs are configured) -> ingest ->
render -> tokenizer train + encode -> pretrain -> matrix plan + run -> report.

Stage timings go to <workdir>/run.json. Examples:
  heartbeit run --profile ci          # 2-core smoke run, minutes
  heartbeit run --profile demo        # 2-core CPU, <= 30 min, sized so the paper's effect can show
  heartbeit run --profile ci --set matrix.seeds=[0,1]"""

log = logging.getLogger("heartbeit.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--until", default=None,
                        choices=STAGE_NAMES,
                        help="stop after this stage")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--allow-fewer-gpus", action="store_true",
                        help="pretrain on this node's GPUs even when they are fewer than the profile's world_size")
    add_common_config_args(parser)


def stages(cfg, args) -> list[tuple[str, list[list[str]]]]:
    """(stage, [argv, ...]) in order (heartbeit.config.stages); each argv is one `heartbeit ...` invocation."""
    layout = RunLayout.of(cfg)
    common = common_argv(args)
    quiet = ["--no-progress"] if args.no_progress else []
    out: list[tuple[str, list[list[str]]]] = []
    for stage in PIPELINE:
        if stage.name == "synth" and cfg.input_dirs:  # real data: nothing to synthesise
            continue
        invocations = []
        for step in stage.steps:
            argv = [*step.argv, *common, *(quiet if step.progress else [])]
            if step.argv == ("ingest",) and cfg.labels_csv:
                argv += ["--labels", cfg.labels_csv]
            if step.argv == ("pretrain",) and layout.pretrain_latest.is_file():
                argv.append("--resume")
            if step.argv == ("pretrain",) and getattr(args, "allow_fewer_gpus", False):
                argv.append("--allow-fewer-gpus")
            invocations.append(argv)
        if stage.name == "synth" and layout.synth_record.is_file():  # already complete
            invocations = []
        out.append((stage.name, invocations))
    return out


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pretrain_command(argv: list[str], gpus: int) -> list[str] | None:
    """On a node with N > 1 GPUs (and not already inside a launcher), pretraining runs as N ranks under
    torchrun, one per GPU; None = in this process."""
    import os
    import sys

    if gpus <= 1 or os.environ.get("WORLD_SIZE"):
        return None
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "heartbeit", *argv]


def run(args: argparse.Namespace) -> int:
    from heartbeit.cli import main
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.config import ConfigError
    from heartbeit.config.preflight import check_run
    from heartbeit.utils.io import atomic_write_json, atomic_write_text

    cfg = resolve_config(args)
    layout = RunLayout.of(cfg)
    work = layout.root
    planned = stages(cfg, args)
    names = [name for name, _ in planned]
    check_run(cfg, names[:names.index(args.until) + 1] if args.until else names, corpus_dir=layout.corpus)
    gpus = local_gpus()
    runs_pretrain = any(inv[0] == "pretrain" for name, invs in planned for inv in invs
                        if not args.until or names.index(name) <= names.index(args.until))
    if runs_pretrain and gpus and not args.allow_fewer_gpus:
        from heartbeit.config.slurm import SiteConfig
        from heartbeit.cost import allocation_problem

        problem = allocation_problem(cfg, SiteConfig(), 1, gpus)
        if problem:
            raise ConfigError(problem)
    work.mkdir(parents=True, exist_ok=True)
    from heartbeit.eval.compute import compute_table, load_average, markdown

    timings: dict[str, float] = {}
    load_before = load_average()
    t_all = time.time()
    for stage, invocations in planned:
        t0 = time.time()
        for argv in invocations:
            log.info("stage %s: heartbeit %s", stage, " ".join(argv))
            launch = pretrain_command(argv, gpus) if argv[0] == "pretrain" else None
            if launch:  # every GPU of this node: one rank each
                import subprocess

                log.info("stage %s: %d ranks on this node's %d GPUs: %s", stage, gpus, gpus, " ".join(launch))
                rc = subprocess.run(launch).returncode
            else:
                rc = main(argv)
            if rc != 0:
                log.error("stage %s failed (exit %d): heartbeit %s", stage, rc, " ".join(argv))
                return rc
        timings[stage] = round(time.time() - t0, 2)
        if args.until == stage:
            break
    timings["total"] = round(time.time() - t_all, 2)
    from heartbeit.utils.machine import machine_record

    record = {"profile": cfg.profile, "stages_s": timings, "complete": args.until is None, "machine": machine_record(),
              "load_average_before": load_before, "load_average_after": load_average(),
              "compute": compute_table(cfg, layout)}
    atomic_write_json(layout.run_record, record)
    if args.until is None:  # the committed record of a whole run: <results_dir>/<profile>_run.json (+ .md)
        from heartbeit.config.layout import results_run_records

        record_json, record_md = results_run_records(cfg.results_dir, cfg.profile)
        atomic_write_json(record_json, record)
        atomic_write_text(record_md, f"# {cfg.profile} run: where the time went\n\n" + markdown(record))
    width = max(len(k) for k in timings)
    print("\n".join(f"  {k:<{width}}  {v:8.1f} s" for k, v in timings.items()))
    print(f"run ({cfg.profile}) complete -> {work}; results in {cfg.results_dir}")
    if args.until is None and cfg.reference_results and Path(cfg.reference_results).is_dir():
        from heartbeit.commands.results import compare_and_write

        try:  # the run never overwrites the committed results: it says how far it is from them
            compare_and_write(Path(cfg.results_dir), Path(cfg.reference_results), cfg.report.seed_spread_file)
            print(f"promote with: heartbeit results promote --profile {cfg.profile}"
                  + (f" --workdir {args.workdir}" if args.workdir else ""))
        except (OSError, ValueError) as exc:
            log.warning("comparison with %s skipped: %s", cfg.reference_results, exc)
    return 0
