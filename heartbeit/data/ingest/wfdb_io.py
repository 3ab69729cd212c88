"""WFDB reader (.hea + .dat or .mat signal files), with PTB-XL metadata from `ptbxl_database.csv`.

Two paths, one result:
- a fast path for the layout nearly every 12-lead archive uses (one signal file, format 16, one sample per
  frame, optional byte offset as in the PhysioNet/CinC .mat files): the header is parsed here and the
  samples are read with one `np.fromfile`. `wfdb.rdheader` alone costs ~3 ms per record, which dominates
  ingest time (see bench/ingest.py);
- everything else (format 212/24/..., several signal files, multi-segment records) goes through
  `wfdb.rdrecord`. tests/test_wfdb*.py checks that both paths agree on every fixture.
Lead names are normalised ('AVR' -> 'aVR'); channels that are not standard leads (Frank X/Y/Z, ...) are
dropped; I, II, V1-V6 are required and missing limb leads are derived. Header checksums are verified.
Signal files must lie inside the input root (`root`): a header naming `/etc/...` or `../../x` is refused
(`outside_root`) before anything is opened. `# Patient ID:` comments give the patient id; age, sex and
diagnoses are read in both comment conventions (`#Age:` and `#<age>:`, see _comment_metadata); every other
comment is free text and ignored. The site is not read here: ingest names it (heartbeit.data.ingest.listing)."""
from __future__ import annotations

import functools
import math
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heartbeit.data.leads import INDEPENDENT_LEADS, LEADS, derive_limb_leads, normalize_lead_name
from heartbeit.data.reasons import IngestError, Reason
from heartbeit.data.record import ECGRecord

UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nu": float("nan"), "": 1.0}
_FMT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([-+0-9.eE]+)(?:\(([-0-9]+)\))?(?:/(\S+))?$")


@dataclass
class SignalSpec:
    file_name: str
    fmt: str
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    checksum: int | None
    description: str


@dataclass
class Header:
    record_name: str
    n_sig: int
    fs: float
    sig_len: int | None
    signals: list[SignalSpec]
    comments: list[str] = field(default_factory=list)
    multi_segment: bool = False


def looks_like_wfdb_header(head: bytes) -> bool:
    """A .hea starts with `name n_sig [fs ...]` (after optional comment lines)."""
    for line in head.decode("latin-1", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        return len(parts) >= 2 and parts[1].isdigit()
    return False


def parse_header(text: str, name: str) -> Header:
    """Parse a WFDB header (the subset of the spec single- and multi-segment 12-lead records use)."""
    lines = [ln.strip() for ln in text.splitlines()]
    comments = [ln[1:].strip() for ln in lines if ln.startswith("#")]
    body = [ln.split("#", 1)[0].strip() for ln in lines if ln and not ln.startswith("#")]
    body = [ln for ln in body if ln]
    if not body:
        raise IngestError(Reason.MALFORMED, f"{name}: WFDB header has no record line")
    rec = body[0].split()
    try:
        record_name = rec[0]
        n_sig = int(rec[1])
        fs = float(rec[2].split("/")[0].split("(")[0]) if len(rec) > 2 else 250.0
        sig_len = int(rec[3]) if len(rec) > 3 else None
    except (ValueError, IndexError):
        raise IngestError(Reason.MALFORMED, f"{name}: WFDB record line is not 'name n_sig fs n_samples'") from None
    multi = "/" in record_name
    signals: list[SignalSpec] = []
    if not multi:
        if len(body) - 1 < n_sig:
            raise IngestError(Reason.MALFORMED, f"{name}: header declares {n_sig} signals, lists {len(body) - 1}")
        for line in body[1:1 + n_sig]:
            signals.append(_parse_signal_line(line, name))
    return Header(record_name, n_sig, fs, sig_len, signals, comments, multi)


def _parse_signal_line(line: str, name: str) -> SignalSpec:
    parts = line.split(maxsplit=8)
    try:
        file_name, fmt_field = parts[0], parts[1]
        m = _FMT_RE.match(fmt_field)
        if not m:
            raise ValueError(fmt_field)
        gain, baseline, units = 200.0, None, "mV"  # WFDB defaults
        if len(parts) > 2:
            g = _GAIN_RE.match(parts[2])
            if not g:
                raise ValueError(parts[2])
            gain = float(g.group(1)) or 200.0
            baseline = int(g.group(2)) if g.group(2) else None
            units = g.group(3) or "mV"
        adc_zero = int(parts[4]) if len(parts) > 4 else 0
        checksum = int(parts[6]) if len(parts) > 6 else None
        description = parts[8] if len(parts) > 8 else ""
    except (ValueError, IndexError):
        raise IngestError(Reason.MALFORMED, f"{name}: unparseable WFDB signal line") from None
    return SignalSpec(file_name, m.group(1), int(m.group(2) or 1), int(m.group(3) or 0), int(m.group(4) or 0),
                      gain, adc_zero if baseline is None else baseline, units, checksum, description.strip())


MAX_HEADER_BYTES = 1 << 20  # a 12-lead header is a few hundred bytes; more is not a header


def signal_files(hea_path: Path) -> list[Path]:
    """The signal files a header refers to (so directory walks do not treat them as separate inputs)."""
    try:
        if hea_path.stat().st_size > MAX_HEADER_BYTES:
            return []
        header = parse_header(hea_path.read_text("latin-1"), hea_path.name)
    except (OSError, IngestError):
        return []
    return sorted({hea_path.parent / s.file_name for s in header.signals if s.file_name != "~"})


def _fast_path_ok(h: Header) -> bool:
    if h.multi_segment or not h.signals:
        return False
    first = h.signals[0]
    return all(s.fmt == "16" and s.samples_per_frame == 1 and s.skew == 0 and s.file_name == first.file_name
               and s.byte_offset == first.byte_offset for s in h.signals)


def check_signal_paths(h: Header, hea_path: Path, root: Path | None, name: str,
                       max_bytes: int | None = None) -> None:
    """Every signal file the header names resolves inside `root` (default: the header's own folder), is a
    regular file (a FIFO would block the reader forever) and is at most `max_bytes` long."""
    base = (root or hea_path.parent).resolve()
    for spec in h.signals:
        if spec.file_name == "~":
            continue
        if Path(spec.file_name).is_absolute():
            raise IngestError(Reason.OUTSIDE_ROOT, f"{name}: header names a signal file by absolute path")
        target = (hea_path.parent / spec.file_name).resolve()
        if target != base and base not in target.parents:
            raise IngestError(Reason.OUTSIDE_ROOT, f"{name}: header names a signal file outside the input root")
        if target == hea_path.resolve():
            raise IngestError(Reason.MALFORMED, f"{name}: header names itself as its signal file")
        try:
            st = target.stat()
        except OSError:
            continue  # missing: the readers report it as such
        if not stat.S_ISREG(st.st_mode):
            raise IngestError(Reason.UNREADABLE, f"{name}: a signal file it names is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise IngestError(Reason.TOO_LARGE, f"{name}: a signal file it names is over ingest.max_decompressed_mb")


def _read_fast(h: Header, folder: Path, name: str) -> np.ndarray:
    """Digital samples [n_sig, n] int16 of a single-file format-16 record."""
    path = folder / h.signals[0].file_name
    try:
        size = path.stat().st_size
    except OSError:
        raise IngestError(Reason.UNREADABLE, f"{name}: signal file {path.name} is missing") from None
    offset = h.signals[0].byte_offset
    frame = 2 * h.n_sig
    data_bytes = max(size - offset, 0)
    if h.sig_len is None:  # length implied by the file
        if data_bytes % frame:
            raise IngestError(Reason.TRUNCATED, f"{name}: {path.name} ends inside a sample frame")
        n = data_bytes // frame
    else:
        n = h.sig_len
        if data_bytes < n * frame:
            raise IngestError(Reason.TRUNCATED,
                              f"{name}: {path.name} holds {data_bytes} bytes, header needs {n * frame}")
        if data_bytes > n * frame:
            raise IngestError(Reason.BYTE_COUNT,
                              f"{name}: {path.name} holds {data_bytes} bytes, header says {n * frame}")
    digital = np.fromfile(path, dtype="<i2", count=n * h.n_sig, offset=offset)
    return digital.reshape(n, h.n_sig).T


def _read_with_wfdb(hea_path: Path, name: str) -> tuple[np.ndarray, list[str], list[float], list[int], list[str], float]:
    import wfdb

    try:
        rec = wfdb.rdrecord(str(hea_path.with_suffix("")), physical=False, return_res=64)
    except FileNotFoundError:
        raise IngestError(Reason.UNREADABLE, f"{name}: a signal file the header names is missing") from None
    except ValueError as exc:
        # wfdb reports short signal files as reshape/size errors; the message is numbers only.
        if "reshape" in str(exc) or "size" in str(exc):
            raise IngestError(Reason.TRUNCATED, f"{name}: signal file shorter than the header declares") from None
        raise IngestError(Reason.MALFORMED, f"{name}: wfdb could not read the record ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - wfdb raises many types; never echo their text
        raise IngestError(Reason.MALFORMED, f"{name}: wfdb could not read the record ({type(exc).__name__})") from None
    if rec.d_signal is None:
        raise IngestError(Reason.MALFORMED, f"{name}: record has no single-rate signals")
    return (rec.d_signal.T, list(rec.sig_name), [float(g) or 200.0 for g in rec.adc_gain], list(rec.baseline),
            list(rec.units), float(rec.fs))


def read_wfdb(hea_path: str | Path, name: str | None = None, use_fast_path: bool = True,
              root: str | Path | None = None, max_bytes: int | None = None) -> ECGRecord:
    hea_path = Path(hea_path)
    name = name or hea_path.name
    try:
        if hea_path.stat().st_size > MAX_HEADER_BYTES:
            raise IngestError(Reason.TOO_LARGE, f"{name}: over {MAX_HEADER_BYTES} bytes: not a WFDB header")
        text = hea_path.read_text("latin-1")
    except OSError as exc:
        raise IngestError(Reason.UNREADABLE, f"{name}: cannot read ({type(exc).__name__})") from None
    header = parse_header(text, name)
    if header.n_sig < 1:
        raise IngestError(Reason.MALFORMED, f"{name}: header declares no signals")
    if header.multi_segment:  # segment headers sit beside this one; a path in a segment name could leave it
        segments = [ln.split()[0] for ln in text.splitlines()[1:] if ln.strip() and not ln.lstrip().startswith("#")]
        if any(("/" in seg or "\\" in seg or seg.startswith(".")) for seg in segments):
            raise IngestError(Reason.OUTSIDE_ROOT, f"{name}: a segment name is a path (segments must sit beside it)")
    check_signal_paths(header, hea_path, Path(root) if root else None, name, max_bytes)
    if use_fast_path and _fast_path_ok(header):
        digital = _read_fast(header, hea_path.parent, name)
        labels = [s.description for s in header.signals]
        gains = [s.gain for s in header.signals]
        baselines = [s.baseline for s in header.signals]
        units = [s.units for s in header.signals]
        fs = header.fs
        for i, spec in enumerate(header.signals):
            if spec.checksum is not None and (int(digital[i].sum(dtype=np.int64)) - spec.checksum) % 65536:
                raise IngestError(Reason.CRC_MISMATCH, f"{name}: checksum of signal {i} does not match its header")
    else:
        digital, labels, gains, baselines, units, fs = _read_with_wfdb(hea_path, name)
    leads: dict[str, np.ndarray] = {}
    for i, label in enumerate(labels):
        canonical = normalize_lead_name(label or "")
        if canonical is None:
            continue  # Frank leads, respiration, pacing channels
        if canonical in leads:
            raise IngestError(Reason.DUPLICATE_LEAD, f"{name}: lead {canonical} appears twice")
        scale = UNIT_TO_MV.get((units[i] or "").strip().lower())
        if scale is None or math.isnan(scale):  # the units text is not quoted: it comes from the file
            raise IngestError(Reason.UNSUPPORTED, f"{name}: lead {canonical} has units that are not a voltage")
        if gains[i] <= 0 or not math.isfinite(gains[i]):
            raise IngestError(Reason.MALFORMED, f"{name}: lead {canonical} has gain {gains[i]}")
        leads[canonical] = ((digital[i].astype(np.float64) - baselines[i]) / gains[i] * scale).astype(np.float32)
    missing = [lead for lead in INDEPENDENT_LEADS if lead not in leads]
    if missing:
        raise IngestError(Reason.MISSING_LEAD, f"{name}: record lacks lead(s) {', '.join(missing)}")
    derived = derive_limb_leads(leads["I"].astype(np.float64), leads["II"].astype(np.float64))
    signals = np.stack([leads[k] if k in leads else derived[k].astype(np.float32) for k in LEADS])
    meta = _comment_metadata(header.comments, name)
    meta.update(ptbxl_metadata(hea_path))
    meta.setdefault("device", "")
    return ECGRecord(signals=signals, fs=fs, source_format="wfdb", source_path=name, meta=meta)


def _comment_metadata(comments: list[str], name: str = "") -> dict:
    """Header comments in both conventions: PhysioNet/CinC `#Age: 85`, `#Sex: Male`, `#Dx: <SNOMED codes>`,
    `# Patient ID: 123`, and the bracketed `#<age>: 51`, `#<sex>: F`, `#<diagnoses>:` form, whose diagnosis
    block is the comment lines after it (one statement each). Diagnoses are kept for the header map
    (heartbeit.data.ingest.header_labels: `dx_codes`, `dx_statements`); every other comment is ignored."""
    meta: dict = {"dx_codes": [], "dx_statements": []}
    in_dx_block = False
    for c in comments:
        raw_key, sep, value = c.partition(":")
        key, value = " ".join(raw_key.strip().strip("<>").replace("_", " ").split()).lower(), value.strip()
        if in_dx_block and (not sep or key not in _KNOWN_KEYS):
            meta["dx_statements"].append(c.strip())  # `#Rhythm: Sinus rhythm.` and `#LVH.` alike
            continue
        in_dx_block = False
        if key in ("patient id", "patient", "subject id", "mrn"):
            if not value:
                raise IngestError(Reason.BAD_PATIENT_ID, f"{name}: header comment gives an empty patient id")
            meta["patient_id"] = meta["mrn"] = value
        elif key == "age":
            try:
                meta["age"] = float(value.lstrip("<>= "))  # `>89` (ages capped at export) counts as 89
            except ValueError:
                pass
        elif key == "sex":
            v = value.upper()
            meta["sex"] = "M" if v in ("MALE", "M") else "F" if v in ("FEMALE", "F") else ""
        elif key == "dx":
            meta["dx_codes"] += [code.strip() for code in value.split(",") if code.strip()]
        elif key in ("diagnoses", "diagnosis"):
            if value:
                meta["dx_statements"].append(value)
            else:
                in_dx_block = True
    return meta


_KNOWN_KEYS = {"patient id", "patient", "subject id", "mrn", "age", "sex", "dx", "diagnoses", "diagnosis"}


# ---- PTB-XL layout -----------------------------------------------------------------------------------

PTBXL_DATABASE = "ptbxl_database.csv"


def _find_ptbxl_db(hea_path: Path) -> Path | None:
    for parent in list(hea_path.parents)[:4]:
        candidate = parent / PTBXL_DATABASE
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=8)
def _load_ptbxl_db(db_path: str) -> dict[str, dict]:
    import pandas as pd

    df = pd.read_csv(db_path, dtype=str, keep_default_na=False)
    index: dict[str, dict] = {}
    for row in df.to_dict("records"):
        for col in ("filename_hr", "filename_lr"):
            if row.get(col):
                index[row[col]] = row
    return index


def ptbxl_metadata(hea_path: Path) -> dict:
    """Metadata of a record in a PTB-XL tree (ptbxl_database.csv in an ancestor folder), else {}."""
    db = _find_ptbxl_db(hea_path)
    if db is None:
        return {}
    rel = hea_path.with_suffix("").relative_to(db.parent).as_posix()
    row = _load_ptbxl_db(str(db)).get(rel)
    if row is None:  # without its row a record has no patient id (no patient-level split) and no labels
        raise IngestError(Reason.MALFORMED, f"{hea_path.name}: not a row of {db.name} (no patient id or labels)")
    if not (row.get("patient_id") or "").strip():
        raise IngestError(Reason.BAD_PATIENT_ID, f"{hea_path.name}: its {db.name} row has no patient_id")
    from heartbeit.data.ingest.ptbxl import parse_scp_codes

    def num(key):
        try:
            return float(row.get(key, ""))
        except ValueError:
            return None

    sex = {"0": "M", "0.0": "M", "1": "F", "1.0": "F"}.get(row.get("sex", ""), "")
    from heartbeit.data.ingest.muse import parse_date

    date = (row.get("recording_date") or "")[:10]
    return {
        "patient_id": row.get("patient_id") or None,
        "mrn": row.get("patient_id") or None,
        "accession": row.get("ecg_id") or None,
        "ecg_id": row.get("ecg_id") or None,
        "operator": row.get("nurse") or None,
        "physician": row.get("validated_by") or None,
        "acquisition_date": parse_date(date),
        "age": num("age"),
        "sex": sex,
        "ptbxl_dir": str(db.parent),  # its folder names the site when it is the input root or above it
        "device": " ".join((row.get("device") or "").split()),
        "strat_fold": num("strat_fold"),
        "scp_codes": parse_scp_codes(row.get("scp_codes", "")),
        "infarction_stadium1": row.get("infarction_stadium1", ""),
        "infarction_stadium2": row.get("infarction_stadium2", ""),
        "diagnosis": [row.get("report", "")],
    }
