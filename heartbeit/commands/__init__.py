"""One module per `heartbeit` subcommand, each exposing `HELP`, `add_arguments(parser)` and `run(args) -> int`."""
from __future__ import annotations

import importlib
import sys

# Exit codes of every `heartbeit` command (docs/errors.md): 0 done; 2 refused - a bad input, argument, model
# folder or environment (full disk, missing GPU), said in one line on stderr; 1 an unexpected error (a bug):
# one line, the traceback with --log-level DEBUG; 3 a command this version does not have; 130 interrupted.
ERROR_EXIT = 2
BUG_EXIT = 1


def fail(command: str, message: object) -> int:
    """Print one refusal line on stderr (control characters escaped) and return ERROR_EXIT."""
    from heartbeit.utils.text import safe_text

    print(f"heartbeit {command}: {safe_text(message, 800)}", file=sys.stderr)
    return ERROR_EXIT


def describe_os_error(exc: OSError, inputs: list | None = None) -> str:
    """An OSError as one line: what failed (errno name) and the file, unless the file lies under an input
    root (a name below a root may carry an identifier)."""
    import errno
    from pathlib import Path

    code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    text = f"{exc.strerror or type(exc).__name__} ({code})"
    if exc.filename is not None:
        name = Path(str(exc.filename))
        roots = [Path(str(i)).resolve() for i in inputs or []]
        try:
            resolved = name.resolve()
        except OSError:
            resolved = name
        if not any(resolved == r or r in resolved.parents for r in roots):
            text += f": {exc.filename}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        text += " - free space or make the folder writable (or choose another --out) and run again"
    return text


def load_command(name: str):
    """The module of subcommand `name` (heartbeit/commands/<name>.py; its import errors are raised)."""
    return importlib.import_module(f"heartbeit.commands.{name}")
