"""Listing the inputs: every path under an input root ends in exactly one place.

- an **input** (read by a worker; later accepted or rejected),
- a **listing reject** (a path that cannot even be looked at: dangling or looping symbolic link, a folder
  that cannot be listed), with a reason like any other reject,
- a **companion** (a WFDB signal file its header names; it is read with the header), or
- **skipped** with a counted reason (summary.json `skipped`):
  `hidden` (names starting with '.'; a hidden folder counts once and is not entered), `side_file`
  (documentation, CSV/JSON/YAML tables and sidecars, licences), `annotation` (WFDB annotation files: known
  annotator suffixes, and any other `<record>.<ext>` beside `<record>.hea` that the header does not name as
  a signal file - per-lead annotators such as `1.i`, `1.v1` - since only headers drive WFDB records; an
  unnamed `.dat`/`.mat` stays an input and is refused with its reason),
  `special_file` (FIFOs, sockets, devices: reading one could block forever), `symlinked_folder` (never
  entered: a link could leave the input root or loop).
Symbolic links to regular files are inputs. Names that are not valid UTF-8 are kept as bytes for opening
and shown with backslash escapes in the private ledger.

Sites: each root carries a label - the root's own name as the user typed it, or `--site NAME` (which also
wins over site text inside the files) - never a name found below it. A root that names no folder of its own
(a single file, `.`, `..`, `/`) gets no label here: ingest gives its files a keyed pseudonym `site-<8 hex>`
of the resolved root (the path behind it kept in private/site_codes.json), so a parent folder named after a
patient never becomes a site. A label that reaches an output must be printable text of one script
(heartbeit.utils.text.site_label_problem): a root named with control characters or look-alike letters is
refused with a pointer to --site. A root written by `heartbeit synth` declares itself (synth.json lists every
input it wrote with its size and site); its files take their declared sites and the public synthetic key."""
from __future__ import annotations

import json
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from heartbeit.records import SYNTH_RECORD

from heartbeit.data.reasons import Reason
from heartbeit.data.ingest.wfdb_io import signal_files

SIDE_SUFFIXES = {".csv", ".json", ".md", ".txt", ".yaml", ".yml", ".dtd", ".pdf", ".html", ".py", ".sh",
                 ".tsv", ".rst", ".log", ".key", ".xsl", ".xsd", ".lock"}
SIDE_NAMES = {"RECORDS", "ANNOTATORS", "SHA256SUMS.txt", "LICENSE", "README"}
ANNOTATION_SUFFIXES = {".atr", ".ann", ".qrs", ".ari", ".pu", ".pu0", ".pu1", ".st", ".wqrs", ".sqrs",
                       ".gqrs", ".trigger", ".ecg", ".hea-"}
# Inputs in their own right: a header may name one as its signal file, but that never hides it.
NEVER_COMPANION = (".hea", ".xml", ".npy", ".npz")
# A signal file beside its header that the header does not name stays an input (and gets a reason).
SIGNAL_SUFFIXES = (".dat", ".mat")
SYNTH_GENERATOR = "heartbeit synth"


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute; may hold surrogate escapes (non-UTF-8 names)
    rel: str  # relative to its root (prefixed by the root's name when several roots are given); printable
    site: str = ""  # the root's label, or the synthetic writer's declared site
    root: str = ""  # the resolved input root (signal references must stay inside it)
    synthetic: bool = False
    site_given: bool = False  # the user named the site (--site): it wins over any site text in the file


@dataclass
class Listing:
    files: list[InputFile] = field(default_factory=list)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (rel, reason, detail)
    skipped: Counter = field(default_factory=Counter)
    companions: int = 0

    @property
    def synthetic(self) -> bool | None:
        """True: all inputs synthetic; False: none; None: a mix (refused: the key would be ambiguous)."""
        kinds = {f.synthetic for f in self.files}
        return None if len(kinds) > 1 else (kinds.pop() if kinds else False)


def printable(rel: str) -> str:
    """A name that may hold undecodable bytes (surrogate escapes), as text every writer accepts."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class SiteLabelError(ValueError):
    """A site label that may not reach an output; the message says why and points at --site."""


def root_label(typed: str | Path) -> str | None:
    """The site label of an input root: its own name as typed ('data/hosp_a/' -> 'hosp_a'); None when the
    path names no folder of its own (a file, '.', '..', '/'): such a root gets a keyed pseudonym."""
    norm = os.path.normpath(str(typed))
    path = Path(norm)
    if path.is_file() or path.name in ("", ".", ".."):
        return None
    return path.name


def skip_reason(name: str, suffix: str) -> str | None:
    if name.startswith("."):
        return "hidden"
    if suffix in ANNOTATION_SUFFIXES:
        return "annotation"
    if suffix in SIDE_SUFFIXES or name in SIDE_NAMES or name.upper().startswith(("LICENSE", "README")):
        return "side_file"
    return None


def _synthetic_manifest(root: Path) -> dict[str, dict] | None:
    try:
        data = json.loads((root / SYNTH_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("generator") != SYNTH_GENERATOR or not isinstance(data.get("files"), dict):
        return None
    return data["files"]


def _walk(root: Path, listing: Listing, prefix: str) -> list[tuple[Path, str]]:
    """(path, rel) of every candidate file under root; everything else goes to listing.rejects/skipped."""
    found: list[tuple[Path, str]] = []

    def rel_of(p: Path) -> str:
        return prefix + printable(p.relative_to(root).as_posix())

    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            listing.rejects.append((rel_of(folder) + "/", Reason.UNREADABLE.value,
                                    f"folder cannot be listed ({type(exc).__name__})"))
            continue
        subdirs = []
        for entry in entries:
            p = Path(entry.path)
            name = entry.name
            if name.startswith("."):
                listing.skipped["hidden"] += 1
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                listing.rejects.append((rel_of(p), Reason.UNREADABLE.value, f"cannot stat ({type(exc).__name__})"))
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.stat(p)  # follows the link; a loop or a dangling link fails here
                except OSError as exc:
                    listing.rejects.append((rel_of(p), Reason.UNREADABLE.value,
                                            f"symbolic link leads nowhere ({type(exc).__name__})"))
                    continue
                if stat.S_ISDIR(target.st_mode):
                    listing.skipped["symlinked_folder"] += 1
                    continue
                st = target
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(p)
            elif stat.S_ISREG(st.st_mode):
                found.append((p, rel_of(p)))
            else:
                listing.skipped["special_file"] += 1
        stack.extend(sorted(subdirs, reverse=True))
    return found


def check_site_label(label: str, where: str) -> None:
    from heartbeit.utils.text import safe_text, site_label_problem

    problem = site_label_problem(label)
    if problem:
        raise SiteLabelError(f"{where}: site label {safe_text(label, 80)!r} cannot be used: {problem}; name the "
                             "site with --site NAME (letters, digits, '_', '-', '.')")


def list_inputs(inputs: list[str | Path], sites: list[str] | None = None, check_sites: bool = True) -> Listing:
    """Every path under the inputs, in a deterministic order (sorted relative paths, roots as given).
    `sites` (one per input, "" = default) overrides the root labels; "" in InputFile.site means a root
    that names no folder (ingest makes the pseudonym). `check_sites`: refuse labels that may not reach an
    output (SiteLabelError); predict, whose outputs carry no site, passes False."""
    listing = Listing()
    roots = [(typed, Path(typed).resolve()) for typed in inputs]
    for typed, root in roots:
        if not root.exists():
            raise FileNotFoundError(str(typed))
    prefix_roots = len(roots) > 1
    for i, (typed, root) in enumerate(roots):
        given = bool(sites and sites[i])
        label = sites[i] if given else (root_label(typed) or "")
        if check_sites and label:
            check_site_label(label, f"input {i + 1}" + ("" if given else " (its folder name as typed)"))
        if root.is_file():
            rel = printable(root.name if not prefix_roots else f"{root.parent.name}/{root.name}")
            listing.files.append(InputFile(str(root), rel, label, str(root.parent), site_given=given))
            continue
        prefix = f"{printable(root.name)}/" if prefix_roots else ""
        found = _walk(root, listing, prefix)
        claimed: set[Path] = set()
        records: set[tuple[Path, str]] = set()  # (folder, record name) of every header
        for f, _ in found:
            if f.suffix.lower() == ".hea":
                records.add((f.parent, f.stem))
                claimed.update(s for s in signal_files(f) if s != f and s.suffix.lower() not in NEVER_COMPANION)
        synth = _synthetic_manifest(root)
        candidates = []
        for f, rel in sorted(found, key=lambda x: x[1]):
            if f in claimed:
                listing.companions += 1
                continue
            reason = skip_reason(f.name, f.suffix.lower())
            if (reason is None and (f.parent, f.stem) in records
                    and f.suffix.lower() not in NEVER_COMPANION + SIGNAL_SUFFIXES):
                reason = "annotation"
            if reason:
                listing.skipped[reason] += 1
                continue
            candidates.append((f, rel))
        # A root is synthetic only if every input in it is one the writer declared, at its written size:
        # a real file dropped into a synthetic folder makes the whole root real (and the key private).
        declared = synth is not None and all(
            isinstance(synth.get(r[len(prefix):]), dict) and synth[r[len(prefix):]].get("size") == os.stat(f).st_size
            for f, r in candidates)
        for f, rel in candidates:
            site = str(synth[rel[len(prefix):]].get("site") or label) if declared and not given else label
            if check_sites and declared and not given and site:
                check_site_label(site, f"input {i + 1} (a site its synth.json declares)")
            listing.files.append(InputFile(str(f), rel, site, str(root), declared, given))
    return listing


def slice_inputs(files: list, task: int, count: int) -> list:
    """Task `task` of `count` takes the contiguous block [task*L//count, (task+1)*L//count)."""
    if not 0 <= task < count:
        raise ValueError(f"array task {task} outside 0..{count - 1}")
    n = len(files)
    return files[task * n // count:(task + 1) * n // count]
