"""Text from outside (folder names typed or found, model-folder JSON, exception messages) made safe to print,
and the one rule for what may be a site label.

A terminal interprets ANSI escape sequences and a log reader trusts line breaks, so nothing that came from
outside the code is printed raw: `safe_text` escapes every control or format character and bounds the length.
Site labels reach shared outputs (the corpus' site column, summary.json, a model's metrics), so a label must
be printable text of one script in Unicode's normal form: a look-alike name ('hоsp_a' with a Cyrillic 'о')
would otherwise become a second site that reads like the first."""
from __future__ import annotations

import unicodedata

# Unicode general categories that never belong in a printed name: control, format (bidi overrides, zero
# width), surrogate, private use, unassigned, line and paragraph separators.
_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def safe_text(value: object, limit: int = 200) -> str:
    """`value` as one printable line: control/format characters as escapes, at most `limit` characters."""
    text = str(value)
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNPRINTABLE:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _script(ch: str) -> str | None:
    """The script of a letter by its Unicode name's first word (LATIN, CYRILLIC, GREEK, CJK ...); None for
    digits, punctuation and other characters every script shares."""
    if not ch.isalpha():
        return None
    try:
        return unicodedata.name(ch).split(" ")[0]
    except ValueError:
        return "UNNAMED"


def site_label_problem(label: str) -> str | None:
    """Why `label` cannot be a site label (None when it can): empty, control/format characters, not in NFKC
    normal form (full-width or compatibility look-alikes), letters of more than one script, over 64 chars."""
    if not label:
        return "it is empty"
    if any(unicodedata.category(c) in _UNPRINTABLE for c in label):
        return "it holds control or formatting characters"
    if unicodedata.normalize("NFKC", label) != label:
        return "it holds compatibility look-alike characters (not in Unicode NFKC form)"
    scripts = {s for s in map(_script, label) if s}
    if len(scripts) > 1:
        return f"it mixes letters of several scripts ({', '.join(sorted(scripts))}): a look-alike of another name"
    if len(label) > 64:
        return "it is longer than 64 characters"
    return None
