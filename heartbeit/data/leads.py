"""The canonical 12-lead order and Einthoven/Goldberger relations between limb leads."""
from __future__ import annotations

import numpy as np

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Leads that carry independent information; MUSE stores only these eight.
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_INDEX = {name: i for i, name in enumerate(LEADS)}


def normalize_lead_name(name: str) -> str | None:
    """Map a lead label as devices write it ('AVR', 'avr', 'v1', 'Lead II') to the canonical name, or
    None for channels that are not one of the 12 standard leads (Frank X/Y/Z, rhythm, pacing)."""
    n = name.strip().replace("Lead", "").replace("LEAD", "").strip().replace(" ", "")
    return _BY_UPPER.get(n.upper())


_BY_UPPER = {lead.upper(): lead for lead in LEADS}  # built once: readers call this for every lead of every file


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL, aVF from I and II (exact relations, any dtype that supports arithmetic)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }


def twelve_from_independent(leads: dict[str, np.ndarray]) -> np.ndarray:
    """Stack a [12, n] float32 array from the eight independent leads."""
    derived = derive_limb_leads(leads["I"].astype(np.float64), leads["II"].astype(np.float64))
    full = {**{k: v.astype(np.float64) for k, v in leads.items()}, **derived}
    return np.stack([full[name] for name in LEADS]).astype(np.float32)
