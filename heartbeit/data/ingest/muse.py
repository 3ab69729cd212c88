"""GE MUSE RestingECG XML reader.

Safety first, then speed: a document with an internal DTD subset or an ENTITY declaration, or in an
encoding other than UTF-8/ASCII/Latin-1, goes through defusedxml (entity declarations and external entities are refused before expansion);
a document without them cannot declare entities, so it is parsed with the C ElementTree parser
directly (defusedxml's Python-level handlers made ingest slower than a plain ElementTree script). Element
count is bounded (`max_elements`) before parsing, so deeply nested or bloated XML is refused, not built.
UTF-16 exports (with a byte-order mark or `<\0?\0`) are transcoded to UTF-8 first.
Waveforms are picked by `<WaveformType>` (never by position); the rate is SampleBase x 10^SampleExponent;
`WaveFormData` is base64 of little-endian int16 samples, scaled by `LeadAmplitudeUnitsPerBit` to
microvolts. MUSE stores I, II, V1-V6; III, aVR, aVL and aVF are derived (heartbeit.data.leads).
Every structural check (base64, byte counts, CRC32, lead set, rate) raises IngestError with a Reason and
a detail that never quotes an identifier from the file."""
from __future__ import annotations

import binascii
import datetime as dt
import re
import zlib
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError, XMLParser

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX, derive_limb_leads, normalize_lead_name
from heartbeit.data.reasons import IngestError, Reason
from heartbeit.data.record import ECGRecord

# expat error codes that mean "the document stopped early" rather than "the document is wrong".
_EXPAT_TRUNCATION_CODES = {3, 5, 6}  # no element found, unclosed token, partial character
# A plausible ADC resolution; outside it the export's gain field is wrong (e.g. raw counts as uV).
UNITS_PER_BIT_RANGE_UV = (0.1, 50.0)

# RestingECGMeasurements element -> corpus column (measurements are kept: not identifiers).
MEASUREMENTS = {
    "VentricularRate": "ventricular_rate",
    "AtrialRate": "atrial_rate",
    "PRInterval": "pr_interval_ms",
    "QRSDuration": "qrs_duration_ms",
    "QTInterval": "qt_interval_ms",
    "QTCorrected": "qtc_ms",
    "PAxis": "p_axis",
    "RAxis": "r_axis",
    "TAxis": "t_axis",
}


_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_FAST_ENCODINGS = {b"utf-8", b"utf8", b"us-ascii", b"ascii", b"iso-8859-1", b"latin-1", b"latin1"}
DEFAULT_MAX_ELEMENTS = 200_000
_BASE64_AND_SPACE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"


def looks_like_utf16_xml(head: bytes) -> bool:
    return head.startswith((b"\xff\xfe<", b"\xfe\xff\x00<", b"<\x00?\x00", b"\x00<\x00?"))


def _to_utf8(data: bytes, name: str) -> bytes:
    """UTF-16 XML -> UTF-8 bytes with the declaration's encoding fixed (MUSE itself writes UTF-8)."""
    if not looks_like_utf16_xml(data[:4]):
        return data
    try:
        text = data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else
                           ("utf-16-le" if data[:1] == b"<" else "utf-16-be"))
    except UnicodeDecodeError:
        raise IngestError(Reason.MALFORMED, f"{name}: UTF-16 XML with invalid characters") from None
    text = re.sub(r"^(\s*<\?xml[^>]*?encoding\s*=\s*[\"'])[A-Za-z0-9._-]+", r"\1UTF-8", text.lstrip("\ufeff"))
    return text.encode("utf-8")


def looks_like_muse(head: bytes) -> bool:
    """Content sniff on the first few KiB: an XML document whose root is RestingECG."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith(b"<") and b"RestingECG" in head


def parse_date(text: str | None) -> dt.date | None:
    """MUSE writes MM-DD-YYYY; some exports use ISO or MM/DD/YYYY."""
    if not text:
        return None
    text = text.strip()
    for fmt in ("%m-%d-%Y", "%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _fast_parse_safe(data: bytes) -> bool:
    """True when the document cannot declare entities and expat reads its encoding natively. MUSE writes
    `<!DOCTYPE RestingECG SYSTEM "restecg.dtd">`: a reference the C parser never loads (it has no external
    entity handler), so only an internal subset (`[...]`) or an ENTITY declaration needs defusedxml."""
    if b"<!ENTITY" in data:
        return False
    doctype = data.find(b"<!DOCTYPE")
    if doctype >= 0:
        end = data.find(b">", doctype)
        if end < 0 or b"[" in data[doctype:end] or data.find(b"<!DOCTYPE", end) >= 0:
            return False
    m = _XML_DECL_ENCODING.match(data[:200])
    return m is None or m.group(1).lower() in _FAST_ENCODINGS


def _parse_xml(data: bytes, name: str, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Element:
    if not data.strip():
        raise IngestError(Reason.UNREADABLE, f"{name}: empty file")
    if data.count(b"<") > max_elements:
        raise IngestError(Reason.TOO_LARGE, f"{name}: more than {max_elements} XML elements "
                                            f"(ingest.max_xml_elements; a MUSE export has a few hundred)")
    try:
        if _fast_parse_safe(data):
            parser = XMLParser()
            parser.feed(data)
            return parser.close()
        return SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        # Never echo the entity names/system ids: they are attacker- (or patient-) controlled text.
        raise IngestError(Reason.XML_UNSAFE, f"{name}: XML declares entities or external references; refused") from None
    except ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        if getattr(exc, "code", None) in _EXPAT_TRUNCATION_CODES:
            raise IngestError(Reason.TRUNCATED, f"{name}: XML ends early (line {line})") from None
        raise IngestError(Reason.MALFORMED, f"{name}: XML not well-formed at line {line}, column {col}") from None


def _text(node: Element | None, tag: str) -> str | None:
    if node is None:
        return None
    value = node.findtext(tag)
    return value.strip() if value is not None and value.strip() else None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _rate(node: Element, base_tag: str, exp_tag: str, name: str) -> float | None:
    base, exp = _text(node, base_tag), _text(node, exp_tag)
    if base is None:
        return None
    try:
        return float(base) * 10.0 ** int(exp or 0)
    except (ValueError, OverflowError):
        raise IngestError(Reason.MALFORMED, f"{name}: {base_tag}/{exp_tag} are not numbers") from None


def _decode_lead(lead: Element, name: str, label: str) -> tuple[bytes, float, int]:
    """Decode one LeadData block; returns (raw bytes, microvolts per bit, sample count)."""
    payload = lead.findtext("WaveFormData")
    if payload is None:
        raise IngestError(Reason.MALFORMED, f"{name}: lead {label} has no WaveFormData")
    # One C pass each: refuse anything but the base64 alphabet and whitespace, then decode (a2b_base64 skips
    # the line breaks). Stripping whitespace in Python first (split/join) cost more than the XML parse.
    try:
        encoded = payload.encode("ascii")
        if encoded.translate(None, _BASE64_AND_SPACE):
            raise ValueError("not base64")
        raw = binascii.a2b_base64(encoded)
    except (binascii.Error, ValueError):
        raise IngestError(Reason.BAD_BASE64, f"{name}: lead {label} WaveFormData is not valid base64") from None
    try:
        n_samples = int(_text(lead, "LeadSampleCountTotal") or -1)
        n_bytes = int(_text(lead, "LeadByteCountTotal") or -1)
        sample_size = int(_text(lead, "LeadSampleSize") or 2)
        units_per_bit = float(_text(lead, "LeadAmplitudeUnitsPerBit") or "nan")
    except ValueError:
        raise IngestError(Reason.MALFORMED, f"{name}: lead {label} has non-numeric count/gain fields") from None
    if sample_size != 2:
        raise IngestError(Reason.UNSUPPORTED, f"{name}: lead {label} uses {sample_size}-byte samples (only int16)")
    if n_samples < 0 and n_bytes < 0:
        n_samples = len(raw) // 2  # neither count given: nothing to contradict
    if n_bytes >= 0 and n_bytes != len(raw):
        raise IngestError(Reason.BYTE_COUNT, f"{name}: lead {label} decodes to {len(raw)} bytes, header says {n_bytes}")
    if n_samples >= 0 and n_samples * 2 != len(raw):
        raise IngestError(Reason.BYTE_COUNT,
                          f"{name}: lead {label} decodes to {len(raw) // 2} samples, header says {n_samples}")
    if not raw:  # checked before the CRC, which an empty lead can only fail: the reason is the emptiness
        raise IngestError(Reason.TOO_SHORT, f"{name}: lead {label} holds no samples")
    crc = _text(lead, "LeadDataCRC32")
    if crc is not None:
        try:
            expected = int(crc)
        except ValueError:
            raise IngestError(Reason.MALFORMED, f"{name}: lead {label} LeadDataCRC32 is not a number") from None
        if zlib.crc32(raw) != expected:
            raise IngestError(Reason.CRC_MISMATCH, f"{name}: lead {label} CRC32 does not match its data")
    units = (_text(lead, "LeadAmplitudeUnits") or "MICROVOLTS").upper()
    if units in ("MILLIVOLTS", "MV"):
        units_per_bit *= 1000.0
    elif units not in ("MICROVOLTS", "UV"):
        # never quote the field: it is text from inside the file
        raise IngestError(Reason.UNSUPPORTED, f"{name}: lead {label} amplitude units not supported (need "
                                              f"MICROVOLTS or MILLIVOLTS)")
    if not (UNITS_PER_BIT_RANGE_UV[0] <= units_per_bit <= UNITS_PER_BIT_RANGE_UV[1]):
        raise IngestError(Reason.IMPLAUSIBLE_AMPLITUDE,
                          f"{name}: lead {label} gain {units_per_bit:g} uV/bit outside {UNITS_PER_BIT_RANGE_UV}")
    return raw, units_per_bit, len(raw) // 2


def _waveform(root: Element, waveform_type: str, name: str) -> Element:
    matches = [w for w in root.iter("Waveform") if (_text(w, "WaveformType") or "").lower() == waveform_type.lower()]
    if not matches:
        raise IngestError(Reason.NO_WAVEFORM, f"{name}: no <Waveform> of type {waveform_type}")
    return matches[0]


def read_waveform(root: Element, waveform_type: str, name: str) -> tuple["np.ndarray", float]:
    """[12, n] float32 mV and the sampling rate of the waveform block of the given type."""
    import numpy as np

    wave = _waveform(root, waveform_type, name)
    fs = _rate(wave, "SampleBase", "SampleExponent", name)
    if fs is None:
        raise IngestError(Reason.MALFORMED, f"{name}: {waveform_type} waveform has no SampleBase")
    leads: dict[str, tuple[bytes, float]] = {}
    for lead in wave.iter("LeadData"):
        label = _text(lead, "LeadID") or "?"
        canonical = normalize_lead_name(label)
        if canonical is None:
            continue  # not one of the 12 standard leads
        if canonical in leads:
            raise IngestError(Reason.DUPLICATE_LEAD, f"{name}: lead {canonical} appears twice")
        raw, uv_per_bit, _ = _decode_lead(lead, name, canonical)
        leads[canonical] = (raw, uv_per_bit)
    missing = [lead for lead in INDEPENDENT_LEADS if lead not in leads]
    if missing:
        raise IngestError(Reason.MISSING_LEAD, f"{name}: {waveform_type} waveform lacks lead(s) {', '.join(missing)}")
    lengths = {len(leads[k][0]) // 2 for k in INDEPENDENT_LEADS}
    if len(lengths) != 1:
        raise IngestError(Reason.BYTE_COUNT, f"{name}: leads have different lengths {sorted(lengths)}")
    # Straight into one float32 [12, n] array (the same values twelve_from_independent gives, with one
    # conversion per lead instead of four: this loop was the reader's cost beyond the XML parse).
    out = np.empty((12, lengths.pop()), dtype=np.float32)
    for k in INDEPENDENT_LEADS:
        raw, uv_per_bit = leads[k]
        np.multiply(np.frombuffer(raw, dtype="<i2"), np.float32(uv_per_bit / 1000.0), out=out[LEAD_INDEX[k]])
    for k, v in derive_limb_leads(out[LEAD_INDEX["I"]].astype(np.float64),
                                  out[LEAD_INDEX["II"]].astype(np.float64)).items():
        out[LEAD_INDEX[k]] = v
    return out, fs


def _metadata(root: Element, name: str) -> dict:
    patient = root.find("PatientDemographics")
    test = root.find("TestDemographics")
    order = root.find("Order")
    meas = root.find("RestingECGMeasurements")
    age = _number(_text(patient, "PatientAge"))
    age_units = (_text(patient, "AgeUnits") or "YEARS").upper()
    if age is not None and age_units != "YEARS":
        age = age / {"MONTHS": 12.0, "WEEKS": 52.0, "DAYS": 365.25, "HOURS": 8766.0}.get(age_units, float("nan"))
    gender = (_text(patient, "Gender") or "").upper()
    meta = {
        # identifiers (deid.py drops or hashes every one of these)
        "patient_id": _text(patient, "PatientID"),
        "mrn": _text(patient, "PatientID"),
        "first_name": _text(patient, "PatientFirstName"),
        "last_name": _text(patient, "PatientLastName"),
        "birth_date": parse_date(_text(patient, "DateofBirth")),
        "accession": _text(order, "AccessionNumber") or _text(test, "AccessionNumber"),
        "order_number": _text(order, "OrderNumber"),
        "cart_number": _text(test, "CartNumber"),
        "operator": _text(test, "OperatorLastName"),
        "physician": _text(order, "OrderingMDLastName") or _text(test, "OverreaderLastName"),
        "location_name": _text(test, "LocationName"),
        "acquisition_date": parse_date(_text(test, "AcquisitionDate")),
        "diagnosis": [(s.text or "").strip() for s in root.iterfind("Diagnosis/DiagnosisStatement/StmtText")],
        # kept
        "age": age,
        "sex": "M" if gender in ("MALE", "M") else "F" if gender in ("FEMALE", "F") else "",
        "site": _text(test, "SiteName") or _text(test, "Site") or "",
        "device": _text(test, "AcquisitionDevice") or "",
        "measurements": {col: v for tag, col in MEASUREMENTS.items()
                         if (v := _number(_text(meas, tag))) is not None},
    }
    return meta


def parse_muse(data: bytes, name: str, waveform_type: str = "Rhythm",
               max_elements: int = DEFAULT_MAX_ELEMENTS) -> ECGRecord:
    """Parse MUSE XML bytes. `name` (the file's path relative to its input root) is used in messages."""
    root = _parse_xml(_to_utf8(data, name), name, max_elements)
    if root.tag != "RestingECG":
        raise IngestError(Reason.UNSUPPORTED, f"{name}: XML root is not <RestingECG> (not a GE MUSE export)")
    signals, fs = read_waveform(root, waveform_type, name)
    meas = root.find("RestingECGMeasurements")
    declared = _rate(meas, "ECGSampleBase", "ECGSampleExponent", name) if meas is not None else None
    if declared is not None and abs(declared - fs) > 1e-6 * max(fs, 1.0) and waveform_type.lower() == "rhythm":
        raise IngestError(Reason.RATE_MISMATCH,
                          f"{name}: waveform says {fs:g} Hz, measurements block says {declared:g} Hz")
    meta = _metadata(root, name)
    meta["waveform"] = waveform_type
    return ECGRecord(signals=signals, fs=fs, source_format="muse", source_path=name, meta=meta)


def read_muse(path: str | Path, waveform_type: str = "Rhythm", name: str | None = None) -> ECGRecord:
    path = Path(path)
    name = name or path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(Reason.UNREADABLE, f"{name}: cannot read ({type(exc).__name__})") from None
    return parse_muse(data, name, waveform_type)
