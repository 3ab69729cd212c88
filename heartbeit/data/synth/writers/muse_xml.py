"""GE MUSE RestingECG XML export, laid out like MUSE 9 writes it (see ../shared/fixtures/ecg/muse_xml).

Only the eight independent leads (I, II, V1..V6) are stored, each as base64 of little-endian int16 in
68-character lines, with `LeadAmplitudeUnitsPerBit` microvolts per count and a zlib CRC32 of the decoded
bytes. Two waveforms: a 1 s `Median` beat and the 10 s `Rhythm`."""
from __future__ import annotations

import base64
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from heartbeit.data.leads import INDEPENDENT_LEADS
from heartbeit.data.reasons import Reason
from heartbeit.utils.io import atomic_write_bytes

MUSE_DEFECTS: tuple[Reason, ...] = (
    Reason.TRUNCATED, Reason.BAD_BASE64, Reason.MISSING_LEAD, Reason.CRC_MISMATCH,
    Reason.RATE_MISMATCH, Reason.FLAT_LINE, Reason.IMPLAUSIBLE_AMPLITUDE,
)
# A wrong-gain export: counts written at 1 uV/bit while the file still declares 4.88 uV/bit.
WRONG_GAIN_FACTOR = 4.88
_B64_LINE = 68
_FLAT_LEAD = "V3"
_MISSING_LEAD = "V4"
_BAD_B64_LEAD = "V2"
_BAD_CRC_LEAD = "II"


def _tag(name: str, value, indent: int) -> str:
    return f"{' ' * indent}<{name}>{escape(str(value))}</{name}>\n"


def _block(name: str, fields: dict, indent: int) -> str:
    inner = "".join(_tag(k, v, indent + 3) for k, v in fields.items())
    return f"{' ' * indent}<{name}>\n{inner}{' ' * indent}</{name}>\n"


def encode_lead(values_uv: np.ndarray, units_per_bit: float) -> tuple[bytes, int]:
    """int16 little-endian counts (saturating at the ADC rails) and their CRC32."""
    counts = np.clip(np.rint(values_uv / units_per_bit), -32768, 32767).astype("<i2")
    raw = counts.tobytes()
    return raw, zlib.crc32(raw)


def _wrap(b64: str) -> str:
    return "\n".join(b64[i:i + _B64_LINE] for i in range(0, len(b64), _B64_LINE))


def _waveform(kind: str, signals_mv: np.ndarray, sample_base: int, units_per_bit: float,
              defect: Reason | None) -> str:
    leads = [name for name in INDEPENDENT_LEADS if not (defect is Reason.MISSING_LEAD and name == _MISSING_LEAD)]
    out = [
        "   <Waveform>\n",
        _tag("WaveformType", kind, 6),
        _tag("WaveformStartTime", 0, 6),
        _tag("NumberofLeads", len(leads), 6),
        _tag("SampleType", "CONTINUOUS_SAMPLES", 6),
        _tag("SampleBase", sample_base, 6),
        _tag("SampleExponent", 0, 6),
        _tag("HighPassFilter", 16, 6),
        _tag("LowPassFilter", 150, 6),
        _tag("ACFilter", 60, 6),
    ]
    for name in leads:
        values_uv = signals_mv[INDEPENDENT_LEADS.index(name)].astype(np.float64) * 1000.0
        if defect is Reason.FLAT_LINE and name == _FLAT_LEAD:
            values_uv = np.full_like(values_uv, values_uv[0])
        raw, crc = encode_lead(values_uv, units_per_bit)
        b64 = base64.b64encode(raw).decode("ascii")
        if defect is Reason.CRC_MISMATCH and name == _BAD_CRC_LEAD:
            crc ^= 0x5A5A5A5A
        if defect is Reason.BAD_BASE64 and name == _BAD_B64_LEAD and kind == "Rhythm":
            # one data character replaced by a non-alphabet one: strict decoders reject the '*', lenient
            # ones (which skip it) are left one character short of a whole quantum and reject the padding
            mid = len(b64) // 2
            b64 = b64[:mid] + "*" + b64[mid + 1:]
        fields = {
            "LeadByteCountTotal": len(raw), "LeadTimeOffset": 0, "LeadSampleCountTotal": len(raw) // 2,
            "LeadAmplitudeUnitsPerBit": f"{units_per_bit:g}", "LeadAmplitudeUnits": "MICROVOLTS",
            "LeadHighLimit": 32767, "LeadLowLimit": -32768, "LeadID": name, "LeadOffsetFirstSample": 0,
            "FirstSampleBaseline": 0, "LeadSampleSize": 2, "LeadOff": "FALSE", "BaselineSway": "FALSE",
            "LeadDataCRC32": crc,
        }
        out.append("      <LeadData>\n")
        out.extend(_tag(k, v, 9) for k, v in fields.items())
        out.append(f"         <WaveFormData>\n{_wrap(b64)}\n         </WaveFormData>\n")
        out.append("      </LeadData>\n")
    out.append("   </Waveform>\n")
    return "".join(out)


def muse_xml_bytes(rhythm_mv: np.ndarray, median_mv: np.ndarray, fs: int, units_per_bit: float,
                   demographics: dict, test: dict, order: dict, measurements: dict, statements: list[str],
                   defect: Reason | None = None) -> bytes:
    """The document as bytes. `rhythm_mv`/`median_mv` are [8, n] in INDEPENDENT_LEADS order, millivolts."""
    if rhythm_mv.shape[0] != len(INDEPENDENT_LEADS) or median_mv.shape[0] != len(INDEPENDENT_LEADS):
        raise ValueError(f"expected {len(INDEPENDENT_LEADS)} leads (I, II, V1..V6)")
    if defect is not None and defect not in MUSE_DEFECTS:
        raise ValueError(f"MUSE writer cannot produce defect {defect!r}")
    if defect is Reason.IMPLAUSIBLE_AMPLITUDE:
        rhythm_mv = rhythm_mv * WRONG_GAIN_FACTOR
        median_mv = median_mv * WRONG_GAIN_FACTOR
    # the wrong-rate export declares half the true rate on its waveforms; the measurements keep the truth
    wave_base = fs // 2 if defect is Reason.RATE_MISMATCH else fs
    meas = {**measurements, "ECGSampleBase": fs, "ECGSampleExponent": 0}
    diagnosis = "".join(
        "      <DiagnosisStatement>\n" + _tag("StmtFlag", "ENDSLINE", 9) + _tag("StmtText", text, 9)
        + "      </DiagnosisStatement>\n" for text in statements)
    doc = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
        "<RestingECG>\n"
        + _block("MuseInfo", {"MuseVersion": "9.0.9.18167"}, 3)
        + _block("PatientDemographics", demographics, 3)
        + _block("TestDemographics", test, 3)
        + _block("Order", order, 3)
        + _block("RestingECGMeasurements", meas, 3)
        + "   <Diagnosis>\n" + _tag("Modality", "RESTING", 6) + diagnosis + "   </Diagnosis>\n"
        + _waveform("Median", median_mv, wave_base, units_per_bit, defect)
        + _waveform("Rhythm", rhythm_mv, wave_base, units_per_bit, defect)
        + "</RestingECG>\n"
    )
    data = doc.encode("iso-8859-1", errors="replace")
    if defect is Reason.TRUNCATED:
        data = data[: int(len(data) * 0.6)]
    return data


def write_muse_xml(path: str | Path, *args, **kwargs) -> Path:
    """Write `muse_xml_bytes(*args, **kwargs)` to `path` atomically."""
    return atomic_write_bytes(path, muse_xml_bytes(*args, **kwargs))
