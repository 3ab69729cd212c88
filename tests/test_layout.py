"""The code's layout rules: one stage list drives `heartbeit run`, the CLI and the Slurm chain; one
run layout owns the paths; library code never imports the CLI; distributed/ imports neither models/ nor train/."""
import argparse
import ast
from pathlib import Path

from heartbeit.config import load_config
from heartbeit.config.layout import RunLayout
from heartbeit.config.stages import PIPELINE, SLURM_JOBS, STAGE_NAMES

PKG = Path(__file__).resolve().parents[1] / "heartbeit"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports at run time, at any depth (relative imports resolved against the package;
    imports for type checkers only, under `if TYPE_CHECKING:`, are not run)."""
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
        if path.name == "layout.py":
            continue
        text = path.read_text()
        assert not [s for s in spelled if s in text], path


def test_library_never_imports_the_cli_and_distributed_stays_low():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel in ("cli.py", "__main__.py") or rel.startswith("commands/"):
            continue
        bad = {m for m in imports_of(path) if m.startswith(("heartbeit.cli", "heartbeit.commands"))}
        assert not bad, (rel, bad)
    for path in (PKG / "distributed").glob("*.py"):
        bad = {m for m in imports_of(path) if m.startswith(("heartbeit.models", "heartbeit.train"))}
        assert not bad, (path.name, bad)


def test_distributed_has_no_import_cycle():
    graph = {p.stem: {m.split(".")[2] for m in imports_of(p) if m.startswith("heartbeit.distributed.")
                      and len(m.split(".")) > 2} for p in (PKG / "distributed").glob("*.py")}
    graph = {k: {m for m in v if m in graph and m != k} for k, v in graph.items()}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    assert not [m for m in graph if reaches(m, m)], graph


def test_no_library_module_over_500_lines():
    """Modules stay small enough to read in one sitting (split by responsibility, not mechanically)."""
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
