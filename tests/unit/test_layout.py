"""The code's layout rules: one stage list drives `heartbeit run`, the CLI and the Slurm chain; one run layout
owns the paths and one records module the file names; every import, top-level or inside a function, keeps to
the layer table (tests/helpers/layer_table.py, shown in docs/architecture-layers.md); no import cycle."""
import argparse
import ast
from pathlib import Path

from helpers import layer_table
from heartbeit.config import load_config
from heartbeit.config.layout import RunLayout
from heartbeit.config.stages import PIPELINE, SLURM_JOBS, STAGE_NAMES

PKG = Path(__file__).resolve().parents[2] / "heartbeit"
DOC = PKG.parent / "docs" / "architecture-layers.md"


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Every module a file imports at run time, at any depth (relative imports resolved against its package,
    by default the one it sits in; imports for type checkers only, under `if TYPE_CHECKING:`, are not run)."""
    if package is None:
        package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            mod = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_one_stage_list_drives_run_cli_and_slurm(tmp_path):
    from heartbeit.cli import COMMANDS
    from heartbeit.commands.run import stages
    from heartbeit.config.slurm import STAGES, SiteConfig
    from heartbeit.slurm_submit import chain_jobs

    assert all(step.argv[0] in COMMANDS for stage in PIPELINE for step in stage.steps)
    assert " -> ".join(STAGE_NAMES) in COMMANDS["run"]
    cfg = load_config("ci", overrides=[f"workdir={tmp_path}"])
    args = argparse.Namespace(profile="ci", config=None, overrides=[], workdir=str(tmp_path), no_progress=True)
    planned = stages(cfg, args)
    assert [name for name, _ in planned] == list(STAGE_NAMES)
    assert [argv[:2] for _, invs in planned for argv in invs][-3:] == [["matrix", "plan"], ["matrix", "run"],
                                                                     ["report", "--profile"]]
    assert STAGES == SLURM_JOBS == ("prepare", "encode", "pretrain", "plan", "matrix", "report")
    jobs = chain_jobs(cfg, SiteConfig(), ["--profile", "ci"], tmp_path)
    assert list(dict.fromkeys(j.stage for j in jobs)) == list(SLURM_JOBS)
    assert [j.name for j in jobs if j.stage == "encode"] == ["encode", "gather"]  # an array, then one gather
    assert [j.stage for j in chain_jobs(cfg, SiteConfig(), [], tmp_path, start="plan")] == ["plan", "matrix", "report"]
    # a finished synth stage is skipped, a pretraining checkpoint resumes: both found through the run layout
    layout = RunLayout.of(cfg)
    layout.synth_record.parent.mkdir(parents=True)
    layout.synth_record.write_text("{}")
    layout.pretrain_latest.parent.mkdir(parents=True)
    layout.pretrain_latest.write_text("step1\n")
    planned = dict(stages(cfg, args))
    assert planned["synth"] == [] and "--resume" in planned["pretrain"][0]


def test_run_layout_owns_the_paths(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.cells == tmp_path / "matrix" / "cells" and layout.plan == tmp_path / "matrix" / "plan.json"
    assert layout.images == tmp_path / "images" and layout.tokenizer_file.parent == layout.tokenizer_dir
    # no module but the layout spells a run folder's layout out
    spelled = ('/ "matrix" / "cells"', '/ "tokenizer" / "tokenizer.safetensors"', '"complete.json"',
               '/ "report" / "scores"', '"predictions.parquet"', '"cell.json"')
    for path in PKG.rglob("*.py"):
        if path.name in ("layout.py", "records.py"):
            continue
        text = path.read_text()
        assert not [s for s in spelled if s in text], path




def test_no_library_module_over_500_lines():
    """Modules stay small enough to read in one sitting (split by responsibility, not mechanically)."""
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """{module: the heartbeit modules it imports} over every file of the package; an imported name resolves to
    the longest module it names (`from heartbeit.config import load_config` -> heartbeit.config)."""
    paths = {module_name(p): p for p in PKG.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    return {mod: {r for m in imports_of(path) if m.split(".")[0] == "heartbeit" and (r := resolve(m)) and r != mod}
            for mod, path in paths.items()}


def test_layer_table_holds_for_every_import():
    graph = module_graph()
    unplaced = sorted(m for m in graph if layer_table.group_of(m) is None)
    assert not unplaced, f"modules in no group of tests/helpers/layer_table.py: {unplaced}"
    breaks = sorted(f"{a} ({layer_table.group_of(a)}) imports {b} ({layer_table.group_of(b)})"
                    for a, targets in graph.items() for b in targets if not layer_table.allowed(a, b))
    assert not breaks, "imports against the layer table (docs/architecture-layers.md):\n" + "\n".join(breaks)


def test_layer_table_states_the_rules_of_the_issue():
    """The rules the table must keep, whatever else changes in it (a row moved by mistake fails here)."""
    never = {"config": ("data", "train", "eval", "matrix"), "matrix": ("train",), "eval": ("train",),
             "models": ("data", "train", "eval", "distributed"), "distributed": ("models", "train", "eval")}
    for group, forbidden in never.items():
        importer = f"heartbeit.{group}.x" if group != "matrix" else "heartbeit.matrix"
        for other in forbidden:
            imported = f"heartbeit.{other}.x" if other != "matrix" else "heartbeit.matrix"
            assert not layer_table.allowed(importer, imported), (group, other)
    assert not layer_table.allowed("heartbeit.data.x", "heartbeit.commands.x")  # library never imports the CLI
    assert layer_table.group_of("heartbeit.config.preflight") == "preflight"
    assert layer_table.group_of("heartbeit.config.layout") == "config"


def test_layer_check_sees_imports_inside_functions(tmp_path):
    """The walk reads imports at any depth and skips only TYPE_CHECKING blocks."""
    path = tmp_path / "probe.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from heartbeit.train import finetune\n"
                    "def f():\n    from heartbeit.train.pretrain import pretrain\n    from ..data.loading import loader\n")
    found = imports_of(path, package="heartbeit.config")
    assert {"heartbeit.train.pretrain", "heartbeit.data.loading.loader"} <= found and "heartbeit.train.finetune" not in found
    assert not layer_table.allowed("heartbeit.config._probe_layers", "heartbeit.train.pretrain")


def test_no_import_cycle_between_modules():
    graph = module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph.get(mod, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, cycles


def test_layer_doc_is_the_table():
    assert DOC.read_text() == layer_table.render(), \
        "docs/architecture-layers.md differs from tests/helpers/layer_table.py: python tests/helpers/layer_table.py > " + str(DOC.name)


NAME_HOMES = ("records.py",)  # the only module that spells a file name (config/layout.py builds paths from them)


def owned_names() -> dict[str, str]:
    """{file name: its constant(s)} of heartbeit/records.py: every module-level string constant that names a file,
    a dotted folder or a dotted name prefix (it holds a '.'); extensions (`*_SUFFIX`) and plain folder
    words ("plan", "private": ordinary words elsewhere) are owned there but not searched for."""
    tree = ast.parse((PKG / "records.py").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
            values = [value] if isinstance(value, ast.Constant) else getattr(value, "elts", [])
            for v in values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str) and not name.endswith("_SUFFIX") \
                        and "." in v.value:
                    out[v.value] = f"{out[v.value]}/{name}" if v.value in out else name
    return out


def code_strings(tree: ast.AST):
    """Every string literal of a module that the code uses (parts of f-strings included), with its line;
    docstrings are prose for readers, not names the code opens, so they are skipped."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def spells(literal: str, name: str) -> bool:
    """Does a string literal spell `name`? Equal to it, or (a path, no whitespace: prose such as an error
    message may mention a file) one of its '/' segments is it, or it starts with a dotted prefix ('.tmp-')."""
    if literal == name:
        return True
    if any(c.isspace() for c in literal):
        return False
    if name.startswith(".") and name.endswith("-") and literal.startswith(name):
        return True
    return name in literal.split("/")


def test_file_names_have_one_home():
    """Every file name of a corpus, image set, run, cell and export is a constant of heartbeit/records.py (paths:
    heartbeit/config/layout.py); writers and readers import it. No other library module spells one."""
    names = owned_names()
    assert {"index.json", "manifest.parquet", "metadata.parquet", "log.jsonl", "curves.jsonl", ".running",
            ".failed", ".tmp-", "cell.json", "predictions.parquet"} <= set(names)
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in NAME_HOMES:
            continue
        for line, literal in code_strings(ast.parse(path.read_text())):
            found += [f"{rel}:{line}: {literal!r} spells {names[n]} ({n!r})" for n in names if spells(literal, n)]
    assert not found, "import the name from heartbeit.records instead:\n" + "\n".join(found)


def test_file_name_check_reads_code_not_prose():
    tree = ast.parse('"""Writes index.json."""\nimport x\ndef f(d):\n    """Reads cell.json."""\n'
                     '    return d / "index.json", f"{d}/.tmp-{x}", "no cell.json here", d / "sub/log.jsonl"\n')
    literals = [v for _, v in code_strings(tree)]
    names = owned_names()
    hits = sorted({names[n] for v in literals for n in names if spells(v, n)})
    assert hits == ["IMAGES_INDEX", "PRETRAIN_LOG", "TMP_PREFIX"], hits
