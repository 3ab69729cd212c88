"""Reject reason codes shared by the synthetic generator's ground truth and ingest's quality gates.

Every input file ends either in the corpus or in rejects.parquet with exactly one of these codes and a
detail string that names the file and the problem (never an identifier from inside the file)."""
from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    UNREADABLE = "unreadable"  # I/O error, empty file, not a known format
    TRUNCATED = "truncated"  # file ends early (XML not well-formed at EOF, short .dat)
    XML_UNSAFE = "xml_unsafe"  # entity expansion (billion laughs), external entity, DTD tricks
    MALFORMED = "malformed"  # parseable but structurally wrong (missing required elements/fields)
    NO_WAVEFORM = "no_waveform"  # no waveform of the requested type
    BAD_BASE64 = "bad_base64"
    BYTE_COUNT = "byte_count_mismatch"  # decoded bytes disagree with the declared sample count
    CRC_MISMATCH = "crc_mismatch"
    MISSING_LEAD = "missing_lead"
    DUPLICATE_LEAD = "duplicate_lead"
    NAN = "nan_or_inf"
    FLAT_LINE = "flat_line"
    CLIPPING = "clipping"  # saturation at the ADC rails
    IMPLAUSIBLE_AMPLITUDE = "implausible_amplitude"  # e.g. gain off by 4.88x
    IMPLAUSIBLE_RATE = "implausible_rate"  # declared rate outside the plausible range
    RATE_MISMATCH = "rate_mismatch"  # declared rate contradicts the file's own measurements/length
    TOO_SHORT = "too_short"
    DUPLICATE_RECORDING = "duplicate_recording"  # same waveform already in the corpus
    UNSUPPORTED = "unsupported"  # a valid file of a kind ingest does not take (e.g. not 12-lead)
    TOO_LARGE = "too_large"  # over a size, decompression or XML element limit (ingest.max_*)
    OUTSIDE_ROOT = "outside_root"  # a WFDB header names a signal file outside its input root
    NOT_ECG = "not_ecg"  # no QRS complexes at a plausible rate in most leads: noise, a sine, random data
    AMPLITUDE_NORMALISED = "amplitude_normalised"  # each lead rescaled on its own: not millivolts (data/ingest/amplitude.py)
    BAD_PATIENT_ID = "bad_patient_id"  # a patient id that is not a non-empty string
    WORKER_DIED = "worker_died"  # reading the file killed its worker process (e.g. out of memory)


class IngestError(Exception):
    """Raised by readers and quality gates; carries a Reason and a detail without identifiers."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
