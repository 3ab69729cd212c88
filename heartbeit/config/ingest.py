"""Ingest settings (`heartbeit ingest`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from heartbeit.records import CORPUS_RESERVED_COLUMNS, TASK_COLUMNS

from .core import ConfigError

LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a label column (label_columns, header map labels)
AMPLITUDE_POLICIES = ("reject", "accept")  # ingest.amplitude_normalised (heartbeit/data/ingest/amplitude.py)


@dataclass
class IngestConfig:
    corpus_fs: int = 500  # accepted records are resampled to this rate
    duration_s: float = 10.0  # records are cropped to this length (shorter than min_duration_s: rejected)
    min_duration_s: float = 8.0
    # Column of the labels CSV joined to each record's key: accession | mrn | ecg_id | patient_id | record
    # (the file stem: a WFDB record's name; it stays in the worker and <out>/private/, never in the corpus).
    label_key: str = "accession"
    # Extra labels CSV columns carried into the corpus as label columns (numbers or 0/1 flags, blank =
    # missing), beside lvef/lvef_le40/hcm/stemi: the source columns of your own tasks (matrix.task_defs).
    label_columns: list[str] = field(default_factory=list)
    # Diagnoses in WFDB header comments -> binary label columns (heartbeit/data/ingest/header_labels.py): CinC
    # SNOMED CT `#Dx:` codes and free-text diagnosis lines by pattern. Entries override the documented
    # defaults per label (an empty list drops one); header_labels: false turns the map off.
    header_labels: bool = True
    dx_codes: dict[str, list[str]] = field(default_factory=dict)
    dx_patterns: dict[str, list[str]] = field(default_factory=dict)
    key_file: str = ""  # HMAC key for patient ids; "" = <workdir>/secret/deid.key (created 0600)
    date_policy: str = "year"  # year | shift
    date_shift_max_days: int = 365  # shift policy: per-patient keyed offset in [-max, +max] days
    waveform: str = "Rhythm"  # MUSE waveform type for the corpus
    shard_size: int = 1000
    workers: int = 0  # 0 = all cores
    chunk_size: int = 16  # files handed to a worker at a time
    # quality gates (see heartbeit/data/ingest/quality.py)
    min_fs: float = 100.0
    max_fs: float = 10000.0
    max_file_mb: float = 256.0  # larger files are refused unread (no 12-lead export is this big)
    # Bounds on what a small file may blow up into: an array file's decompressed/declared data (a 0.4 MB npz
    # of zeros can declare gigabytes), and the number of XML elements (a MUSE export has a few hundred;
    # millions of nested elements cost gigabytes of memory as a tree).
    max_decompressed_mb: float = 64.0
    max_xml_elements: int = 200_000
    # Physiological plausibility (quality.check_plausible_ecg): a lead "has QRS complexes" when its 5-25 Hz
    # band energy rises to sharp peaks (peak / median envelope >= qrs_peak_ratio) at a rate in
    # [qrs_min_bpm, qrs_max_bpm]; at least qrs_min_leads of the 12 leads must (0 turns the gate off), or else
    # the complexes found in all leads together must resemble their median beat (correlation >=
    # qrs_min_similarity: wide or small complexes). Noise, sines and random data fail both.
    qrs_peak_ratio: float = 6.0
    qrs_min_bpm: float = 25.0
    qrs_max_bpm: float = 300.0
    qrs_min_leads: int = 6
    qrs_min_similarity: float = 0.5
    # Site labels for free-text site fields read from files (MUSE <SiteName>, a sidecar's "site"): text -> label.
    # Unlisted text becomes a keyed pseudonym site-<8 hex> (its text is kept in <out>/private/site_codes.json).
    site_map: dict[str, str] = field(default_factory=dict)
    lock_wait_s: float = 0.0  # a second run on the same corpus waits this long for the first, then stops
    flat_ptp_mv: float = 0.01  # an independent lead with less peak-to-peak than this is flat
    clip_fraction: float = 0.01  # share of samples pinned at a lead's extreme that means clipping
    # amplitude plausibility on robust (0.5-99.5 percentile) peak-to-peak per lead: the largest lead must lie
    # in [min_ptp_mv, max_ptp_mv] and the median lead must stay <= max_median_ptp_mv. A gain off by 4.88x
    # (raw counts exported as microvolts) lands far outside; tall-voltage (LVH/HCM) ECGs stay inside.
    min_ptp_mv: float = 0.3
    max_ptp_mv: float = 6.0
    max_median_ptp_mv: float = 4.0  # 3.0 refused 2 synthetic HCM ECGs (median lead 3.2 mV) of the demo corpus
    # A gain error scales the noise floor with the waveform; true tall voltage (LVH/HCM) does not. So a record
    # that is both tall (median lead > scaled_median_ptp_mv) and noisy (high-frequency noise sigma >
    # scaled_noise_mv) is refused as a gain error too. Devices are specified well under 0.03 mV of noise.
    scaled_median_ptp_mv: float = 2.0
    scaled_noise_mv: float = 0.05
    max_abs_mv: float = 32.0  # int16 microvolt storage limit
    # Amplitude-normalised recordings (heartbeit/data/ingest/amplitude.py, docs/real-data.md): every lead rescaled on
    # its own (e.g. to 1 mV peak-to-peak, each header gain = that lead's ADC range) is not in millivolts.
    # reject: refused with reason amplitude_normalised; accept: kept with the metadata column
    # amplitude_normalised = true and a warning in the ingest summary. Signs: the 8 independent leads' peak-to-
    # peak or standard deviation equal within equal_amplitude_tol (real ECGs: >= 17 % apart), or the limb
    # leads off Einthoven's law by more than einthoven_tol (real: <= 1.9 %) in a way rescaled weights fit.
    amplitude_normalised: str = "reject"
    equal_amplitude_tol: float = 0.05
    einthoven_tol: float = 0.05
    # arrays without a sidecar (CLI flags --fs/--units/--leads fill these)
    array_fs: float = 0.0
    array_units: str = "mV"
    array_leads: list[str] = field(default_factory=list)  # empty = the canonical 12-lead order
    # PTB-XL SCP -> task mapping (heartbeit/data/ingest/ptbxl.py)
    ptbxl_stemi_codes: list[str] = field(
        default_factory=lambda: ["IMI", "AMI", "ASMI", "ALMI", "ILMI", "LMI", "IPLMI", "IPMI", "PMI"])
    ptbxl_stemi_stadia: list[str] = field(default_factory=lambda: ["Stadium I", "Stadium I-II"])
    ptbxl_min_likelihood: float = 0.0
    ptbxl_unknown_stadium: str = "missing"  # missing | negative

    def validate(self) -> None:
        if self.date_policy not in ("year", "shift"):
            raise ConfigError(f"date_policy must be 'year' or 'shift', got {self.date_policy!r}")
        if self.min_duration_s > self.duration_s:
            raise ConfigError("min_duration_s must be <= duration_s")
        if self.corpus_fs <= 0 or self.shard_size < 1 or self.chunk_size < 1:
            raise ConfigError("corpus_fs, shard_size and chunk_size must be positive")
        if self.array_units not in ("mV", "uV", "V"):
            raise ConfigError(f"array_units must be mV, uV or V, got {self.array_units!r}")
        if self.ptbxl_unknown_stadium not in ("missing", "negative"):
            raise ConfigError("ptbxl_unknown_stadium must be 'missing' or 'negative'")
        if not 0 < self.min_ptp_mv < self.max_ptp_mv or self.max_median_ptp_mv <= 0:
            raise ConfigError("need 0 < min_ptp_mv < max_ptp_mv and max_median_ptp_mv > 0")
        if self.max_decompressed_mb <= 0 or self.max_xml_elements < 100 or self.max_file_mb <= 0:
            raise ConfigError("max_file_mb and max_decompressed_mb must be > 0 and max_xml_elements >= 100")
        if not 0 < self.qrs_min_similarity <= 1:
            raise ConfigError("qrs_min_similarity must be in (0, 1]")
        if self.qrs_peak_ratio < 1 or not 0 < self.qrs_min_bpm < self.qrs_max_bpm or not 0 <= self.qrs_min_leads <= 12:
            raise ConfigError("need qrs_peak_ratio >= 1, 0 < qrs_min_bpm < qrs_max_bpm and 0 <= qrs_min_leads <= 12")
        for text, label in self.site_map.items():
            if not label or not all(c.isalnum() or c in "_-." for c in label):
                raise ConfigError(f"site_map.{text}: site label {label!r} must be letters, digits, '_', '-' or '.'")
        if not LABEL_KEY.fullmatch(self.label_key):
            raise ConfigError(f"label_key must be a column name (letters, digits, '_'), got {self.label_key!r}")
        for col in self.label_columns:
            if not LABEL_NAME.fullmatch(col) or col in CORPUS_RESERVED_COLUMNS or col in TASK_COLUMNS or col == self.label_key:
                raise ConfigError(f"label_columns: {col!r} must be a lower-case column name that is neither the "
                                  "label_key, a default label nor a corpus metadata column")
        problems = validate_map(self.dx_codes, self.dx_patterns, CORPUS_RESERVED_COLUMNS)
        if problems:
            raise ConfigError("; ".join(problems))
        if self.amplitude_normalised not in AMPLITUDE_POLICIES:
            raise ConfigError(f"amplitude_normalised must be one of {', '.join(AMPLITUDE_POLICIES)}, "
                              f"got {self.amplitude_normalised!r}")
        if not 0 <= self.equal_amplitude_tol <= 0.5:
            raise ConfigError(f"equal_amplitude_tol must be in [0, 0.5], got {self.equal_amplitude_tol!r}")
        if not 0 < self.einthoven_tol < 1:
            raise ConfigError(f"einthoven_tol must be in (0, 1), got {self.einthoven_tol!r}")
        if self.lock_wait_s < 0:
            raise ConfigError("lock_wait_s must be >= 0")


def validate_map(codes: dict, patterns: dict, reserved: set[str]) -> list[str]:
    """Problems with configured maps, each naming its key (empty = fine)."""
    problems = []
    for key, table in (("dx_codes", codes), ("dx_patterns", patterns)):
        for name, entries in table.items():
            if not LABEL_NAME.fullmatch(str(name)):
                problems.append(f"ingest.{key}.{name}: label names are lower-case letters, digits and '_' "
                                "(a column name), starting with a letter")
            elif name in reserved:
                problems.append(f"ingest.{key}.{name}: {name!r} is a corpus metadata column, not a label")
            if not isinstance(entries, (list, tuple)):
                problems.append(f"ingest.{key}.{name}: must be a list")
                continue
            if key == "dx_codes" and not all(str(c).strip().isdigit() for c in entries):
                problems.append(f"ingest.{key}.{name}: SNOMED CT codes are digits")
            if key == "dx_patterns":
                for p in entries:
                    try:
                        re.compile(p)
                    except (re.error, TypeError) as exc:
                        problems.append(f"ingest.{key}.{name}: pattern {p!r} does not compile ({exc})")
    return problems
