"""The documentation stays navigable and true to the code: a short README, links that resolve (to a file and,
with `#anchor`, to a heading of it), and every `heartbeit ...` / `make ...` command written in a code span or
code block exists — the command in `heartbeit.cli.COMMANDS`, its subcommand and its `--flags` in the
command's own parser, the target in the Makefile, a path of this repository on disk. Fast: nothing runs, each command module is only imported."""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 220


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


# ---------------------------------------------------------------- markdown: code, prose, links, headings
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def split_code(text: str) -> tuple[list[str], str]:
    """(code snippets: each fenced block's logical lines and each inline span, prose with code removed)."""
    code: list[str] = []
    prose: list[str] = []
    in_block = False
    block: list[str] = []
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if in_block:
                code.extend(join_continuations(block))
                block = []
            in_block = not in_block
            continue
        if in_block:
            block.append(line)
            continue
        code.extend(m.group(2) for m in INLINE_CODE.finditer(line))
        prose.append(INLINE_CODE.sub("", line))
    code.extend(join_continuations(block))
    return code, "\n".join(prose)


def join_continuations(lines: list[str]) -> list[str]:
    """Shell lines with their `\\`-continued lines joined (a command's flags may sit on the next line)."""
    out, cur = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
        else:
            out.append(cur + line)
            cur = ""
    if cur:
        out.append(cur)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (word characters, '-' and ' ' kept),
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    in_block = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            in_block = not in_block
            continue
        m = None if in_block else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def link_problems(path: Path) -> tuple[list[str], int]:
    """Every relative link of a Markdown file that does not resolve, and how many were checked."""
    _, prose = split_code(path.read_text(encoding="utf-8"))
    problems, checked = [], 0
    for m in LINK.finditer(prose):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        checked += 1
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(ROOT)}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            problems.append(f"{path.relative_to(ROOT)}: link to {target}: no heading #{anchor} in {dest.name}")
    return problems, checked


# ---------------------------------------------------------------- commands: heartbeit ... and make ...
HEARTBEIT_CALL = re.compile(r"(?:^|(?<=[\s/;&|(]))heartbeit[ \t]+(.*)$")
MAKE_CALL = re.compile(r"(?:^|(?<=[\s;&|(]))make[ \t]+(.*)$")
FLAG = re.compile(r"(?<![\w-])(--[a-zA-Z][\w-]*)")


@lru_cache(maxsize=None)
def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser `heartbeit <name>` builds (each command module's documented `add_arguments`)."""
    parser = argparse.ArgumentParser(prog=f"heartbeit {name}")
    importlib.import_module(f"heartbeit.commands.{name}").add_arguments(parser)
    return parser


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser | None]:
    """Words a positional argument accepts from a fixed set: subparsers (with their own parser) or choices."""
    out: dict[str, argparse.ArgumentParser | None] = {}
    for action in parser._actions:
        if action.option_strings or not action.choices:
            continue
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
        else:
            out.update({str(c): None for c in action.choices})
    return out


def top_level_options() -> set[str]:
    from heartbeit import cli

    built = cli.build_parser()
    return options(built[0] if isinstance(built, tuple) else built)


def strip_comment(rest: str) -> str:
    return re.split(r"(?:^|\s)#", rest, maxsplit=1)[0]


def command_problems(snippet: str, commands: dict, targets: set[str]) -> tuple[list[str], int]:
    problems, checked = [], 0
    parts = [part for line in snippet.splitlines() for part in re.split(r"&&|\|\||;", line)]
    for line in parts:
        m = HEARTBEIT_CALL.search(line)
        if m:
            words = strip_comment(m.group(1)).split()
            if words and words[0].startswith("-"):
                checked += 1
                bad = [w for w in words[:1] if w not in top_level_options()]
                problems += [f"`heartbeit {w}`: no such top-level option" for w in bad]
            elif words and re.fullmatch(r"[a-z][\w-]*", words[0].rstrip(",.;:)")):
                name = words[0].rstrip(",.;:)")
                checked += 1
                if name not in commands:
                    problems.append(f"`heartbeit {name}`: not a command of heartbeit.cli.COMMANDS")
                else:
                    problems += invocation_problems(name, words[1:])
        m = MAKE_CALL.search(line)
        if m:
            rest = strip_comment(m.group(1))
            try:
                words = shlex.split(rest)  # PYTEST_ARGS="-k x" is one variable, not a target `x`
            except ValueError:
                words = rest.split()
            for word in words:
                if "=" in word or word.startswith("-"):
                    continue
                if not re.fullmatch(r"[a-z][\w-]*", word):
                    break
                checked += 1
                if word not in targets:
                    problems.append(f"`make {word}`: no such target in the Makefile")
    return problems, checked


def invocation_problems(name: str, words: list[str]) -> list[str]:
    parser = command_parser(name)
    subs = subcommands(parser)
    allowed = options(parser)
    if words and subs and re.fullmatch(r"[a-z][\w-]*", words[0]):
        if words[0] not in subs:
            return [f"`heartbeit {name} {words[0]}`: not one of {sorted(subs)}"]
        if subs[words[0]] is not None:
            allowed |= options(subs[words[0]])
    flags = FLAG.findall(" ".join(words))
    return [f"`heartbeit {name} ... {f}`: no such option" for f in flags if f.split("=")[0] not in allowed]


# ---------------------------------------------------------------- repository paths named in code
TOP_FOLDERS = ("heartbeit", "bench", "tests", "configs", "slurm", "results", "docs", ".ci")
REPO_PATH = re.compile(r"(?<![\w./<>$~-])((?:%s)/[\w./-]*)" % "|".join(map(re.escape, TOP_FOLDERS)))
# `config/layout.py`, `train/mim.py`: a module named relative to the package (only .py files: `models/x` or
# `data/hosp_a/` in a command line are the user's folders, not ours)
PACKAGE_PATH = re.compile(r"(?<![\w./<>$~-])([a-z_]+/[\w/]*\.py)\b")


def path_problems(snippet: str) -> tuple[list[str], int]:
    """Repository paths in a code span or block that do not exist (placeholders such as `<name>` skipped)."""
    problems, checked = [], 0
    for pattern, base in ((REPO_PATH, ROOT), (PACKAGE_PATH, ROOT / "heartbeit")):
        for m in pattern.finditer(snippet):
            if m.end() < len(snippet) and snippet[m.end()] in "<*{$[":
                continue
            path = m.group(1).rstrip(".")
            if base != ROOT and path.split("/")[0] in TOP_FOLDERS:
                continue
            checked += 1
            if not (base / path).exists():
                problems.append(f"`{path}`: no such file or folder in the repository")
    return problems, checked


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}


def cli_commands() -> dict:
    from heartbeit.cli import COMMANDS

    return COMMANDS


# ---------------------------------------------------------------- the tests
def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into a page of docs/")


def test_every_relative_link_resolves():
    problems, checked = [], 0
    for path in doc_files():
        p, n = link_problems(path)
        problems += p
        checked += n
    assert checked > 50, f"only {checked} links found: is the link parser broken?"
    assert not problems, "\n".join(problems)


def test_every_documented_command_exists():
    commands, targets = cli_commands(), make_targets()
    problems, checked = [], 0
    for path in doc_files():
        code, _ = split_code(path.read_text(encoding="utf-8"))
        for snippet in code:
            p, n = command_problems(snippet, commands, targets)
            problems += [f"{path.relative_to(ROOT)}: {x}" for x in p]
            checked += n
    assert checked > 50, f"only {checked} commands found: is the command parser broken?"
    assert not problems, "\n".join(problems)


def test_every_repository_path_in_code_exists():
    """A file or folder of this repository named in a code span or block exists (a module that moved or a
    test that was renamed makes the docs point nowhere)."""
    problems, checked = [], 0
    for path in doc_files():
        code, _ = split_code(path.read_text(encoding="utf-8"))
        for snippet in code:
            p, n = path_problems(snippet)
            problems += [f"{path.relative_to(ROOT)}: {x}" for x in p]
            checked += n
    assert checked > 50, f"only {checked} paths found: is the path parser broken?"
    assert not problems, "\n".join(problems)


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md" and f"({p.name}" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


MISSING = "heartbeit/" + "nosuchmodule.py"  # spelled in two parts: tests/unit/test_pointers.py reads this file too


def test_the_checks_catch_what_they_claim(tmp_path, monkeypatch):
    """The checkers above on a page with one of each mistake: each is reported (so the real tests can fail)."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md) [ok anchor](other.md#a-heading) [self](#page) [web](https://example.org)\n"
        "[gone](missing.md) [bad anchor](other.md#no-such-heading)\n"
        "```bash\nheartbeit nosuchcommand --x\nheartbeit matrix nosuchsub\n"
        "heartbeit run --profile ci \\\n    --no-such-flag\nmake run PROFILE=ci\nmake nosuchtarget\n"
        "heartbeit matrix plan && heartbeit matrix nosuchsecond; make test PYTEST_ARGS=\"-k x\"\n```\n"
        "Inline: `heartbeit synth compare --real DIR` and `.venv/bin/heartbeit bench plan --gpu h100`.\n"
        "Paths: `" + MISSING + "`, `train/nosuch.py`, `cli.py`, `--out models/x`, `heartbeit/<name>.py`.\n")
    problems, checked = link_problems(page)
    assert checked == 5 and len(problems) == 2
    assert "missing.md" in problems[0] and "no-such-heading" in problems[1]
    code, _ = split_code(page.read_text())
    found = [x for s in code for x in command_problems(s, cli_commands(), {"run", "test"})[0]]
    assert any("nosuchcommand" in x for x in found)
    assert any("nosuchsub" in x for x in found)
    assert any("--no-such-flag" in x for x in found)
    assert any("nosuchtarget" in x for x in found)
    assert any("nosuchsecond" in x for x in found)
    assert len(found) == 5, found
    (tmp_path / "heartbeit" / "train").mkdir(parents=True)
    paths = [x for s in code for x in path_problems(s)[0]]
    assert paths == [f"`{MISSING}`: no such file or folder in the repository",
                     "`train/nosuch.py`: no such file or folder in the repository"], paths


@pytest.mark.parametrize("heading, expected", [
    ("Read as untrusted input (predict, embed --model)", "read-as-untrusted-input-predict-embed---model"),
    ("The first GPU session: `bench/gpu_session.sh`", "the-first-gpu-session-benchgpu_sessionsh"),
    ("2. Place the ImageNet weights", "2-place-the-imagenet-weights"),
    ("The paper profile's schedule", "the-paper-profiles-schedule"),
])
def test_anchor_slugs_follow_github(heading, expected):
    assert slug(heading) == expected
