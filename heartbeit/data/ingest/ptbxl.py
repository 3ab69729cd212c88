"""PTB-XL SCP statements -> the suite's tasks (PTB-XL serves as an external STEMI set, as in the paper).

The mapping is a documented default, overridable through IngestConfig (`ptbxl_*` keys):
- stemi = 1: an infarction statement (`stemi_codes`, likelihood >= `min_likelihood`) whose
  `infarction_stadium1` or `infarction_stadium2` is an acute stadium (`stemi_stadia`, default
  'Stadium I' and 'Stadium I-II');
- stemi = 0: no infarction statement (NORM and every other diagnosis), or an infarction in an old stadium
  (II, II-III, III);
- stemi = NaN (missing, not negative): an infarction statement whose stadium is 'unknown' or empty, unless
  `unknown_stadium: negative`.
PTB-XL has no echo (LVEF) and no HCM statement, so those tasks stay missing for PTB-XL records."""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass

DEFAULT_STEMI_CODES = ("IMI", "AMI", "ASMI", "ALMI", "ILMI", "LMI", "IPLMI", "IPMI", "PMI")
DEFAULT_STEMI_STADIA = ("Stadium I", "Stadium I-II")
OLD_STADIA = ("Stadium II", "Stadium II-III", "Stadium III")


@dataclass(frozen=True)
class ScpTaskMap:
    stemi_codes: tuple[str, ...] = DEFAULT_STEMI_CODES
    stemi_stadia: tuple[str, ...] = DEFAULT_STEMI_STADIA
    min_likelihood: float = 0.0
    unknown_stadium: str = "missing"  # missing | negative

    @classmethod
    def from_config(cls, cfg) -> "ScpTaskMap":
        return cls(tuple(cfg.ptbxl_stemi_codes), tuple(cfg.ptbxl_stemi_stadia), float(cfg.ptbxl_min_likelihood),
                   cfg.ptbxl_unknown_stadium)


def parse_scp_codes(text: str) -> dict[str, float]:
    """`"{'NORM': 100.0, 'SR': 0.0}"` -> dict. literal_eval only (never eval); anything odd -> {}."""
    if not text or len(text) > 10_000:
        return {}
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def stemi_label(scp_codes: dict[str, float], stadium1: str, stadium2: str = "",
                mapping: ScpTaskMap = ScpTaskMap()) -> float:
    """1.0 / 0.0 / NaN for one PTB-XL record under `mapping` (see the module docstring)."""
    has_mi = any(code in mapping.stemi_codes and lik >= mapping.min_likelihood for code, lik in scp_codes.items())
    if not has_mi:
        return 0.0
    stadia = {(stadium1 or "").strip(), (stadium2 or "").strip()} - {""}
    if stadia & set(mapping.stemi_stadia):
        return 1.0
    if stadia and stadia <= set(OLD_STADIA):
        return 0.0
    return 0.0 if mapping.unknown_stadium == "negative" else math.nan


def ptbxl_labels(meta: dict, mapping: ScpTaskMap) -> dict[str, float]:
    """Task labels for a record whose meta came from ptbxl_database.csv ({} for other records)."""
    if "scp_codes" not in meta:
        return {}
    return {"stemi": stemi_label(meta["scp_codes"], meta.get("infarction_stadium1", ""),
                                 meta.get("infarction_stadium2", ""), mapping)}
