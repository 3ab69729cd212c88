"""`heartbeit bench`: the performance benchmarks under bench/, and the scaling plan."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HELP = """Performance benchmarks with baselines measured in the same run (bench/*.py), or the scaling plan.

  heartbeit bench --quick                      # every benchmark, CI sizes (<= 5 min on 2 cores)
  heartbeit bench --full --only train_step     # one benchmark, full sizes (paper models)
  heartbeit bench plan --gpu h100 --ecgs 8.5e6 # wall time / nodes / cores for pretraining at scale

Each benchmark runs in its own process; a failing one is reported and the rest still run. Records:
<out>/<name>.json (figures, ratios, machine, versions, command, git revision, date) and <out>/SUMMARY.md.
Default <out>: results/bench, or results/bench/<gpu> when a CUDA GPU is visible (CPU figures stay)."""


def _plan_module():
    from heartbeit.benchsuite import BENCH_DIR

    path = BENCH_DIR / "plan.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} (the scaling model lives in the source checkout's bench/)")
    spec = importlib.util.spec_from_file_location("bench_plan", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being built
    spec.loader.exec_module(module)
    return module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="run", choices=("run", "plan"),
                        help="run the benchmarks (default) or print the scaling plan")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True, help="CI sizes (default)")
    mode.add_argument("--full", dest="quick", action="store_false", help="full sizes (paper models)")
    parser.add_argument("--only", default=None, metavar="NAME[,NAME]", help="run only these benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (quick 1800, full 3 h)")
    parser.add_argument("--bench-dir", default=None, help=argparse.SUPPRESS)  # tests: a directory of fake benchmarks
    plan = parser.add_argument_group("plan (heartbeit bench plan ...)")
    _plan_module().add_arguments(plan)  # adds --out (shared: where records / plan files go) and --from


def _default_out(args: argparse.Namespace) -> str:
    if args.out != "results/bench":
        return args.out
    from heartbeit.benchsuite import gpu_names

    gpus = gpu_names()
    if not gpus:
        return args.out
    slug = "".join(c if c.isalnum() else "-" for c in gpus[0].lower()).strip("-")
    return f"{args.out}/{slug}"


def run(args: argparse.Namespace) -> int:
    from heartbeit import benchsuite

    if args.action == "plan":
        _plan_module().run_plan(args)
        return 0
    bench_dir = Path(args.bench_dir) if args.bench_dir else benchsuite.BENCH_DIR
    if args.list:
        print("\n".join(benchsuite.discover(bench_dir)))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        records = benchsuite.run_suite(names, quick=args.quick, out_dir=_default_out(args), bench_dir=bench_dir,
                                       timeout_s=args.timeout)
    except ValueError as exc:
        from heartbeit.commands import fail

        return fail("bench", exc)
    return 0 if all(r["status"] == "ok" for r in records) else 1
