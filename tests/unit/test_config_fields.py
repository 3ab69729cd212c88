"""Every accepted config key has an effect: each field of every config dataclass is read somewhere in the
package outside its validation (as an attribute, a getattr name or a mapping key). A key that
nothing reads is accepted, changes ids and hashes, and does nothing: that is a bug this test catches."""
from __future__ import annotations

import ast
import functools
import dataclasses
from pathlib import Path

import pytest

from heartbeit.config import RunConfig
from heartbeit.config.slurm import SiteConfig

PKG = Path(__file__).resolve().parents[2] / "heartbeit"


def config_fields(roots=(RunConfig, SiteConfig)) -> set[tuple[str, str]]:
    """(dataclass, field) for the whole RunConfig and SiteConfig trees."""
    out: set[tuple[str, str]] = set()
    todo = list(roots)
    seen = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f in dataclasses.fields(cls):
            out.add((cls.__name__, f.name))
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            items = default if isinstance(default, list) else [default]
            todo += [type(v) for v in items if dataclasses.is_dataclass(v)]
    return out


class _Reads(ast.NodeVisitor):
    """Attribute names and string constants (getattr names, mapping keys), except inside `validate`
    methods: checking a value is not using it."""

    def __init__(self):
        self.names: set[str] = set()
        self.modules: set[str] = set()  # names bound by imports in the current file

    def visit_Module(self, node):
        self.modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(node)
                        if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        if node.name != "validate":
            self.generic_visit(node)

    def visit_Attribute(self, node):
        # `re.compile` is a module's function, not a read of a `compile` setting
        if not (isinstance(node.value, ast.Name) and node.value.id in self.modules):
            self.names.add(node.attr)
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, str):
            self.names.add(node.value)


@functools.lru_cache(maxsize=1)
def names_read() -> frozenset[str]:
    reads = _Reads()
    for path in PKG.rglob("*.py"):
        reads.visit(ast.parse(path.read_text(), filename=str(path)))
    return frozenset(reads.names)


def unread(roots=(RunConfig, SiteConfig)) -> list[str]:
    read = names_read()
    return sorted(f"{cls}.{name}" for cls, name in config_fields(roots) if name not in read)


def test_every_config_field_is_read_outside_its_definition():
    missing = unread()
    assert not missing, f"config fields nothing reads (accepted keys without an effect): {missing}"


def test_the_check_sees_an_unread_field():
    @dataclasses.dataclass
    class Probe:
        epochs: float = 0.0  # read (heartbeit.train.schedule)
        never_read_anywhere_xyz: int = 0

    assert unread((Probe,)) == ["Probe.never_read_anywhere_xyz"]


@pytest.mark.parametrize("key", ["compile", "allow_cpu", "allow_random_init", "epochs", "global_batch",
                                 "lr_batch", "warmup_epochs", "vq_restart_below"])
def test_new_keys_are_read(key):
    assert key in names_read()
