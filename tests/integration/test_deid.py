"""De-identification: key file handling, Safe Harbor transforms, and the privacy test - known names, MRNs
and birth dates injected into the inputs are found in no byte of the outputs (shards and the members inside
them, parquet values, JSON/YAML, logs, console)."""
from __future__ import annotations

import datetime as dt
import io
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data_ingest import crafted
from helpers.data_ingest.crafted import ROOT, ecg, muse_bytes, run_synth, write_npz
from heartbeit.config import IngestConfig
from heartbeit.data.ingest import deid
from heartbeit.data.corpus import list_shards, read_metadata
from heartbeit.data.ingest.stage import run_ingest


def test_key_file_created_0600_and_stable(tmp_path):
    path = tmp_path / "secret" / "deid.key"
    key = deid.load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) >= 32
    assert deid.load_or_create_key(path) == key
    path.chmod(0o644)
    with pytest.raises(deid.KeyFileError):
        deid.load_or_create_key(path)


def test_safe_harbor_transforms():
    assert deid.cap_age(93.4) == 90 and deid.cap_age(89.9) == 89 and math.isnan(deid.cap_age(None))
    assert deid.age_band(90) == "90+" and deid.age_band(45) == "40-49" and deid.age_band(12) == "0-17"
    key = b"k" * 32
    meta = {"patient_id": "P1", "mrn": "P1", "first_name": "ANNA", "last_name": "SMITH",
            "birth_date": dt.date(1930, 1, 2), "acquisition_date": dt.date(2019, 6, 1), "age": None, "sex": "F",
            "site": "north", "device": "MAC5500 SMITH", "location_name": "WARD 3", "cart_number": "77",
            "diagnosis": ["seen by SMITH"], "measurements": {"qrs_duration_ms": 90.0}}
    row = deid.deidentify(meta, {}, "u" * 20, key)
    assert row["age"] == 89 and row["year"] == 2019 and "acquisition_date" not in row
    assert row["device"] == ""  # a kept field that carries an identifier of the record is blanked
    assert row["qrs_duration_ms"] == 90.0 and row["patient_hash"] == deid.patient_hash(key, "P1")
    text = repr(row)
    for secret in ("ANNA", "SMITH", "1930", "WARD", "P1'"):
        assert secret not in text
    # shift policy: one offset per patient, so intervals survive
    a = deid.date_fields(key, "P1", dt.date(2019, 6, 1), "shift", 365)
    b = deid.date_fields(key, "P1", dt.date(2019, 6, 11), "shift", 365)
    assert (dt.date.fromisoformat(b["acquisition_date"]) - dt.date.fromisoformat(a["acquisition_date"])).days == 10
    assert a["acquisition_date"] != "2019-06-01"


def _secrets_from_inputs(root: Path) -> tuple[set[str], set[str]]:
    """(identifiers that must appear nowhere, accession numbers that may only appear in rejects paths)."""
    strict = {crafted.SECRET_MRN, crafted.SECRET_FIRST, crafted.SECRET_LAST, crafted.SECRET_DOB, "1931-03-14",
              crafted.SECRET_OPERATOR, crafted.SECRET_LOCATION, "CART4411", "ORD5566", "JAX01234", "TEST 05",
              "FL Research Location"}
    accessions = {crafted.SECRET_ACCESSION}
    for xml in root.rglob("*.xml"):
        text = xml.read_text("latin-1")
        for tag in ("PatientID", "PatientLastName", "PatientFirstName", "DateofBirth", "OperatorLastName",
                    "OrderNumber"):
            strict |= set(re.findall(rf"<{tag}>([^<]+)</{tag}>", text))
        accessions |= set(re.findall(r"<AccessionNumber>([^<]+)</AccessionNumber>", text))
    truth = pd.read_csv(root / "ground_truth.csv", dtype=str, keep_default_na=False)
    strict |= set(truth.mrn)
    accessions |= set(truth.accession)
    return {s for s in strict if len(s) >= 4}, {a for a in accessions if len(a) >= 6}


def _all_output_texts(out: Path, logs: Path) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for p in list(out.rglob("*")) + list(logs.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        blobs[str(p)] = data
        if p.suffix == ".tar":
            with tarfile.open(p) as tar:
                for m in tar.getmembers():
                    blobs[f"{p}:{m.name}"] = tar.extractfile(m).read()
                    blobs[f"{p}:{m.name}:header"] = (m.name + m.uname + m.gname).encode()
        if p.suffix == ".parquet":  # compressed pages: check the decoded values too
            df = pd.read_parquet(p)
            blobs[f"{p}:values"] = (" ".join(df.columns) + "\n" + df.astype(str).to_csv()).encode()
    return blobs


@pytest.mark.slow
def test_privacy_no_identifier_in_any_output_byte(tmp_path):
    inputs = run_synth(tmp_path / "inputs", n=25, seed=11, broken=0.2)
    (inputs / "crafted").mkdir()
    (inputs / "crafted" / "inj.xml").write_bytes(muse_bytes(ecg(50)))
    (inputs / "crafted" / "inj_broken.xml").write_bytes(muse_bytes(ecg(51))[:4000])  # rejected one
    write_npz(inputs / "crafted_arrays", "inj", ecg(52))
    fixture = ROOT.parent / "shared" / "fixtures" / "ecg" / "muse_xml" / "muse_ecg1.xml"
    if fixture.is_file():
        shutil.copy(fixture, inputs / "crafted" / "muse_ecg1.xml")
    strict, accessions = _secrets_from_inputs(inputs)
    assert len(strict) > 50
    out = tmp_path / "run" / "corpus"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "--log-level", "DEBUG", "ingest", str(inputs),
                           "--out", str(out), "--key", str(tmp_path / "key"), "--workers", "2",
                           "--set", "ingest.shard_size=10"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = read_metadata(out)
    assert len(meta) > 30 and (meta.age <= 90).all() and meta.age.max() == 90  # injected 93/95 capped
    blobs = _all_output_texts(out, tmp_path / "run" / "logs")
    blobs["stdout"], blobs["stderr"] = proc.stdout.encode(), proc.stderr.encode()
    assert any(":" in k and k.endswith(".json") for k in blobs)  # tar members were opened
    leaks = {(where, s) for where, data in blobs.items() for s in strict if s.encode("latin-1") in data}
    assert not leaks, sorted(leaks)[:10]
    # accession numbers: file names may carry them into rejects.source_path (the path is the file's
    # identity, by design) but never into the corpus itself
    corpus_blobs = {k: v for k, v in blobs.items() if ".tar" in k or "metadata.parquet" in k or "summary" in k}
    leaks = {(where, a) for where, data in corpus_blobs.items() for a in accessions if a.encode() in data}
    assert not leaks, sorted(leaks)[:10]
    key_text = (tmp_path / "key").read_bytes().strip()
    assert not any(key_text in data for data in blobs.values())


def test_same_key_same_bytes_different_key_every_hash_changes(tmp_path):
    folder = tmp_path / "in"
    for i in range(6):
        (folder / f"p{i}").mkdir(parents=True)
        (folder / f"p{i}" / "a.xml").write_bytes(muse_bytes(ecg(60 + i), mrn=f"MRN{i:05d}", accession=f"A{i}"))
        (folder / f"p{i}" / "b.xml").write_bytes(muse_bytes(ecg(70 + i), mrn=f"MRN{i:05d}", accession=f"B{i}"))
    cfg = IngestConfig(corpus_fs=250, shard_size=5)
    k1, k2 = b"a" * 32, b"b" * 32
    run_ingest([folder], tmp_path / "c1", cfg, k1, progress=False)
    run_ingest([folder], tmp_path / "c1b", cfg, k1, progress=False)
    run_ingest([folder], tmp_path / "c2", cfg, k2, progress=False)
    s1, s1b, s2 = (list_shards(tmp_path / c) for c in ("c1", "c1b", "c2"))
    assert [p.read_bytes() for p in s1] == [p.read_bytes() for p in s1b]
    m1, m2 = read_metadata(tmp_path / "c1"), read_metadata(tmp_path / "c2")
    assert m1.patient_hash.nunique() == 6 and len(m1) == 12  # two ECGs per patient share the hash
    assert not set(m1.patient_hash) & set(m2.patient_hash)
    assert not set(m1.ecg_uid) & set(m2.ecg_uid)
    assert [p.read_bytes() for p in s1] != [p.read_bytes() for p in s2]


def test_shift_policy_writes_shifted_dates(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.xml").write_bytes(muse_bytes(ecg(80 + i), mrn="SAME-PATIENT"))
    cfg = IngestConfig(corpus_fs=250, date_policy="shift", date_shift_max_days=30)
    run_ingest([folder], tmp_path / "c", cfg, b"s" * 32, progress=False)
    meta = read_metadata(tmp_path / "c")
    dates = set(meta.acquisition_date)
    assert len(dates) == 1 and "2019-06-01" not in dates  # one patient, one offset; never the true date
    shifted = dt.date.fromisoformat(dates.pop())
    assert abs((shifted - dt.date(2019, 6, 1)).days) <= 30 and (meta.year == shifted.year).all()
