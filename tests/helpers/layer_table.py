"""The layers of the code: the one table that tests/unit/test_layout.py enforces and docs/architecture-layers.md shows.

Rows run top to bottom. A module may import from its own group and from any group in a lower row; a group
never imports a group of its own row or of a higher one. Every import counts, at the top of a file or inside
a function (only imports under `if TYPE_CHECKING:` are exempt: they never run). A module belongs to the group
with the longest matching prefix, so `heartbeit.config.preflight` is its own group above `heartbeit.config`.

Regenerate the doc after changing the table:
    python tests/helpers/layer_table.py > docs/architecture-layers.md
"""
from __future__ import annotations

# (row name, ((group, module prefixes, what it holds), ...)), top to bottom
LAYERS: tuple[tuple[str, tuple[tuple[str, tuple[str, ...], str], ...]], ...] = (
    ("entry points", (
        ("cli", ("heartbeit.cli", "heartbeit.__main__", "heartbeit.commands"),
         "argument parsing and one `run(args)` per `heartbeit <name>`; the only place that wires a trainer "
         "into the matrix runner"),
    )),
    ("applications", (
        ("predict", ("heartbeit.predict", "heartbeit.predict_io"), "`heartbeit predict`: score your own ECGs"),
        ("slurm", ("heartbeit.slurm_submit", "heartbeit.slurm_status"), "the Slurm job chain and its status"),
        ("bench", ("heartbeit.benchsuite",), "`heartbeit bench`: the benchmark suite runner"),
    )),
    ("cost model", (
        ("cost", ("heartbeit.cost",), "a study's run time and resources, before it runs"),
    )),
    ("training", (
        ("train", ("heartbeit.train",), "tokenizer fitting, MIM pretraining, fine-tuning and probing one cell"),
    )),
    ("model package", (
        ("model package", ("heartbeit.modelio", "heartbeit.modelcard", "heartbeit.modelschema"),
         "a trained cell as a self-describing model folder: schema, card, load and save"),
    )),
    ("evaluation", (
        ("eval", ("heartbeit.eval",), "metrics, tables, figures, saliency, the report; reads cells, never "
                                      "trains"),
    )),
    ("planning", (
        ("matrix", ("heartbeit.matrix",), "the benchmark matrix: cells, stable ids, completion records; runs "
                                          "cells through the `train_fn` its caller passes"),
        ("preflight", ("heartbeit.config.preflight",), "checks of the whole configuration before the first "
                                                       "stage (it reads the model table and weights)"),
    )),
    ("data, engine, models", (
        ("data", ("heartbeit.data",), "ingest, synthetic data, rendering, the streaming loader"),
        ("distributed", ("heartbeit.distributed",), "the training engine (local, DDP, DeepSpeed), ranks, "
                                                    "checkpoints, preemption"),
        ("models", ("heartbeit.models",), "HeartBEiT, tokenizers, the signal baseline, weights, the family and "
                                          "precision tables"),
    )),
    ("configuration", (
        ("config", ("heartbeit.config",), "settings per stage, profiles, stage list, run layout (paths)"),
    )),
    ("foundation", (
        ("records", ("heartbeit.records",), "every file name and record format (cell.json, predictions, "
                                            "sanity verdicts, corpus columns)"),
        ("utils", ("heartbeit.utils",), "atomic writes, logging, host sync, text helpers"),
    )),
    ("package", (
        ("package", ("heartbeit",), "`heartbeit/__init__.py`: the version"),
    )),
)


def row_of() -> dict[str, int]:
    """{group: row index} (0 = top)."""
    return {group: i for i, (_, groups) in enumerate(LAYERS) for group, _, _ in groups}


def group_of(module: str) -> str | None:
    """The group of a dotted module name: the group with the longest prefix it matches (None: in no group)."""
    best, best_len = None, -1
    for _, groups in LAYERS:
        for group, prefixes, _ in groups:
            for prefix in prefixes:
                sub = "." in prefix and module.startswith(prefix + ".")  # the package root holds only itself
                if (module == prefix or sub) and len(prefix) > best_len:
                    best, best_len = group, len(prefix)
    return best


def allowed(importer: str, imported: str) -> bool:
    """May module `importer` import module `imported`? Its own group or a lower row."""
    rows = row_of()
    a, b = group_of(importer), group_of(imported)
    return a == b or rows[b] > rows[a]


def render() -> str:
    """docs/architecture-layers.md."""
    lines = [
        "# The layers of the code",
        "",
        "<!-- generated from tests/helpers/layer_table.py: `python tests/helpers/layer_table.py > docs/architecture-layers.md`;",
        "     tests/unit/test_layout.py fails when this file and the table differ -->",
        "",
        "Rows run top to bottom. A module imports from its own group and from the groups of lower rows only:",
        "never from another group of its own row, never upwards. Every import counts, at the top of a file",
        "or inside a function; only imports under `if TYPE_CHECKING:` are exempt (they never run). A module",
        "belongs to the group with the longest matching prefix (`config/preflight.py` is its own group, above",
        "the rest of `config/`). `tests/unit/test_layout.py` reads every import of `heartbeit/` and fails on one",
        "that breaks the table, on a module in no group, and on any import cycle between modules.",
        "",
        "| row | group | modules | what it holds |",
        "|---|---|---|---|",
    ]
    for i, (row, groups) in enumerate(LAYERS):
        for group, prefixes, what in groups:
            mods = ", ".join(f"`{p.removeprefix('heartbeit.').replace('.', '/')}`" for p in prefixes)
            lines.append(f"| {i + 1}. {row} | {group} | {mods} | {what} |")
    lines += [
        "",
        "What the table means in practice:",
        "",
        "- `config` imports nothing from `data`, `train`, `eval` or `matrix`; only `config/preflight.py` reads",
        "  the models (the family table, weights).",
        "- `matrix` plans and runs cells but never imports `train`: `matrix.run_cells` takes the trainer as a",
        "  function (`train_fn`), which the command layer (`commands/matrix.py`) supplies.",
        "- `eval` never imports `train`; what both need (the sanity verdict record, file names, prediction",
        "  columns) sits at the bottom, in `records.py`.",
        "- `models` imports nothing from `data`, `train`, `eval` or `distributed`, and `distributed` nothing",
        "  from `models`, `train` or `eval` (same row: siblings do not import each other).",
        "- File names and record formats have one home, `heartbeit/records.py`; where each file sits in a run",
        "  folder is `config/layout.py`. No other module spells a file name itself",
        "  (`tests/unit/test_layout.py::test_file_names_have_one_home`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
