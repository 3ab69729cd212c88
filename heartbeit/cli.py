"""`heartbeit <stage>`: one entry point, one subcommand per pipeline stage.

Each stage lives in `heartbeit/commands/<name>.py` exposing `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Modules are imported lazily so `heartbeit --help` stays fast."""
from __future__ import annotations

import argparse
import logging
import sys

from heartbeit.commands import BUG_EXIT, describe_os_error, fail, load_command
from heartbeit.config.stages import summary as pipeline_summary

# name -> one-line description (`heartbeit --help` lists them without importing the stages)
COMMANDS: dict[str, str] = {
    "synth": "write synthetic 12-lead ECGs as MUSE XML / WFDB / npz files with known ground truth",
    "ingest": "read MUSE XML, WFDB and array files into a de-identified corpus (+ rejects ledger)",
    "render": "filter, render 12-lead images, split by patient and write WebDataset image shards",
    "tokenizer": "train or apply the discrete visual tokenizer (train | encode)",
    "pretrain": "HeartBEiT masked image modeling (single process or distributed under DeepSpeed)",
    "matrix": "the benchmark matrix: plan | run | status",
    "report": "metrics with CIs, tables, figures, saliency, Wasserstein -> results/REPORT.md",
    "export": "a finished matrix cell -> a self-contained model folder (weights, config.json, model card)",
    "embed": "frozen backbone features per ECG of the image shards -> Parquet",
    "predict": "score ECG files with an exported model folder (+ metrics with CIs against your labels)",
    "run": f"the whole study end to end for a profile ({pipeline_summary()})",
    "bench": "performance benchmarks with same-run baselines",
    "slurm": "submit the pipeline as dependent Slurm jobs; status",
    "weights": "local pretrained weights: convert and check the offline ImageNet EfficientNet-Lite0",
    "results": "a run's results against the committed ones (compare), or promote a run to them",
}

def build_parser(selected: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser. Only the selected stage's module is imported (so `heartbeit --help` and every
    other stage keep working whatever one stage's imports do); the rest are listed by description."""
    from heartbeit import __version__

    parser = argparse.ArgumentParser(
        prog="heartbeit",
        description="HeartBEiT Bench: ECG ingest, rendering, MIM pretraining and the benchmark matrix.",
    )
    parser.add_argument("--version", action="version", version=f"heartbeit {__version__}")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG (also the traceback of an unexpected error), INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    modules = {}
    for name, desc in COMMANDS.items():
        if name != selected:
            sub.add_parser(name, help=desc, add_help=False)
            continue
        module = load_command(name)
        modules[name] = module
        p = sub.add_parser(name, help=desc, description=getattr(module, "HELP", desc),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    return parser, modules


def _selected_command(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--log-level":
            continue
        if i > 0 and argv[i - 1] == "--log-level":
            continue
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    from heartbeit.config import ConfigError
    from heartbeit.utils.logging import setup_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    parser, modules = build_parser(_selected_command(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = modules[args.command]
    setup_logging(args.log_level)
    # The boundary: every failure is one line on stderr with the documented exit code (commands/__init__.py).
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        return fail(args.command, f"config error: {exc}")
    except FileNotFoundError as exc:
        return fail(args.command, f"missing file: {exc}")
    except OSError as exc:
        return fail(args.command, describe_os_error(exc, getattr(args, "inputs", None)))
    except KeyboardInterrupt:
        print(f"heartbeit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback only when asked for
        logging.getLogger("heartbeit.cli").debug("unexpected error", exc_info=True)
        print(f"heartbeit {args.command}: unexpected error ({type(exc).__name__}); run `heartbeit --log-level "
              f"DEBUG {args.command} ...` to see the traceback", file=sys.stderr)
        return BUG_EXIT


if __name__ == "__main__":
    sys.exit(main())
