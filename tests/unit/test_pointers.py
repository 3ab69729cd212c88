"""Comments and docstrings say why, and what they point to is in the repository: no ticket numbers of a
tracker the repository does not hold, no file that is not in it (a path under one of the repository's own
top-level folders must exist)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("heartbeit", "tests", "bench")
SUFFIXES = (".py", ".sh", ".md")
# a ticket number (the word issue and a number), or the notes file that was never committed
TICKET = re.compile(r"\b[Ii]ssues?\s+#?\d")
MISSING_NOTES = re.compile("FACTS" + r"\.md")
# "heartbeit/train/mim.py", "docs/selection.md", "bench/loader.py" (not "microsoft/unilm beit/...")
REPO_PATH = re.compile(r"(?<![\w./-])((?:heartbeit|tests|bench|docs|configs|slurm)/[\w./-]*\w)")


def _files() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*")
                  if p.suffix in SUFFIXES and p.is_file() and "__pycache__" not in p.parts)


def test_no_ticket_numbers_or_missing_notes():
    found = []
    for path in _files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if TICKET.search(line) or MISSING_NOTES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "say the why, not the ticket or the notes file:\n" + "\n".join(found)


def test_paths_named_in_the_code_exist():
    found = []
    for path in _files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for ref in REPO_PATH.findall(line):
                ref = ref.rstrip(".")
                if not Path(ref).suffix or re.search(r"\b[A-Z]+\.", ref):
                    continue  # a folder, or a pattern (bench/NAME.py), not one file
                if not (ROOT / ref).exists():
                    found.append(f"{path.relative_to(ROOT)}:{n}: {ref}")
    assert not found, "names a file the repository does not contain:\n" + "\n".join(found)
