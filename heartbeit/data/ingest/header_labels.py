"""Diagnoses in WFDB header comments -> binary label columns (the header map).

Two conventions are read (heartbeit.data.ingest.wfdb_io collects them; this module maps them):
- CinC/PhysioNet challenge headers: `#Dx: 164889003,59118001` - SNOMED CT codes;
- free-text diagnosis blocks as in LUDB-style collections: `#<diagnoses>:` followed by one statement per
  comment line (`#Rhythm: Sinus rhythm.`, `#Left ventricular hypertrophy.`); a `#Diagnosis: text` line
  counts as one statement too.
Each label of the map is its own binary column in the corpus (a multi-label record sets several):
- 1: the record lists one of the label's SNOMED codes (`ingest.dx_codes`) or a statement matching one of
  its patterns (`ingest.dx_patterns`, case-insensitive regular expressions searched in each statement);
- 0: the record lists diagnoses (codes or statements) but none of the label's;
- missing (NaN): the record lists no diagnoses at all (absence of a list is not a negative).
The defaults below are overridable per label: a config entry replaces that label's list, an empty list
removes the label, new names add labels; `ingest.header_labels: false` turns the map off. A label named
like a labels-CSV column (e.g. `hcm`) fills that column where the CSV leaves it missing.
Free-text statements never leave the worker: only the mapped 0/1 values reach the corpus."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

# CinC 2020/2021 SNOMED CT codes (the challenges' dx_mapping tables), one label per clinical class; codes the
# challenges treat as equivalent share a label (CRBBB/RBBB, PVC/VPB), as the scoring did.
DEFAULT_DX_CODES: dict[str, tuple[str, ...]] = {
    "af": ("164889003",),  # atrial fibrillation
    "afl": ("164890007",),  # atrial flutter
    "iavb": ("270492004",),  # first-degree AV block
    "lbbb": ("164909002", "733534002"),  # (complete) left bundle branch block
    "rbbb": ("59118001", "713427006"),  # (complete) right bundle branch block
    "irbbb": ("713426002",),  # incomplete right bundle branch block
    "lvh": ("164873001", "55827005"),  # left ventricular hypertrophy (both codes occur in CinC 2021)
    "lad": ("39732003",),  # left axis deviation
    "rad": ("47665007",),  # right axis deviation
    "lqt": ("111975006",),  # prolonged QT
    "pac": ("284470004", "63593006"),  # premature atrial / supraventricular complexes
    "pvc": ("427172004", "17338001"),  # premature ventricular complexes / beats
    "sb": ("426177001",),  # sinus bradycardia
    "snr": ("426783006",),  # sinus rhythm
    "stach": ("427084000",),  # sinus tachycardia
    "tab": ("164934002",),  # T wave abnormal
    "tinv": ("59931005",),  # T wave inversion
}
# Free-text statements (LUDB-style diagnosis blocks); patterns are case-insensitive `re.search`es.
DEFAULT_DX_PATTERNS: dict[str, tuple[str, ...]] = {
    "af": (r"atrial fibrillation",),
    "afl": (r"atrial flutter",),
    "iavb": (r"(?:1st|first)[- ]degree av block",),
    "lbbb": (r"left bundle branch block",),
    "rbbb": (r"right bundle branch block",),
    "lvh": (r"left ventricular hypertrophy",),
    "lad": (r"left axis deviation", r"electric axis of the heart: left"),
    "rad": (r"right axis deviation", r"electric axis of the heart: right"),
    "sb": (r"sinus bradycardia",),
    "snr": (r"^(?:rhythm: )?sinus rhythm",),
    "stach": (r"sinus tachycardia",),
}


@dataclass(frozen=True)
class HeaderLabelMap:
    codes: dict[str, frozenset[str]]
    patterns: dict[str, tuple[re.Pattern, ...]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.codes) | set(self.patterns)))

    @classmethod
    def from_config(cls, cfg) -> "HeaderLabelMap":
        """The defaults with the config's per-label overrides (see the module docstring)."""
        if not cfg.header_labels:
            return cls({}, {})
        codes = {**DEFAULT_DX_CODES, **{k: tuple(v) for k, v in cfg.dx_codes.items()}}
        patterns = {**DEFAULT_DX_PATTERNS, **{k: tuple(v) for k, v in cfg.dx_patterns.items()}}
        # A label emptied in one map but listed in the other keeps the other's entries; emptied in both: gone.
        return cls({k: frozenset(str(c).strip() for c in v) for k, v in codes.items() if v},
                   {k: tuple(re.compile(p, re.IGNORECASE) for p in v) for k, v in patterns.items() if v})

    def labels(self, meta: dict) -> dict[str, float]:
        """{label: 1.0 / 0.0 / NaN} for one record's `dx_codes` / `dx_statements` (see the module docstring)."""
        codes = set(meta.get("dx_codes") or ())
        statements = [s for s in (meta.get("dx_statements") or ()) if s]
        listed = bool(codes or statements)
        out = {}
        for name in self.names:
            if not listed:
                out[name] = math.nan
                continue
            hit = bool(codes & self.codes.get(name, frozenset())) or any(
                p.search(s) for p in self.patterns.get(name, ()) for s in statements)
            out[name] = float(hit)
        return out
