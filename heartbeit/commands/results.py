"""`heartbeit results compare | promote`: a run's results against the committed ones, and promoting them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """A run's results (results_dir, demo: <workdir>/results) against the committed ones (reference_results).

  compare  per model: metric rows matched, cell ids that match, max and median |ΔAUROC|, and whether the
           largest difference lies within the measured training-seed spread (report.seed_spread_file);
           writes <results_dir>/comparison.json and .md (also the last step of `heartbeit run`)
  promote  copy the run's results over the committed ones (each entry the run wrote is replaced whole;
           others, such as results/bench and results/realism, stay)

Example: heartbeit results compare --profile demo; heartbeit results promote --profile demo"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("action", choices=("compare", "promote"))
    parser.add_argument("--fresh", default=None, help="a run's results folder (default: results_dir)")
    parser.add_argument("--committed", default=None, help="committed results (default: reference_results)")
    add_common_config_args(parser)


def compare_and_write(fresh: Path, committed: Path, noise_file: str) -> dict:
    from heartbeit.eval.run_compare import COMPARISON, compare_results, comparison_markdown
    from heartbeit.utils.io import atomic_write_json, atomic_write_text

    cmp = compare_results(fresh, committed, noise_file or None)
    atomic_write_json(fresh / f"{COMPARISON}.json", cmp)
    md = comparison_markdown(cmp)
    atomic_write_text(fresh / f"{COMPARISON}.md", md)
    print(md)
    return cmp


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.eval.run_compare import promote

    cfg = resolve_config(args)
    fresh = Path(args.fresh or cfg.results_dir)
    committed = Path(args.committed or cfg.reference_results or "")
    if not str(committed) or str(committed) == ".":
        print("heartbeit results: set --committed or reference_results", file=__import__("sys").stderr)
        return 2
    try:
        if args.action == "compare":
            compare_and_write(fresh, committed, cfg.report.seed_spread_file)
        else:
            done = promote(fresh, committed)
            print(json.dumps({"promoted": done, "from": str(fresh), "to": str(committed)}))
    except (OSError, ValueError) as exc:
        print(f"heartbeit results: {exc}", file=__import__("sys").stderr)
        return 2
    return 0
