"""One module per `heartbeit` subcommand, each exposing `HELP`, `add_arguments(parser)` and `run(args) -> int`."""
from __future__ import annotations

import importlib


def load_command(name: str):
    """The module of subcommand `name`, or None when this version has no such command (its own import
    errors are raised, not hidden)."""
    try:
        return importlib.import_module(f"heartbeit.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"heartbeit.commands.{name}":
            return None
        raise
