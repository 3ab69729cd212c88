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
- site: never a free-text field as written. A site text read from inside a file (MUSE `<SiteName>`, a
  sidecar's "site") maps through `ingest.site_map` when listed there, else becomes a keyed pseudonym
  `site-<8 hex>` (the code -> text table lives in `<out>/private/site_codes.json`); files without one take
  their input root's label (heartbeit.data.ingest.listing).
- device: the model only (`device_model`): a serial number after it is cut.
The key file is created with mode 0600 on first use and is never written to outputs or logs.

Synthetic data (written by `heartbeit synth`, which declares itself in synth.json) is hashed under the
fixed public key `PUBLIC_SYNTH_KEY` instead, so the demo's splits and shard bytes are the same on every
machine. `key_for` refuses that key for anything that is not wholly synthetic."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import os
import re
import secrets
import stat
from pathlib import Path

from heartbeit.data.ingest.labels import TASK_COLUMNS

AGE_CAP = 90
UID_HEX = 20
MIN_KEY_BYTES = 16


# Public on purpose (documented in the README): it makes synthetic demo runs reproducible across machines.
# Hashes under it protect nothing, so ingest uses it for synthetic input only.
PUBLIC_SYNTH_KEY = b"heartbeit-public-synthetic-demo-key-v1:not-for-real-data"


class KeyFileError(ValueError):
    pass


def load_or_create_key(path: str | Path) -> bytes:
    """Read the HMAC key; create it (32 random bytes, hex, mode 0600) if it does not exist yet.
    Only a folder created here is made private (0700): an existing one (e.g. a shared 1777 /tmp) is left
    as it is; the key file's own 0600 mode protects it."""
    path = Path(path)
    if not path.exists():
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in missing:
            try:
                os.chmod(folder, 0o700)
            except OSError:
                pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file (a folder?); give the key file itself")
    mode = st.st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"key file {path} is too short (need >= {MIN_KEY_BYTES} bytes)")
    return key


def check_key(key: bytes, synthetic: bool | None) -> None:
    """Refuse the public synthetic key for input that is not wholly synthetic."""
    if key.strip() == PUBLIC_SYNTH_KEY and synthetic is not True:
        raise KeyFileError("the public synthetic-data key may only hash synthetic input (written by `heartbeit "
                           "synth`); use a private key file for real data")


def key_for(synthetic: bool | None, key_path: str | Path) -> bytes:
    """The key an ingest uses: the public one for synthetic input, the private key file otherwise."""
    if synthetic is None:
        raise KeyFileError("inputs mix synthetic files (from `heartbeit synth`) and other files; ingest them "
                           "into separate corpora")
    if synthetic:
        return PUBLIC_SYNTH_KEY
    key = load_or_create_key(key_path)
    check_key(key, synthetic)
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
    from heartbeit.data.record import IDENTIFIER_KEYS

    values = []
    for k in IDENTIFIER_KEYS + ("ecg_id",):
        v = meta.get(k)
        if isinstance(v, dt.date):
            values += [v.isoformat(), v.strftime("%m-%d-%Y")]
        elif v not in (None, ""):
            values.append(str(v).strip())
    return [v for v in values if len(v) >= 3]


def _clean_text(value: str, identifiers: list[str]) -> str:
    """Device strings are kept, unless one of the record's own identifiers appears inside them."""
    value = " ".join(str(value or "").split())[:64]
    return "" if any(ident.lower() in value.lower() for ident in identifiers) else value


_SERIAL_WORDS = {"sn", "s/n", "s.n.", "serial", "ser", "ser.", "no", "no.", "nr", "nr.", "#", "id", "sn:", "s/n:"}
_SERIAL_TOKEN = re.compile(r"^(sn|s/n|serial|ser)[:#=-]?\w*\d", re.I)


def device_model(text: str) -> str:
    """The device model from an acquisition-device field: the words before a serial number. A serial is
    announced ("SN", "S/N", "Serial", "#", "No") or is a token with five or more digits (model numbers
    such as MAC5500 have at most four)."""
    keep: list[str] = []
    for token in str(text or "").split():
        if token.lower() in _SERIAL_WORDS or _SERIAL_TOKEN.match(token) or token.startswith("#"):
            break
        if sum(c.isdigit() for c in token) >= 5:
            break
        keep.append(token)
    return " ".join(keep[:4])[:32]


def site_code(key: bytes, text: str) -> str:
    """Keyed pseudonym of a free-text site field (the same text gives the same code under one key)."""
    return "site-" + keyed_hash(key, "site", " ".join(str(text).split()).lower())[:8]


def resolve_site(raw: str, fallback: str, declared: bool, key: bytes,
                 site_map: dict[str, str]) -> tuple[str, str | None]:
    """(site label, free text behind a pseudonym or None). `declared`: the fallback is a site the
    synthetic writer declared (or `--site`), which wins over any text in the file."""
    raw = " ".join(str(raw or "").split())
    if declared or not raw:
        return fallback, None
    if raw in site_map:
        return site_map[raw], None
    return site_code(key, raw), raw


def deidentify(meta: dict, labels: dict[str, float], uid: str, key: bytes, policy: str = "year",
               max_shift_days: int = 365) -> dict:
    """The corpus row for one record: allow-listed, transformed fields only."""
    identifiers = _identifier_values(meta)
    pid = meta.get("patient_id") or meta.get("mrn")
    pid = pid.strip() if isinstance(pid, str) and pid.strip() else None  # readers refuse non-string ids
    age = meta.get("age")
    if (age is None or not math.isfinite(age)) and meta.get("birth_date") and meta.get("acquisition_date"):
        age = (meta["acquisition_date"] - meta["birth_date"]).days / 365.25
    age = cap_age(age)
    row = {
        "ecg_uid": uid,
        "patient_hash": patient_hash(key, pid) if pid else keyed_hash(key, "patient-of-ecg", uid),
        "site": meta.get("site", ""),  # already resolved by ingest (resolve_site): a label, never file text
        "device": _clean_text(device_model(meta.get("device", "")), identifiers),
        "sex": meta.get("sex") if meta.get("sex") in ("M", "F") else "",
        "age": age,
        "age_band": age_band(age),
    }
    row.update(date_fields(key, pid, meta.get("acquisition_date"), policy, max_shift_days))
    for col in (*TASK_COLUMNS, *sorted(set(labels) - set(TASK_COLUMNS))):  # the paper's, then your own
        row[col] = float(labels.get(col, math.nan))
    for col, value in sorted((meta.get("measurements") or {}).items()):
        row[col] = float(value)
    if meta.get("strat_fold") is not None:
        row["strat_fold"] = float(meta["strat_fold"])
    return row
