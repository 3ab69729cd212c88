"""Array readers: `.npy`, `.npz` and MATLAB `.mat` (v4-v7.2 via scipy.io; v7.3/HDF5 is refused).

An array carries no rate, units or lead order, so they come from a sidecar `<stem>.json` beside it
({"fs", "units": "mV"|"uV"|"V", "leads": [...], "site", "device", "accession", "mrn", "sex", "age",
"acquisition_date"}) or, for a whole folder without sidecars, from CLI flags (--fs/--units/--leads,
IngestConfig.array_*). The sidecar wins over the flags. MATLAB files may also carry the CPSC 2018 struct
(`ECG.data`, `ECG.sex`, `ECG.age`). Arrays are loaded with allow_pickle=False (never unpickled), and
their declared sizes are checked before anything is allocated (`max_bytes`: a tiny compressed npz can
declare gigabytes). A sidecar's `patient_id`/`mrn` must be a non-empty string (`true` or 12.0 would hash
alike for everyone); its `site` is free text that ingest maps or pseudonymises."""
from __future__ import annotations

import json
import struct
import zipfile
import zlib
from math import prod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heartbeit.data.leads import INDEPENDENT_LEADS, LEADS, derive_limb_leads, normalize_lead_name
from heartbeit.data.reasons import IngestError, Reason
from heartbeit.data.record import ECGRecord

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAT5_MAGIC = b"MATLAB 5.0 MAT-file"
UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
MAX_SIDECAR_BYTES = 64 * 1024
SIGNAL_KEYS = ("signals", "signal", "ecg", "data", "val", "x")


@dataclass
class ArrayDefaults:
    """What CLI flags say about arrays that have no sidecar."""

    fs: float = 0.0
    units: str = "mV"
    leads: list[str] = field(default_factory=list)


# MATLAB v4 (little-endian) matrix header type codes: 10*P + T, P the element type 0..5, T 0 (full) / 1 (text)
MAT4_TYPES = {10 * p + t for p in range(6) for t in (0, 1)}
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def looks_like_mat4(head: bytes) -> bool:
    """A v4 MAT file has no magic: a 20-byte header (type, rows, cols, imag flag, name length), then the name."""
    if len(head) < 21:
        return False
    mopt, rows, cols, imagf, namlen = np.frombuffer(head[:20], "<i4")
    if not (mopt in MAT4_TYPES and 0 < rows < 1 << 28 and 0 < cols < 1 << 28 and imagf in (0, 1) and 1 < namlen < 64):
        return False
    name = head[20:20 + namlen]
    return len(name) == namlen and name.endswith(b"\0") and name[:-1].isascii() and name[:-1].decode().isidentifier()


def sniff_array(head: bytes) -> str | None:
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head.startswith(MAT5_MAGIC) or head[:116].startswith(b"MATLAB 7.3 MAT-file") or looks_like_mat4(head):
        return "mat"
    return None


def _npy_nbytes(fh) -> int:
    """Bytes the npy stream's header declares (read without allocating the array)."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = reader(fh)
    return int(prod(shape)) * dtype.itemsize


def _mat5_inflated_bytes(path: Path, max_bytes: int) -> int:
    """Bytes a MAT v5 file's data elements hold once inflated, counted by streaming each compressed element
    through zlib in 1 MiB pieces and stopping past `max_bytes`: memory stays bounded where scipy's loadmat
    (and even whosmat) would inflate a whole 0.2 MB -> 200 MB element at once. v4 files cannot compress."""
    total = 0
    with open(path, "rb") as fh:
        header = fh.read(128)
        if not header.startswith(MAT5_MAGIC) or len(header) < 128:
            return 0
        endian = "<" if header[126:128] == b"IM" else ">"
        while total <= max_bytes:
            tag = fh.read(8)
            if len(tag) < 8:
                break
            dtype, nbytes = struct.unpack(endian + "II", tag)
            if dtype >> 16:  # small data element: type and size packed in 4 bytes, data in the other 4
                continue
            if dtype != 15:  # not miCOMPRESSED: its size is what it takes on disk
                total += nbytes
                fh.seek(nbytes + (-nbytes % 8), 1)
                continue
            inflate = zlib.decompressobj()
            left = nbytes
            try:
                while left > 0 and total <= max_bytes:
                    chunk = fh.read(min(1 << 20, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    data = chunk
                    while data and total <= max_bytes:
                        total += len(inflate.decompress(data, 1 << 20))
                        data = inflate.unconsumed_tail
            except zlib.error:
                return total  # damaged: scipy names the problem when it reads the file
            fh.seek(left, 1)
    return total


def _check_size(nbytes: int, max_bytes: int, name: str) -> None:
    if nbytes > max_bytes:
        raise IngestError(Reason.TOO_LARGE, f"{name}: array declares {nbytes} bytes, over ingest.max_decompressed_mb")


def _load_sidecar(path: Path, name: str) -> dict:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
            raise IngestError(Reason.MALFORMED, f"{name}: sidecar {sidecar.name} is too large")
        data = json.loads(sidecar.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise IngestError(Reason.MALFORMED, f"{name}: sidecar {sidecar.name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise IngestError(Reason.MALFORMED, f"{name}: sidecar {sidecar.name} is not a JSON object")
    return data


def _pick_array(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    for key in SIGNAL_KEYS:
        if key in arrays:
            return arrays[key]
    numeric = [v for v in arrays.values() if isinstance(v, np.ndarray) and v.dtype.kind in "fiu" and v.ndim == 2]
    if len(numeric) == 1:
        return numeric[0]
    raise IngestError(Reason.MALFORMED, f"{name}: no signal array (looked for {', '.join(SIGNAL_KEYS)})")


def _load_npz(path: Path, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                if info.file_size > max_bytes:
                    _check_size(info.file_size, max_bytes, name)
                with zf.open(info) as member:
                    total += _npy_nbytes(member)
            _check_size(total, max_bytes, name)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if "signals" in keys:
                return z["signals"]
            return _pick_array({k: z[k] for k in keys}, name)
    except IngestError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError):
        raise IngestError(Reason.TRUNCATED, f"{name}: npz archive is damaged or cut short") from None
    except (ValueError, KeyError, NotImplementedError, zipfile.LargeZipFile):
        raise IngestError(Reason.MALFORMED, f"{name}: npz holds object arrays (refused: never unpickled)") from None


def _load_npy(path: Path, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            _check_size(_npy_nbytes(fh), max_bytes, name)
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise IngestError(Reason.MALFORMED, f"{name}: npy holds object arrays (refused: never unpickled)") from None
        raise IngestError(Reason.TRUNCATED, f"{name}: npy data shorter than its header declares") from None
    except (EOFError, OSError):
        raise IngestError(Reason.TRUNCATED, f"{name}: npy file is damaged or cut short") from None


def _load_mat(path: Path, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, dict]:
    import scipy.io

    with open(path, "rb") as fh:
        if fh.read(19).startswith(b"MATLAB 7.3"):
            raise IngestError(Reason.UNSUPPORTED, f"{name}: MATLAB v7.3 (HDF5) files are not supported; save as -v7")
    _check_size(_mat5_inflated_bytes(path, max_bytes), max_bytes, name)
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=True, mat_dtype=False)
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError/TypeError/zlib errors; never echo text
        raise IngestError(Reason.TRUNCATED if isinstance(exc, (EOFError, OSError)) else Reason.MALFORMED,
                          f"{name}: MATLAB file cannot be read ({type(exc).__name__})") from None
    arrays = {k: v for k, v in mat.items() if not k.startswith("__")}
    extra: dict = {}
    ecg = arrays.get("ECG")
    if isinstance(ecg, np.ndarray) and ecg.dtype.names and "data" in ecg.dtype.names:  # CPSC 2018 struct
        item = ecg.flat[0]
        for field_name in ("sex", "age"):
            if field_name in ecg.dtype.names:
                value = np.asarray(item[field_name]).ravel()
                if value.size:
                    extra[field_name] = value[0].item() if hasattr(value[0], "item") else value[0]
        return np.asarray(item["data"]), extra
    return _pick_array(arrays, name), extra


def _orient(sig: np.ndarray, n_leads: int, name: str) -> np.ndarray:
    if sig.ndim != 2:
        raise IngestError(Reason.MALFORMED, f"{name}: signal array has shape {sig.shape}, expected 2-D")
    if sig.shape[0] == n_leads:
        return sig
    if sig.shape[1] == n_leads:
        return sig.T
    raise IngestError(Reason.MISSING_LEAD if min(sig.shape) < n_leads else Reason.MALFORMED,
                      f"{name}: signal array has shape {sig.shape}, expected {n_leads} leads")


def _sex(value) -> str:
    v = str(value or "").strip().upper()
    return "M" if v in ("M", "MALE") else "F" if v in ("F", "FEMALE") else ""


def _number(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f


def _patient_id(sidecar: dict, name: str) -> str | None:
    for k in ("patient_id", "mrn"):
        value = sidecar.get(k)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise IngestError(Reason.BAD_PATIENT_ID, f"{name}: sidecar {k!r} must be a non-empty string")
        return value.strip()
    return None


def read_array(path: str | Path, kind: str | None = None, defaults: ArrayDefaults | None = None,
               name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> ECGRecord:
    path = Path(path)
    name = name or path.name
    defaults = defaults or ArrayDefaults()
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError as exc:
        raise IngestError(Reason.UNREADABLE, f"{name}: cannot read ({type(exc).__name__})") from None
    kind = kind or sniff_array(head)
    if kind is None:
        raise IngestError(Reason.UNREADABLE, f"{name}: not an npy/npz/mat array")
    sidecar = _load_sidecar(path, name)
    extra: dict = {}
    pid = _patient_id(sidecar, name)
    if kind == "npz":
        sig = _load_npz(path, name, max_bytes)
    elif kind == "npy":
        sig = _load_npy(path, name, max_bytes)
    elif kind == "mat":
        sig, extra = _load_mat(path, name, max_bytes)
    else:
        raise IngestError(Reason.UNSUPPORTED, f"{name}: unknown array kind {kind!r}")
    if sig.dtype.kind not in "fiu":
        raise IngestError(Reason.MALFORMED, f"{name}: signal array is not numeric")  # (a dtype can carry field names)

    fs = _number(sidecar.get("fs")) or defaults.fs
    if not fs:
        raise IngestError(Reason.MALFORMED, f"{name}: no sampling rate (give a {path.stem}.json sidecar or --fs)")
    units = str(sidecar.get("units") or defaults.units)
    scale = UNITS_TO_MV.get(units.strip().lower())
    if scale is None:
        raise IngestError(Reason.UNSUPPORTED, f"{name}: units not supported (need mV, uV or V)")
    lead_names = sidecar.get("leads") or defaults.leads or list(LEADS)
    if not isinstance(lead_names, list) or not all(isinstance(x, str) for x in lead_names):
        raise IngestError(Reason.MALFORMED, f"{name}: 'leads' must be a list of lead names")
    sig = _orient(sig, len(lead_names), name)

    leads: dict[str, np.ndarray] = {}
    for i, label in enumerate(lead_names):
        canonical = normalize_lead_name(label)
        if canonical is None:
            continue
        if canonical in leads:
            raise IngestError(Reason.DUPLICATE_LEAD, f"{name}: lead {canonical} appears twice")
        leads[canonical] = sig[i].astype(np.float64) * scale
    missing = [lead for lead in INDEPENDENT_LEADS if lead not in leads]
    if missing:
        raise IngestError(Reason.MISSING_LEAD, f"{name}: array lacks lead(s) {', '.join(missing)}")
    derived = derive_limb_leads(leads["I"], leads["II"])
    signals = np.stack([leads.get(k, derived.get(k)) for k in LEADS]).astype(np.float32)

    from heartbeit.data.ingest.muse import parse_date

    age = _number(sidecar.get("age", extra.get("age")))
    date = sidecar.get("acquisition_date")
    meta = {
        "patient_id": pid,
        "mrn": pid,
        "accession": str(sidecar["accession"]) if sidecar.get("accession") not in (None, "") else None,
        "first_name": sidecar.get("first_name"),
        "last_name": sidecar.get("last_name"),
        "birth_date": parse_date(str(sidecar["birth_date"])) if sidecar.get("birth_date") else None,
        "acquisition_date": parse_date(str(date)[:10]) if date else None,
        "age": age,
        "sex": _sex(sidecar.get("sex", extra.get("sex"))),
        "site": str(sidecar.get("site") or ""),  # free text: ingest maps or pseudonymises it
        "device": str(sidecar.get("device") or ""),
    }
    return ECGRecord(signals=signals, fs=float(fs), source_format=kind, source_path=name, meta=meta)

