"""De-identification to the HIPAA Safe Harbor standard (45 CFR 164.514(b)(2)).

What leaves ingest is built from an allow-list (`deidentify`), never by deleting keys from the reader's
metadata, so a field a reader adds later cannot leak by default:
- patient id -> `patient_hash` = HMAC-SHA256(key, patient id), hex. Records without a patient id get
  the hash of their own ecg_uid (each is its own patient for splitting).
- dropped: names, MRN, accession and order numbers, birth date, device serial / cart numbers, operator and
  physician names, location names below the site level, every free-text field (diagnosis statements,
  PTB-XL reports, header comments).
- kept: site, device model, sex, age (capped at 90: Safe Harbor aggregates ages over 89), age band,
  measurements, labels.
- dates: `year` (default, Safe Harbor) keeps the acquisition year only; `shift` moves the whole date by a
  per-patient keyed offset of up to +-date_shift_max_days (intervals within a patient survive; the year
  may change). Shifted dates are *not* Safe Harbor; use them under an expert determination.
The key file is created with mode 0600 on first use and is never written to outputs or logs."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import os
import secrets
from pathlib import Path

from .labels import TASK_COLUMNS

AGE_CAP = 90
UID_HEX = 20
MIN_KEY_BYTES = 16


class KeyFileError(ValueError):
    pass


def load_or_create_key(path: str | Path) -> bytes:
    """Read the HMAC key; create it (32 random bytes, hex, mode 0600) if it does not exist yet."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(path.parent, 0o700)
        except OSError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"key file {path} is too short (need >= {MIN_KEY_BYTES} bytes)")
    return key


def keyed_hash(key: bytes, domain: str, value: bytes | str) -> str:
    """HMAC-SHA256 with a domain tag so hashes of different kinds never collide or correlate."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return hmac.new(key, domain.encode() + b"\x00" + value, hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """Identifies which key made a corpus without revealing it (for the resume/no-op check)."""
    return keyed_hash(key, "fingerprint", b"heartbeit")[:16]


def ecg_uid(key: bytes, waveform_digest: bytes) -> str:
    return keyed_hash(key, "ecg", waveform_digest)[:UID_HEX]


def patient_hash(key: bytes, patient_id: str) -> str:
    return keyed_hash(key, "patient", patient_id.strip())


def cap_age(age: float | None) -> float:
    if age is None or not math.isfinite(age) or age < 0:
        return math.nan
    return float(min(math.floor(age), AGE_CAP))


def age_band(age: float) -> str:
    if not math.isfinite(age):
        return ""
    if age >= AGE_CAP:
        return "90+"
    if age < 18:
        return "0-17"
    lo = int(age // 10 * 10)
    return f"{max(lo, 18)}-{lo + 9}"


def date_fields(key: bytes, patient: str | None, date: dt.date | None, policy: str, max_days: int) -> dict:
    if date is None:
        return {"year": math.nan} if policy == "year" else {"year": math.nan, "acquisition_date": ""}
    if policy == "year":
        return {"year": float(date.year)}
    offset = int(keyed_hash(key, "dateshift", patient or "")[:8], 16) % (2 * max_days + 1) - max_days
    shifted = date + dt.timedelta(days=offset)
    return {"year": float(shifted.year), "acquisition_date": shifted.isoformat()}


def _identifier_values(meta: dict) -> list[str]:
    from .record import IDENTIFIER_KEYS

    values = []
    for k in IDENTIFIER_KEYS + ("ecg_id",):
        v = meta.get(k)
        if isinstance(v, dt.date):
            values += [v.isoformat(), v.strftime("%m-%d-%Y")]
        elif v not in (None, ""):
            values.append(str(v).strip())
    return [v for v in values if len(v) >= 3]


def _clean_text(value: str, identifiers: list[str]) -> str:
    """Site/device strings are kept, unless one of the record's own identifiers appears inside them."""
    value = " ".join(str(value or "").split())[:64]
    return "" if any(ident.lower() in value.lower() for ident in identifiers) else value


def deidentify(meta: dict, labels: dict[str, float], uid: str, key: bytes, policy: str = "year",
               max_shift_days: int = 365) -> dict:
    """The corpus row for one record: allow-listed, transformed fields only."""
    identifiers = _identifier_values(meta)
    pid = meta.get("patient_id") or meta.get("mrn")
    pid = str(pid).strip() if pid not in (None, "") else None
    age = meta.get("age")
    if (age is None or not math.isfinite(age)) and meta.get("birth_date") and meta.get("acquisition_date"):
        age = (meta["acquisition_date"] - meta["birth_date"]).days / 365.25
    age = cap_age(age)
    row = {
        "ecg_uid": uid,
        "patient_hash": patient_hash(key, pid) if pid else keyed_hash(key, "patient-of-ecg", uid),
        "site": _clean_text(meta.get("site", ""), identifiers),
        "device": _clean_text(meta.get("device", ""), identifiers),
        "sex": meta.get("sex") if meta.get("sex") in ("M", "F") else "",
        "age": age,
        "age_band": age_band(age),
    }
    row.update(date_fields(key, pid, meta.get("acquisition_date"), policy, max_shift_days))
    for col in TASK_COLUMNS:
        row[col] = float(labels.get(col, math.nan))
    for col, value in sorted((meta.get("measurements") or {}).items()):
        row[col] = float(value)
    if meta.get("strat_fold") is not None:
        row["strat_fold"] = float(meta["strat_fold"])
    return row
