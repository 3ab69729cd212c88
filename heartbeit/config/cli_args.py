"""The run configuration's command-line arguments (--profile / --config / --set / --workdir), shared by every
stage's command: one definition, so every command reads a run's config the same way."""
from __future__ import annotations

import argparse


def add_common_config_args(parser: argparse.ArgumentParser) -> None:
    """--profile / --config / --set, shared by every stage that reads the run configuration."""
    parser.add_argument("--profile", default="ci", help="profile in configs/: ci, demo, workstation, paper (default ci)")
    parser.add_argument("--config", default=None, help="extra YAML merged over the profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set pretrain.steps=10 (repeatable)")
    parser.add_argument("--workdir", default=None, help="run directory (default: the profile's workdir)")


def resolve_config(args: argparse.Namespace):
    from heartbeit.config import load_config

    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "workdir", None):
        overrides.append(f"workdir={args.workdir}")
    return load_config(getattr(args, "profile", None), getattr(args, "config", None), overrides)


def common_argv(args: argparse.Namespace) -> list[str]:
    """The arguments above as given (relative paths kept), to pass on to another `heartbeit` command."""
    out = ["--profile", args.profile]
    if args.config:
        out += ["--config", args.config]
    for o in args.overrides or []:
        out += ["--set", o]
    if args.workdir:
        out += ["--workdir", args.workdir]
    return out
