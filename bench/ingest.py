"""Ingest throughput (files/s per core) for GE MUSE XML and WFDB, against plain reference readers measured
in the same run on the same files:
- MUSE reference: `xml.etree.ElementTree.parse` + pick the Rhythm waveform + base64 decode + the same
  checks ours makes (byte count, CRC32) + int16 x gain + derived limb leads (what a careful MUSE script
  does; ours also refuses DTDs with entities via defusedxml, bounds the element count, checks lead set,
  gains and rate, and reads the metadata).
- WFDB reference: `wfdb.rdrecord(...).p_signal` (ours parses the header itself and reads format-16 data
  with one np.fromfile, verifying header checksums; other formats fall back to wfdb.rdrecord).
Also reported: the whole per-file ingest step (read + quality gates + resample + de-identify), and the
full `run_ingest` over the corpus with 1 worker and with all cores.

Rates are the median of `repeat` (>= 3) passes over all files.

Inputs come from `heartbeit synth` (MUSE at 250/500/1000 Hz, PTB-XL-like WFDB at 500 Hz), or, if the
generator is unavailable, from the real fixtures replicated.

    .venv/bin/python bench/ingest.py --quick
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import zlib
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heartbeit.benchsuite import smoke  # noqa: E402
from heartbeit.config import IngestConfig  # noqa: E402
from heartbeit.data.ingest.arrays import ArrayDefaults  # noqa: E402
from heartbeit.data.ingest.stage import Context, process_file, run_ingest  # noqa: E402
from heartbeit.data.ingest.listing import InputFile  # noqa: E402
from heartbeit.data.leads import twelve_from_independent  # noqa: E402
from heartbeit.data.ingest.muse import parse_muse  # noqa: E402
from heartbeit.data.ingest.ptbxl import ScpTaskMap  # noqa: E402
from heartbeit.data.ingest.wfdb_io import read_wfdb  # noqa: E402
from heartbeit.utils.io import resolve_workers  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ecg"


def reference_muse(path: Path) -> np.ndarray:
    root = ET.parse(path).getroot()
    for wave in root.iter("Waveform"):
        if wave.findtext("WaveformType") == "Rhythm":
            leads = {}
            for lead in wave.iter("LeadData"):
                raw = base64.b64decode(lead.findtext("WaveFormData"))
                if int(lead.findtext("LeadByteCountTotal")) != len(raw):
                    raise ValueError("byte count")
                crc = lead.findtext("LeadDataCRC32")
                if crc is not None and zlib.crc32(raw) != int(crc):
                    raise ValueError("crc")
                gain = float(lead.findtext("LeadAmplitudeUnitsPerBit"))
                leads[lead.findtext("LeadID")] = np.frombuffer(raw, "<i2") * gain / 1000.0
            return twelve_from_independent(leads)
    raise ValueError("no rhythm")


def reference_wfdb(hea: Path) -> np.ndarray:
    import wfdb

    return wfdb.rdrecord(str(hea.with_suffix(""))).p_signal.T


def _make_inputs(root: Path, n_patients: int) -> Path:
    try:
        from heartbeit.config import SynthConfig
        from heartbeit.data.synth.corpus import write_corpus

        cfg = SynthConfig(n_patients=n_patients, seed=0, broken_fraction=0.0)
        write_corpus(cfg, root / "synth", workers=resolve_workers(0), progress=False)
        return root / "synth"
    except ImportError:  # no generator: replicate the real fixtures
        out = root / "fixtures"
        for i in range(max(1, n_patients // 3)):
            for src in (FIXTURES / "muse_xml").glob("*.xml"):
                dst = out / "muse" / f"{i:04d}_{src.name}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
            d = out / "wfdb" / f"r{i:04d}"
            shutil.copytree(FIXTURES / "wfdb" / "cinc2021", d)
        return out


def _rate(fn, paths: list[Path], repeat: int) -> float:
    """Median-of-`repeat` files/s of fn over all paths, one core."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for p in paths:
            fn(p)
        times.append(time.perf_counter() - t)
    return len(paths) / statistics.median(times)


def run(quick: bool) -> dict:
    n_patients = 60 if quick else 400
    repeat = 5
    if smoke():
        n_patients, repeat = 30, 1
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = _make_inputs(Path(tmp), n_patients)
        muse = sorted(root.glob("muse/**/*.xml"))
        hea = sorted(root.glob("wfdb/**/*.hea"))
        cfg = IngestConfig(corpus_fs=500)
        ctx = Context(cfg, b"k" * 32, None, "accession", "auto", ArrayDefaults(), ScpTaskMap())

        def ingest_step(p: Path):
            return process_file(InputFile(str(p), p.name), ctx)

        result = {"inputs": str(root.name), "n_muse": len(muse), "n_wfdb": len(hea), "files_per_s_per_core": {}}
        rates = result["files_per_s_per_core"]
        rates["muse_reference"] = _rate(reference_muse, muse, repeat)
        rates["muse_ours_reader"] = _rate(lambda p: parse_muse(p.read_bytes(), p.name), muse, repeat)
        rates["muse_ours_ingest_step"] = _rate(ingest_step, muse, repeat)
        rates["wfdb_reference"] = _rate(reference_wfdb, hea, repeat)
        rates["wfdb_ours_reader"] = _rate(read_wfdb, hea, repeat)
        rates["wfdb_ours_ingest_step"] = _rate(ingest_step, hea, repeat)
        result["ratio_muse_reader_vs_reference"] = rates["muse_ours_reader"] / rates["muse_reference"]
        result["ratio_wfdb_reader_vs_reference"] = rates["wfdb_ours_reader"] / rates["wfdb_reference"]

        total = len(list(root.rglob("*.xml"))) + len(hea) + len(list(root.rglob("*.npz")))
        cores = resolve_workers(0)
        for workers in sorted({1, cores}):
            t = time.perf_counter()
            run_ingest([root], Path(tmp) / f"corpus{workers}", cfg, b"k" * 32, workers=workers, progress=False)
            elapsed = time.perf_counter() - t
            result[f"run_ingest_{workers}w_files_per_s"] = total / elapsed
        result["headline"] = {"metric": "MUSE XML reader files/s per core", "value": rates["muse_ours_reader"],
                              "baseline": rates["muse_reference"], "baseline_name": "ElementTree reference reader",
                              "ratio": result["ratio_muse_reader_vs_reference"]}
        result["cores"] = cores
        result["run_ingest_files"] = total
        if cores > 1:
            result["parallel_speedup"] = result[f"run_ingest_{cores}w_files_per_s"] / result["run_ingest_1w_files_per_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    res = run(args.quick)
    r = res["files_per_s_per_core"]
    print(f"inputs: {res['n_muse']} MUSE XML, {res['n_wfdb']} WFDB records ({res['inputs']})")
    print(f"MUSE  reference {r['muse_reference']:8.1f} files/s/core   ours (reader) {r['muse_ours_reader']:8.1f}"
          f"   ratio {res['ratio_muse_reader_vs_reference']:.2f}x   ours (full ingest step) {r['muse_ours_ingest_step']:.1f}")
    print(f"WFDB  reference {r['wfdb_reference']:8.1f} files/s/core   ours (reader) {r['wfdb_ours_reader']:8.1f}"
          f"   ratio {res['ratio_wfdb_reader_vs_reference']:.2f}x   ours (full ingest step) {r['wfdb_ours_ingest_step']:.1f}")
    for k, v in res.items():
        if k.startswith("run_ingest_") and k.endswith("files_per_s"):
            print(f"{k}: {v:.1f} files/s")
    if "parallel_speedup" in res:
        print(f"parallel speed-up on {res['cores']} cores: {res['parallel_speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
