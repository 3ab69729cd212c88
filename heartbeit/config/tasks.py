"""Tasks: the paper's three and your own.

A task is a binary label per ECG. The paper's three (`PAPER_TASKS`: lvef_le40, hcm, stemi) are corpus label
columns used as they are, and stay the defaults of `matrix.tasks`. Your own tasks are declared in
`render.tasks` (the render stage draws labels into the shards, so its settings say what a task is):

    render:
      tasks:
        lvh: {column: lvh}                       # a header-map column (ingest.dx_codes / dx_patterns)
        ef_below_50: {column: lvef, positive: "< 50"}   # a continuous labels-CSV column, thresholded
        my_flag: {column: my_flag}               # a 0/1 column declared in ingest.label_columns
    matrix:
      tasks: [lvef_le40, hcm, stemi, lvh, ef_below_50]

`column` is a corpus label column; `positive` is the rule making a value positive (`== 1` by default;
`==`, `!=`, `>=`, `<=`, `>`, `<` against a number). Every other known value is negative; a missing value stays
missing (never a negative). A declared task then goes through splits, per-task stratified fractions (its
own labelled pool), the matrix, Slurm arrays, tables and figures like the paper's three."""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from .core import ConfigError

PAPER_TASKS = ("lvef_le40", "hcm", "stemi")
TASK_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RULE = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")
_OPS = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt,
        "<": operator.lt}


@dataclass
class TaskSpec:
    column: str = ""  # the corpus label column the task reads
    positive: str = "== 1"  # the rule that makes a value positive

    def validate(self) -> None:
        if not TASK_NAME.fullmatch(self.column):
            raise ConfigError(f"column must be a corpus label column name (lower-case), got {self.column!r}")
        if not _RULE.fullmatch(self.positive):
            raise ConfigError(f"positive must be '<op> <number>' with op one of {', '.join(_OPS)}, "
                              f"got {self.positive!r}")

    def apply(self, values):
        """0/1 (float) per value, NaN where the value is missing; `values` is a pandas Series."""
        import numpy as np

        op, threshold = _RULE.fullmatch(self.positive).groups()
        x = values.astype("float64")
        return np.where(x.isna(), np.nan, _OPS[op](x, float(threshold)).astype("float64"))


def all_tasks(render_cfg) -> tuple[str, ...]:
    """Every task the render stage labels: the paper's three, then the declared ones in their order."""
    return PAPER_TASKS + tuple(t for t in render_cfg.tasks if t not in PAPER_TASKS)


def validate_declared(tasks: dict) -> None:
    for name in tasks:
        if not TASK_NAME.fullmatch(name):
            raise ConfigError(f"tasks.{name}: task names are lower-case letters, digits and '_', starting with a letter")
        if name in PAPER_TASKS:
            raise ConfigError(f"tasks.{name}: the paper's tasks are built in; declare your own under another name")


def check_matrix_tasks(cfg) -> None:
    """matrix.tasks must name the paper's tasks or tasks declared in render.tasks (RunConfig-level check)."""
    known = all_tasks(cfg.render)
    bad = [t for t in cfg.matrix.tasks if t not in known]
    if bad:
        raise ConfigError(f"matrix.tasks: unknown {bad}; valid: {list(known)} (declare your own in render.tasks)")
