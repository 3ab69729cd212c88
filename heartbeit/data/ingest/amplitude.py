"""Amplitude-normalised recordings: every lead rescaled on its own, so the file is no longer in millivolts.

A collection can arrive with each lead scaled to one size - e.g. 1.00 mV peak-to-peak per lead, each WFDB
header gain set to that lead's own ADC peak-to-peak. Every lead alone still looks plausible, so the quality
gates pass it, yet absolute voltage (hypertrophy, low voltage, Sokolow-Lyon) is gone. Two signs, measured on
the reader's float mV signals at the native rate, before cropping (the rescaling covered the whole record):

1. Equal size. The eight independent leads (I, II, V1-V6: every format stores them) span the same amplitude:
   max / min over leads of the peak-to-peak or of the standard deviation (per-lead z-scoring) within
   1 + `ingest.equal_amplitude_tol`. Rescaling gives exactly 1 (a header gain equal to the lead's ADC range
   makes every lead span 1.00 mV). Real ECGs have leads of varied size: the smallest max/min seen is 1.70
   (peak-to-peak) and 1.50 (standard deviation) over the 51 real fixture records without a flat lead, 1.25
   and 1.17 over 606 synthetic ECGs (bench/amplitude_margins.py); the default tolerance 0.05 flags 1.05 or less.
2. Einthoven's law broken the way rescaling breaks it. Where a file stores the limb leads, III = II - I,
   aVR = -(I + II)/2, aVL = I - II/2 and aVF = II - I/2 hold up to quantisation: the four leads together
   differ from their Einthoven values by <= 1.9 % (relative norm, each lead mean-centred) over the real
   fixtures, <= 0.4 % synthetic. Rescaling each lead on its own breaks the law (>= 12 % off on every real
   fixture rescaled to equal peak-to-peak, standard deviation or largest sample) yet keeps every derived lead
   an exact combination of I and II with other, still positive weights. So a record more than
   `ingest.einthoven_tol` (default 5 %) off is flagged only when weights fitted freely (least squares, each
   of the same sign as Einthoven's) remove at least three quarters of the misfit (rescaled fixtures: 87 % or
   more; real ones: at most 8 %): independently filtered or noisy limb leads, an inverted aVR (Cabrera display) or
   a reader that derived the leads itself never are. Rescaling that leaves the limb leads consistent (8-lead
   files) is caught by sign 1 only.

`ingest.amplitude_normalised: reject` (default) refuses such a record with reason `amplitude_normalised`;
`accept` keeps it with the metadata column `amplitude_normalised = true` and a warning in the summary."""
from __future__ import annotations

import logging

import numpy as np

from heartbeit.records import AMPLITUDE_FLAG_COLUMN

from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX
from heartbeit.data.reasons import IngestError, Reason

log = logging.getLogger("heartbeit.ingest")

FLAG_COLUMN = AMPLITUDE_FLAG_COLUMN  # the corpus / predictions column of an accepted, flagged record
FIT_SHARE = 0.25  # sign 2: the fitted weights must leave at most this share of the Einthoven misfit

_INDEPENDENT = [LEAD_INDEX[k] for k in INDEPENDENT_LEADS]
# Each derived limb lead as weights of (I, II): Einthoven's law and Goldberger's augmented leads.
_DERIVED = {"III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}
_WEIGHTS = np.array(list(_DERIVED.values()))  # [4, 2]
_DERIVED_INDEX = [LEAD_INDEX[k] for k in _DERIVED]


def _equal_size(x: np.ndarray, tol: float) -> str | None:
    ind = x[_INDEPENDENT]
    for what, size in (("peak-to-peak", np.ptp(ind, axis=1)), ("standard deviation", ind.std(axis=1))):
        spread = float(size.max() / max(float(size.min()), 1e-12))
        if spread <= 1.0 + tol:
            level = float(np.median(size))
            exact = " (each header gain equal to its lead's own ADC range?)" if what == "peak-to-peak" \
                and abs(level - 1.0) < 0.005 else ""
            return (f"all 8 independent leads have the same {what}, {level:.2f} mV within {spread - 1:.1%}"
                    f"{exact}")
    return None


def einthoven_misfit(x: np.ndarray) -> tuple[float, float, bool]:
    """(relative misfit of III, aVR, aVL, aVF to their Einthoven values; the misfit left with weights of I
    and II fitted per lead by least squares; whether every fitted weight has Einthoven's sign), leads
    mean-centred. Everything follows from the six leads' 6 x 6 Gram matrix: one pass over the samples
    (a least-squares solver over all samples cost 3-4x the reading of the file)."""
    six = x[[LEAD_INDEX["I"], LEAD_INDEX["II"], *_DERIVED_INDEX]].astype(np.float64)
    six -= six.mean(axis=1, keepdims=True)  # a linear law survives mean removal (a median's would not)
    gram = six @ six.T
    bb, bd, dd = gram[:2, :2], gram[:2, 2:], float(np.trace(gram[2:, 2:]))
    if dd <= 0.0 or np.linalg.cond(bb) > 1e12:  # flat limb leads, or I and II one signal: nothing to test
        return 0.0, 0.0, True
    law = _WEIGHTS.T  # [2, 4]: derived = law.T @ (I, II)
    off2 = dd - 2.0 * float(np.sum(law * bd)) + float(np.sum(law * (bb @ law)))
    weights = np.linalg.solve(bb, bd)  # [2, 4], the normal equations
    fit2 = dd - float(np.sum(bd * weights))
    off, fitted = np.sqrt(max(off2, 0.0) / dd), np.sqrt(max(fit2, 0.0) / dd)
    return float(off), float(fitted), bool((weights * law > 0).all())


def normalisation_sign(signals: np.ndarray, equal_tol: float, einthoven_tol: float) -> str | None:
    """What shows that each lead of `signals` (float mV [12, n] in LEADS order) was rescaled on its own,
    or None for a recording in millivolts."""
    x = np.asarray(signals, dtype=np.float64)
    found = _equal_size(x, equal_tol)
    if found:
        return found
    off, fitted, same_signs = einthoven_misfit(x)
    if off > einthoven_tol and same_signs and fitted <= FIT_SHARE * off:
        return (f"limb leads miss Einthoven's law (III = II - I, aVR, aVL, aVF) by {off:.0%} but fit it with "
                f"rescaled weights to {fitted:.1%}")
    return None


def check_amplitude_normalised(signals: np.ndarray, name: str, cfg) -> bool:
    """Ingest's gate (`cfg` an IngestConfig): raise IngestError(amplitude_normalised) under the default
    policy; under `accept` return whether the record is amplitude-normalised."""
    sign = normalisation_sign(signals, cfg.equal_amplitude_tol, cfg.einthoven_tol)
    if sign is None:
        return False
    if cfg.amplitude_normalised == "reject":
        raise IngestError(Reason.AMPLITUDE_NORMALISED,
                          f"{name}: {sign}: each lead rescaled on its own (amplitude-normalised), absolute "
                          f"voltage is lost; a corpus or model in millivolts cannot use it "
                          f"(ingest.amplitude_normalised: accept keeps it, flagged)")
    return True


def flagged_count(rows: list[dict]) -> int:
    return sum(1 for r in rows if r.get(FLAG_COLUMN) in (True, 1))  # a parquet bool, never NaN


def warning_text(n: int, where: str) -> str:
    return (f"{n} ECG(s) amplitude-normalised (each lead rescaled on its own; ingest.amplitude_normalised: "
            f"accept) kept with {FLAG_COLUMN} = true in {where}: absolute voltage is lost, so voltage-dependent "
            f"labels and scores (LVH, low voltage) are unreliable for them")


def mark_predictions(pred, rows: list[dict], rejects: list[dict], cfg) -> dict:
    """`heartbeit predict`: the model's own ingest settings applied the check to each file (refused ones
    are in PRED.rejects.csv with reason amplitude_normalised). Under `accept` this adds the per-file column
    to the predictions frame `pred` (rows in its order). Logs a warning with counts only (file names stay in
    the private CSVs) and returns the summary entry."""
    refused = sum(1 for r in rejects if r.get("reason") == Reason.AMPLITUDE_NORMALISED.value)
    if cfg.amplitude_normalised == "accept":
        pred[FLAG_COLUMN] = [bool(r.get(FLAG_COLUMN, False)) for r in rows]
    scored = flagged_count(rows)
    if refused:
        log.warning("predict: %d file(s) amplitude-normalised (each lead rescaled on its own) refused: this "
                    "model reads ECGs in millivolts (PRED.rejects.csv, reason amplitude_normalised)", refused)
    if scored:
        log.warning("predict: %s", warning_text(scored, "PRED.csv"))
    return {FLAG_COLUMN: {"refused": refused, "scored": scored}}
