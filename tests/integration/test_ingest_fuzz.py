"""Fuzzing ingest with mutations of the real fixtures (seeded, well under 60 s).

Structural mutations - a wrong CRC, a wrong byte or sample count, a cut-short file, a broken XML tag, a broken
WFDB record line or checksum - must be rejected. Amplitude and field mutations may be accepted or rejected.
Whatever the mutation: no exception escapes, nothing hangs (the whole run is timed), and no reject detail or
console line quotes the test identifiers inside the fixtures."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from heartbeit.config import IngestConfig
from heartbeit.data.corpus import read_metadata, read_rejects
from heartbeit.data.ingest.stage import run_ingest

SEED = 19
IDENTIFIERS = ("JAX01234", "TEST 05")
KEY = b"f" * 32


def _muse_mutants(src: Path, rng: np.random.Generator) -> list[tuple[str, bytes, bool]]:
    """(name, bytes, must_reject) for one MUSE file."""
    data = src.read_bytes()
    out = []
    rhythm = data.index(b"<WaveformType>Rhythm")  # lead-level mutations hit the waveform ingest reads
    crcs = [m for m in re.finditer(rb"<LeadDataCRC32>(\d+)</LeadDataCRC32>", data) if m.start() > rhythm]
    m = crcs[int(rng.integers(len(crcs)))]
    wrong = str((int(m.group(1)) + 1 + int(rng.integers(1000))) % 2**32).encode()
    out.append(("crc", data[:m.start(1)] + wrong + data[m.end(1):], True))
    counts = [m for m in re.finditer(rb"<LeadByteCountTotal>(\d+)</LeadByteCountTotal>", data) if m.start() > rhythm]
    m = counts[int(rng.integers(len(counts)))]
    out.append(("bytecount", data[:m.start(1)] + str(int(m.group(1)) + 2).encode() + data[m.end(1):], True))
    cut = int(rng.integers(rhythm, len(data) - 20))
    out.append(("truncated", data[:cut], True))
    tags = [t.start() for t in re.finditer(rb"</[A-Za-z]", data)]
    pos = tags[int(rng.integers(len(tags)))]
    out.append(("brokentag", data[:pos + 2] + b"#" + data[pos + 3:], True))
    payloads = [t for t in re.finditer(rb"<WaveFormData>([^<]+)</WaveFormData>", data) if t.start() > rhythm]
    p = payloads[int(rng.integers(len(payloads)))]
    chars = [i for i in range(p.start(1), p.end(1)) if data[i:i + 1].isalnum()]
    i = chars[int(rng.integers(len(chars)))]
    flipped = b"A" if data[i:i + 1] != b"A" else b"B"
    out.append(("base64", data[:i] + flipped + data[i + 1:], True))  # CRC32 catches it
    gains = [g for g in re.finditer(rb"<LeadAmplitudeUnitsPerBit>([^<]+)<", data) if g.start() > rhythm]
    g = gains[int(rng.integers(len(gains)))]
    out.append(("gain", data[:g.start(1)] + f"{rng.uniform(0.05, 60):.3f}".encode() + data[g.end(1):], False))
    age = data.find(b"<PatientAge>")
    if age >= 0:
        out.append(("age", data[:age + 12] + str(int(rng.integers(-5, 200))).encode() + data[age + 14:], False))
    return out


def _wfdb_mutants(hea: Path, rng: np.random.Generator) -> list[tuple[str, dict[str, bytes], bool]]:
    """(name, {file name: bytes}, must_reject) for one CinC record (.hea + .mat)."""
    text = hea.read_text()
    mat = hea.with_suffix(".mat").read_bytes()
    lines = text.splitlines(keepends=True)
    out = []
    cut = int(rng.integers(24, len(mat) - 2))
    out.append(("truncated", {hea.name: text.encode(), hea.with_suffix(".mat").name: mat[:cut]}, True))
    rec = lines[0].split()
    rec[3] = str(int(rec[3]) + int(rng.integers(1, 500)))
    out.append(("siglen", {hea.name: (" ".join(rec) + "\n" + "".join(lines[1:])).encode(),
                           hea.with_suffix(".mat").name: mat}, True))
    k = int(rng.integers(1, 13))
    fields = lines[k].split(" ")
    fields[6] = str(int(fields[6]) + int(rng.integers(1, 1000)))
    sig = "".join(lines[:k]) + " ".join(fields) + "".join(lines[k + 1:])
    out.append(("checksum", {hea.name: sig.encode(), hea.with_suffix(".mat").name: mat}, True))
    out.append(("recordline", {hea.name: ("#" + lines[0] + "".join(lines[1:])).encode()
                               if rng.random() < 0.5 else (lines[0].split()[0] + " x\n" + "".join(lines[1:])).encode(),
                               hea.with_suffix(".mat").name: mat}, True))
    fields = lines[k].split(" ")
    fields[2] = f"{rng.uniform(50, 5000):.1f}(0)/mV"
    gain = "".join(lines[:k]) + " ".join(fields) + "".join(lines[k + 1:])
    out.append(("gain", {hea.name: gain.encode(), hea.with_suffix(".mat").name: mat}, False))
    return out


def test_fuzzed_fixtures_are_refused_or_read_never_crash_hang_or_leak(ecg_fixtures, tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    root = tmp_path / "fuzz"
    must_reject: set[str] = set()
    n = 0
    for rnd in range(8):
        for src in sorted((ecg_fixtures / "muse_xml").glob("*.xml")):
            for kind, data, strict in _muse_mutants(src, rng):
                rel = f"m{rnd}_{src.stem}_{kind}.xml"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
                n += 1
                if strict:
                    must_reject.add(rel)
    heas = sorted((ecg_fixtures / "wfdb" / "cinc2021").glob("*.hea"))
    for j, hea in enumerate(rng.choice(heas, size=20, replace=False)):
        for kind, files, strict in _wfdb_mutants(Path(hea), rng):
            folder = root / f"w{j}_{kind}"
            folder.mkdir(parents=True)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            n += 1
            if strict:
                must_reject.add(f"w{j}_{kind}/{Path(hea).name}")
    cpsc = ecg_fixtures / "arrays" / "cpsc2018" / "A1980.mat"
    data = cpsc.read_bytes()
    for k in range(3):
        cut = int(rng.integers(200, len(data) - 10))
        (root / f"cut{k}.mat").write_bytes(data[:cut])
        (root / f"cut{k}.json").write_text('{"fs": 500}')
        must_reject.add(f"cut{k}.mat")
        n += 1
    assert n >= 60
    t0 = time.perf_counter()
    summary = run_ingest([root], tmp_path / "corpus", IngestConfig(corpus_fs=250), KEY, workers=2, progress=False)
    assert time.perf_counter() - t0 < 60
    rejects = read_rejects(tmp_path / "corpus")
    refused = set(rejects.source_path)
    assert must_reject <= refused, sorted(must_reject - refused)
    # (a header whose record line is broken claims no signal file: its .mat becomes an input of its own)
    assert summary["n_accepted"] + summary["n_rejected"] == summary["n_inputs"] >= n
    assert "unexpected" not in " ".join(rejects.detail)  # every refusal has a reader's own reason, no fallback
    text = " ".join(rejects.detail) + capsys.readouterr().out
    for ident in IDENTIFIERS:
        assert ident not in text
    assert len(read_metadata(tmp_path / "corpus")) == summary["n_accepted"]
