"""Labels CSV: one row per ECG (or per patient), joined on the hospital's key (MRN, accession or ECG id).

Columns (any subset): `lvef` (percent), `lvef_le40` (0/1 flag, derived from `lvef` when absent), `hcm`,
`stemi` (0/1), plus the columns `ingest.label_columns` declares (your own labels: numbers or 0/1 flags).
A blank cell is *missing* and stays NaN - never a negative. Invalid values are errors that
name the CSV, the column and the row number (never a key or any other cell: a CSV without a header row
would otherwise print a patient's row as its "column names").
A row whose `lvef` and `lvef_le40` disagree (lvef=30 with lvef_le40=0) keeps neither: both are left missing
and the row is counted (`LabelTable.conflicting_rows`, reported in summary.json and as a warning)."""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pandas as pd

from heartbeit.records import TASK_COLUMNS

from heartbeit.data.reasons import IngestError, Reason

FLAG_COLUMNS = ("lvef_le40", "hcm", "stemi")
LVEF_RANGE = (1.0, 95.0)


def corpus_label_columns(cfg) -> tuple[str, ...]:
    """Every label column a corpus made under IngestConfig `cfg` carries: the paper's, the declared CSV
    columns, then the header map's labels (sorted). The one list publish, deid and the summary use."""
    from heartbeit.data.ingest.header_labels import HeaderLabelMap

    extra = [*cfg.label_columns, *HeaderLabelMap.from_config(cfg).names]
    return TASK_COLUMNS + tuple(dict.fromkeys(c for c in extra if c not in TASK_COLUMNS))


class LabelError(ValueError):
    """A labels CSV that cannot be used; the message names file, column and row."""


class LabelTable(dict):
    """{key value: {task: value}}, plus how many rows had conflicting labels."""

    conflicting_rows: int = 0


def _flag(value: str, path: Path, column: str, row: int) -> float:
    v = value.strip().lower()
    if v == "" or v in ("nan", "na", "n/a"):
        return math.nan
    if v in ("1", "1.0", "true", "yes", "y"):
        return 1.0
    if v in ("0", "0.0", "false", "no", "n"):
        return 0.0
    raise LabelError(f"{path.name}: column {column!r} row {row} must be 0/1 or blank")


def _number(value: str, path: Path, column: str, row: int) -> float:
    v = value.strip().lower()
    if v in ("true", "yes", "y", "false", "no", "n"):
        return _flag(v, path, column, row)
    if v in ("", "nan", "na", "n/a"):
        return math.nan
    try:
        x = float(v)
    except ValueError:
        raise LabelError(f"{path.name}: column {column!r} row {row} is not a number, 0/1 or blank") from None
    if not math.isfinite(x):
        raise LabelError(f"{path.name}: column {column!r} row {row} is not finite")
    return x


def read_table(path: str | Path, key: str) -> pd.DataFrame:
    """The labels CSV as text cells, with its key column checked (ingest and predict read it alike)."""
    path = Path(path)
    try:  # a FIFO or device would block the reader forever: only a regular file is read
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        raise LabelError(f"{path.name}: cannot read labels CSV ({type(exc).__name__})") from None
    if not regular:
        raise LabelError(f"{path.name}: the labels CSV is not a regular file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LabelError(f"{path.name}: the labels CSV is empty (no header row)") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path.name}: cannot read labels CSV ({type(exc).__name__})") from None
    if key not in df.columns:
        known = [c for c in df.columns if c in (key, *TASK_COLUMNS, "mrn", "accession", "ecg_id", "patient_id")]
        raise LabelError(f"{path.name}: no key column {key!r} in the header row (recognised columns: "
                         f"{', '.join(known) or 'none - is the first row a header?'})")
    return df


def load_labels(path: str | Path, key: str, extra_columns: tuple[str, ...] | list[str] = ()) -> LabelTable:
    """{key value: {lvef, lvef_le40, hcm, stemi, *extra_columns}} with NaN for missing."""
    path = Path(path)
    df = read_table(path, key)
    absent = [c for c in extra_columns if c not in df.columns]
    if absent:
        raise LabelError(f"{path.name}: no column {absent[0]!r}, which ingest.label_columns declares")
    present = [c for c in (*TASK_COLUMNS, *extra_columns) if c in df.columns]
    if not present:
        raise LabelError(f"{path.name}: none of the label columns {', '.join(TASK_COLUMNS)} "
                         "(your own columns must be declared in ingest.label_columns)")
    out = LabelTable()
    for i, row in enumerate(df.to_dict("records"), start=2):  # row 1 is the header
        k = row[key].strip()
        if not k:
            continue
        labels = {c: math.nan for c in (*TASK_COLUMNS, *extra_columns)}
        for c in extra_columns:
            labels[c] = _number(row[c], path, c, i)
        if "lvef" in row and row["lvef"].strip():
            try:
                lvef = float(row["lvef"])
            except ValueError:
                raise LabelError(f"{path.name}: column 'lvef' row {i} is not a number") from None
            if not LVEF_RANGE[0] <= lvef <= LVEF_RANGE[1]:
                raise LabelError(f"{path.name}: column 'lvef' row {i} = {lvef} outside {LVEF_RANGE}")
            labels["lvef"] = lvef
            labels["lvef_le40"] = float(lvef <= 40.0)
        for c in FLAG_COLUMNS:
            if c in row:
                flag = _flag(row[c], path, c, i)
                if c == "lvef_le40" and not math.isnan(labels["lvef"]) and not math.isnan(flag) \
                        and flag != labels["lvef_le40"]:
                    labels["lvef"] = labels["lvef_le40"] = math.nan  # which one is wrong is unknowable
                    out.conflicting_rows += 1
                    continue
                if not math.isnan(flag):
                    labels[c] = flag
        if k in out:
            raise LabelError(f"{path.name}: row {i} repeats the key of an earlier row")
        out[k] = labels
    return out


def key_value(meta: dict, key: str) -> str | None:
    """The value a record is joined to the labels CSV on (an identifier: it never leaves the worker but for
    an in-memory join)."""
    value = meta.get(key)  # "record": the file stem every reader sets (ingest.read_record)
    if value is None and key == "mrn":
        value = meta.get("patient_id")
    return str(value).strip() if value is not None else None


def label_row(meta: dict, table: dict[str, dict[str, float]] | None, key: str) -> dict[str, float] | None:
    """The labels CSV row of one record, or None (no table, no key, no row)."""
    if not table:
        return None
    value = key_value(meta, key)
    return table.get(value) if value is not None else None


def join_labels(meta: dict, table: dict[str, dict[str, float]] | None, key: str) -> dict[str, float]:
    """Labels for one record; NaN everywhere when the record has no key or no row."""
    row = label_row(meta, table, key)
    return dict(row) if row is not None else {c: math.nan for c in TASK_COLUMNS}


__all__ = ["load_labels", "read_table", "key_value", "join_labels", "label_row", "LabelTable", "LabelError", "TASK_COLUMNS",
           "corpus_label_columns", "IngestError", "Reason"]
