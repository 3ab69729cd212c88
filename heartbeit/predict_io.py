"""What `heartbeit predict` reads and writes besides the model: where its outputs may go, how they are written,
the labels it scores against, and which inputs count twice.

- **Outputs never destroy.** PRED.csv and its siblings (`<stem>.rejects.csv`, `<stem>.metrics.json`) and the
  saliency folder are checked before any work: refused when one exists (unless --overwrite), is a symbolic
  link (its target would be overwritten), is a folder, or lies inside an input root, the model folder, the
  labels CSV or the key file. Each file is written to a temporary name beside it (mode 0600) and renamed
  into place; folders this run creates are 0700. Cells that a spreadsheet would run as a formula (starting
  with = + - @ or a tab/CR) get a leading apostrophe.
- **Labels are 0/1.** The metrics read one labels-CSV column: `--label-column NAME`, else the model task's
  own column (a number then, when the task thresholds one, e.g. lvef <= 40). A value that is not 0/1 (or
  not a number for a thresholded column) is refused for that row and counted, never read as a negative.
- **Nothing counts twice.** The same file reached twice (two roots, a link, a hard link: same device and
  inode) is refused as `duplicate_input`; the same waveform under two names as `duplicate_recording`."""
from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
from pathlib import Path

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_YES = ("1", "1.0", "true", "yes", "y")
_NO = ("0", "0.0", "false", "no", "n")
_BLANK = ("", "nan", "na", "n/a")


class PredictError(ValueError):
    """A predict run that cannot go ahead (outputs, device, scores); the message says why."""


def sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def output_paths(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    return {"pred": out, "rejects": sibling(out, ".rejects.csv"), "metrics": sibling(out, ".metrics.json")}


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _where(path: Path) -> Path:
    """`path` resolved through its folder, not through itself (a link named as --out stays the link)."""
    return path.parent.resolve() / path.name


def check_outputs(out: str | Path, inputs: list[str], protected: list[str | Path], saliency: str | None,
                  overwrite: bool, siblings: bool = True) -> dict[str, Path]:
    """The output paths (`out` alone unless `siblings`), or PredictError naming the first that may not be
    written (see the module doc)."""
    paths = output_paths(out) if siblings else {"pred": Path(out)}
    roots = [Path(i).resolve() for i in inputs]
    kept = [Path(p).resolve() for p in protected if p]
    for name, path in paths.items():
        flag = "--out" if name == "pred" else f"--out's {path.name}"
        if path.is_symlink():
            raise PredictError(f"{flag} {path}: is a symbolic link (writing would replace what it points to)")
        if path.is_dir():
            raise PredictError(f"{flag} {path}: is a folder; name a CSV file")
        if path.exists() and not stat.S_ISREG(os.stat(path).st_mode):
            raise PredictError(f"{flag} {path}: exists and is not a regular file")
        if path.exists() and not overwrite:
            raise PredictError(f"{flag} {path}: exists; pass --overwrite to replace it")
        where = _where(path)
        if _inside(where, roots):
            raise PredictError(f"{flag} {path}: inside an input (outputs never go where inputs are read)")
        if _inside(where, kept):
            raise PredictError(f"{flag} {path}: is or lies inside the model folder, the labels CSV or the key file")
    if saliency:
        folder = Path(saliency)
        if folder.is_symlink():
            raise PredictError(f"--saliency {folder}: is a symbolic link")
        if folder.exists() and not folder.is_dir():
            raise PredictError(f"--saliency {folder}: exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise PredictError(f"--saliency {folder}: exists and is not empty; pass --overwrite to write into it")
        if _inside(_where(folder), roots + kept):
            raise PredictError(f"--saliency {folder}: inside an input, the model folder or the labels CSV")
    return paths


def private_folder(folder: Path) -> None:
    """Create `folder` and any missing parents with mode 0700 (existing folders keep their mode)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in missing:
        with contextlib.suppress(OSError):
            os.chmod(p, 0o700)


def write_private(path: Path, data: bytes | str) -> None:
    """Write `path` atomically with mode 0600: a temporary file beside it, then renamed over it (a link at
    `path` is replaced, never followed)."""
    private_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def spreadsheet_safe(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Text cells that a spreadsheet would evaluate as a formula, prefixed with an apostrophe."""
    df = df.copy()
    for col in columns:
        if col in df.columns:
            df[col] = [("'" + v) if isinstance(v, str) and v.startswith(FORMULA_START) else v for v in df[col]]
    return df


# ---- duplicates ------------------------------------------------------------------------------------------

def same_file_duplicates(files: list) -> tuple[list, list[tuple[str, str, str]]]:
    """(files without repeats, rejects) where a repeat is a file already listed (same device and inode)."""
    seen: dict[tuple[int, int], str] = {}
    kept, rejects = [], []
    for item in files:
        try:
            st = os.stat(item.path)
            ident = (st.st_dev, st.st_ino)
        except OSError:
            kept.append(item)  # the reader refuses it with its own reason
            continue
        if ident in seen:
            rejects.append((item.rel, "duplicate_input", f"{item.rel}: the same file as {seen[ident]} (listed twice, "
                                                         "or a link to it)"))
            continue
        seen[ident] = item.rel
        kept.append(item)
    return kept, rejects


# ---- labels ----------------------------------------------------------------------------------------------

def label_source(config: dict, task: str, label_column: str | None, csv_columns: list[str]) -> dict:
    """Which CSV column the metrics read and how: {column, rule (a TaskSpec rule or None for 0/1), task column,
    differs_from_task}."""
    definition = config["task_definitions"][task]
    if label_column:
        same = label_column == definition["column"]
        return {"column": label_column, "rule": definition["positive"] if same and definition["positive"] != "== 1"
                else None, "task_column": definition["column"], "differs_from_task": not same}
    column, rule = definition["column"], definition["positive"]
    if column == "lvef_le40" and column not in csv_columns and "lvef" in csv_columns:
        column, rule = "lvef", "<= 40"  # as ingest derives the flag from the percentage
    return {"column": column, "rule": rule if rule != "== 1" else None, "task_column": definition["column"],
            "differs_from_task": False}


def read_label_column(path: str | Path, key: str, source: dict) -> tuple[dict[str, float], int]:
    """({key value: 0/1/NaN (missing)/inf (refused)}, rows refused) of one labels-CSV column. Errors name the
    file, column and row, never a key or a cell."""
    from heartbeit.config.tasks import TaskSpec
    from heartbeit.data.ingest.labels import LabelError, read_table

    path = Path(path)
    df = read_table(path, key)
    column = source["column"]
    if column not in df.columns:
        raise LabelError(f"{path.name}: no column {column!r} (the model's task column, or name one with "
                         "--label-column)")
    spec = TaskSpec("x", source["rule"]) if source["rule"] else None
    out: dict[str, float] = {}
    refused = 0
    for i, (k, raw) in enumerate(zip(df[key], df[column]), start=2):
        k = k.strip()
        if not k:
            continue
        if k in out:
            raise LabelError(f"{path.name}: row {i} repeats the key of an earlier row")
        v = raw.strip().lower()
        if v in _BLANK:
            out[k] = math.nan
        elif spec is None:
            out[k] = 1.0 if v in _YES else 0.0 if v in _NO else math.inf
        else:
            try:
                x = float(v)
            except ValueError:
                x = math.inf
            out[k] = float(spec.apply(pd.Series([x]))[0]) if math.isfinite(x) else math.inf
        refused += int(out[k] == math.inf)
    return out, refused
