"""The corpus writer: real formats read back with independent readers, labels, broken files, determinism."""
import base64
import binascii
import csv
import hashlib
import json
import xml.etree.ElementTree as ET
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import wfdb
import yaml

from heartbeit.cli import main as cli_main
from heartbeit.config import SynthConfig
from heartbeit.config.synth import default_sites
from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX, LEADS
from heartbeit.data.reasons import Reason
from heartbeit.data.synth.corpus import DEFECTS_BY_FORMAT, plan_corpus, render_ecg, write_corpus

SMALL = dict(n_patients=20, seed=5, broken_fraction=0.3, prevalence_lvef_le40=0.2, prevalence_hcm=0.15,
             prevalence_stemi=0.2, missing_label_fraction=0.1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    # equal site shares so 20 patients reach every format
    cfg = SynthConfig(**SMALL, sites=[replace(s, share=0.2) for s in default_sites()])
    summary = write_corpus(cfg, out, workers=1, progress=False)
    return out, cfg, summary


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _truth(out):
    return _rows(out / "ground_truth.csv")


def read_muse(path):
    """An independent MUSE reader: plain ElementTree + base64; returns per-waveform lead dicts."""
    root = ET.parse(path).getroot()
    waves = {}
    for wf in root.findall("Waveform"):
        leads = {}
        for ld in wf.findall("LeadData"):
            raw = base64.b64decode(ld.findtext("WaveFormData"))
            leads[ld.findtext("LeadID")] = {
                "raw": raw,
                "counts": np.frombuffer(raw, dtype="<i2"),
                "crc": int(ld.findtext("LeadDataCRC32")),
                "n": int(ld.findtext("LeadSampleCountTotal")),
                "bytes": int(ld.findtext("LeadByteCountTotal")),
                "upb": float(ld.findtext("LeadAmplitudeUnitsPerBit")),
                "units": ld.findtext("LeadAmplitudeUnits"),
            }
        rate = float(wf.findtext("SampleBase")) * 10 ** int(wf.findtext("SampleExponent"))
        waves[wf.findtext("WaveformType")] = {"rate": rate, "n_leads": int(wf.findtext("NumberofLeads")),
                                              "leads": leads}
    meas = root.find("RestingECGMeasurements")
    ecg_rate = float(meas.findtext("ECGSampleBase")) * 10 ** int(meas.findtext("ECGSampleExponent"))
    return root, waves, ecg_rate


def test_layout_and_tables(corpus):
    out, cfg, summary = corpus
    truth = _truth(out)
    assert len(truth) == summary["ecgs"] >= cfg.n_patients
    for row in truth:
        assert (out / row["relpath"]).is_file(), row["relpath"]
        fmt, site = row["format"], row["site"]
        prefix = {"muse": "muse", "wfdb": "wfdb", "npz": "arrays"}[fmt]
        assert row["relpath"].startswith(f"{prefix}/{site}/")
        assert row["broken_reason"] == "" or Reason(row["broken_reason"])
        assert float(row["lvef"]) <= 40.0 if row["lvef_le40"] == "1" else float(row["lvef"]) > 40.0
    # patients have 1..max ECGs, all at one site
    per_patient = {}
    for row in truth:
        per_patient.setdefault(row["patient_index"], set()).add(row["site"])
    assert len(per_patient) == cfg.n_patients and all(len(s) == 1 for s in per_patient.values())
    assert {s.name for s in cfg.sites if s.external} & {r["site"] for r in truth if r["external"] == "1"}
    # labels.csv: one row per MUSE/npz ECG, keyed by MRN + accession, some cells missing
    labels = _rows(out / "labels.csv")
    hospital = [r for r in truth if r["format"] in ("muse", "npz")]
    assert [(r["mrn"], r["accession"]) for r in labels] == [(r["mrn"], r["accession"]) for r in hospital]
    assert any("" in (r["lvef"], r["hcm"], r["stemi"]) for r in labels)
    for lab, tru in zip(labels, hospital):
        if lab["stemi"]:
            assert lab["stemi"] == tru["stemi"]
    meta = json.loads((out / "synth.json").read_text())
    assert meta["ecgs"] == len(truth) and meta["config"]["n_patients"] == cfg.n_patients


def test_muse_parses_with_elementtree(corpus):
    out, _, _ = corpus
    good = [r for r in _truth(out) if r["format"] == "muse" and not r["broken_reason"]]
    assert good
    for row in good:
        root, waves, ecg_rate = read_muse(out / row["relpath"])
        assert root.tag == "RestingECG"
        assert root.findtext("PatientDemographics/PatientID") == row["mrn"]
        assert root.findtext("Order/AccessionNumber") == row["accession"]
        assert root.findtext("TestDemographics/SiteName") == row["site"]
        assert set(waves) == {"Median", "Rhythm"}
        fs = int(row["fs"])
        for kind, wf in waves.items():
            assert wf["rate"] == ecg_rate == fs
            assert wf["n_leads"] == 8 and tuple(wf["leads"]) == INDEPENDENT_LEADS
            for lead in wf["leads"].values():
                assert lead["units"] == "MICROVOLTS"
                assert lead["bytes"] == len(lead["raw"]) == 2 * lead["n"]
                assert zlib.crc32(lead["raw"]) == lead["crc"]
            expected = 10 * fs if kind == "Rhythm" else fs
            assert all(lead["n"] == expected for lead in wf["leads"].values())
        rhythm = waves["Rhythm"]["leads"]
        mv = {k: v["counts"] * v["upb"] / 1000.0 for k, v in rhythm.items()}
        assert 0.3 < np.ptp(mv["V5"]) < 8.0 and np.abs(mv["II"]).max() < 6.0


def test_wfdb_reads_with_rdrecord(corpus):
    out, _, _ = corpus
    rows = [r for r in _truth(out) if r["format"] == "wfdb"]
    assert rows
    good = [r for r in rows if not r["broken_reason"]]
    for row in good:
        rec = wfdb.rdrecord(str(out / row["relpath"])[: -len(".hea")])
        assert rec.fs == int(row["fs"]) and rec.n_sig == 12 and rec.sig_len == 10 * rec.fs
        assert rec.sig_name == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert rec.units == ["mV"] * 12 and rec.fmt == ["16"] * 12
        x = rec.p_signal.T
        step = 1.0 / rec.adc_gain[0]
        assert np.abs(x[2] - (x[1] - x[0])).max() <= step + 1e-9
        assert 0.3 < np.ptp(x[LEAD_INDEX["V5"]]) < 8.0 and np.abs(x).max() < 6.0
    db = _rows(next((out / "wfdb").glob("*/ptbxl_database.csv")))
    assert [int(r["ecg_id"]) for r in db] == sorted(int(r["accession"]) for r in rows)
    assert all(r["filename_hr"].startswith("records") and r["filename_hr"].endswith("_hr") for r in db)
    import ast

    by_id = {r["accession"]: r for r in rows}
    for r in db:
        codes = ast.literal_eval(r["scp_codes"])
        truth = by_id[r["ecg_id"]]
        expected = {"inferior": "IMI", "anterior": "AMI", "lateral": "LMI"}.get(truth["stemi_territory"])
        if expected:
            assert codes[expected] == 100.0 and r["infarction_stadium1"] == "Stadium I"
        assert ("NORM" in codes) == (truth["lvef_le40"] == truth["hcm"] == truth["stemi"] == "0")
        assert r["sex"] in ("0", "1") and 1 <= int(r["strat_fold"]) <= 10


def test_npz_arrays_and_sidecar(corpus):
    out, cfg, _ = corpus
    rows = [r for r in _truth(out) if r["format"] == "npz" and not r["broken_reason"]]
    assert rows
    for row in rows:
        path = out / row["relpath"]
        with np.load(path, allow_pickle=False) as z:
            x = z["signals"]
        meta = json.loads(path.with_suffix(".json").read_text())
        assert x.dtype == np.float32 and x.shape == (12, 10 * meta["fs"])
        assert meta["leads"] == list(LEADS) and meta["accession"] == row["accession"] and meta["mrn"] == row["mrn"]
        assert set(meta) >= {"fs", "units", "leads", "site", "device", "accession", "mrn", "sex", "age",
                             "acquisition_date"}
        mv = x / (1000.0 if meta["units"] == "uV" else 1.0)
        assert 0.3 < np.ptp(mv[LEAD_INDEX["V5"]]) < 8.0
        assert np.allclose(mv[LEAD_INDEX["III"]], mv[1] - mv[0], atol=1e-3)


def test_broken_files_show_their_defect(corpus, tmp_path):
    out, cfg, _ = corpus
    broken = [r for r in _truth(out) if r["broken_reason"]]
    assert len(broken) == round(cfg.broken_fraction * len(_truth(out)))
    plans = {p.index: p for p in plan_corpus(cfg)}
    sites = {s.name: (s, i + 1) for i, s in enumerate(cfg.sites)}
    truth = _truth(out)
    for row in broken:
        reason, path = Reason(row["broken_reason"]), out / row["relpath"]
        assert reason in DEFECTS_BY_FORMAT[row["format"]]
        if row["format"] == "muse":
            if reason is Reason.TRUNCATED:
                with pytest.raises(ET.ParseError):
                    ET.parse(path)
                continue
            if reason is Reason.BAD_BASE64:
                root = ET.parse(path).getroot()
                texts = [ld.findtext("WaveFormData") for ld in root.iter("LeadData")]
                with pytest.raises(binascii.Error):
                    for t in texts:
                        base64.b64decode(t)  # even the lenient decoder fails
                continue
            _, waves, ecg_rate = read_muse(path)
            rhythm = waves["Rhythm"]
            if reason is Reason.MISSING_LEAD:
                assert len(rhythm["leads"]) == 7 and set(INDEPENDENT_LEADS) - set(rhythm["leads"])
            elif reason is Reason.CRC_MISMATCH:
                assert any(zlib.crc32(v["raw"]) != v["crc"] for v in rhythm["leads"].values())
            elif reason is Reason.RATE_MISMATCH:
                assert rhythm["rate"] != ecg_rate
            elif reason is Reason.FLAT_LINE:
                assert any(np.ptp(v["counts"]) == 0 for v in rhythm["leads"].values())
        elif row["format"] == "npz":
            with np.load(path, allow_pickle=False) as z:
                x = z["signals"]
            if reason is Reason.NAN:
                assert np.isnan(x).any()
            elif reason is Reason.FLAT_LINE:
                assert (np.ptp(x, axis=1) == 0).any()
        else:
            if reason is Reason.TRUNCATED:
                dat = path.with_suffix(".dat")
                assert dat.stat().st_size < 12 * 2 * 10 * int(row["fs"])
                continue
            if reason is Reason.FLAT_LINE:
                x = wfdb.rdrecord(str(path.with_suffix(""))).p_signal
                assert (np.ptp(x, axis=0) == 0).any()
        if reason is Reason.IMPLAUSIBLE_AMPLITUDE:
            # re-render the same ECG unbroken: the broken file reads 4.88x larger
            index = truth.index(row)
            plan = replace(plans[index], defect="")
            site, number = sites[plan.site]
            render_ecg(plan, site, number, cfg.duration_s, tmp_path)
            ratio = _peak(path, row["format"]) / _peak(tmp_path / row["relpath"], row["format"])
            assert ratio == pytest.approx(4.88, rel=0.01)


def _peak(path, fmt):
    if fmt == "muse":
        _, waves, _ = read_muse(path)
        return max(np.abs(v["counts"] * v["upb"]).max() for v in waves["Rhythm"]["leads"].values())
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            return float(np.abs(z["signals"]).max())
    return float(np.abs(wfdb.rdrecord(str(path.with_suffix(""))).p_signal).max())


def test_every_defect_kind_is_planned_and_ids_unique():
    cfg = SynthConfig(n_patients=300, seed=2, broken_fraction=0.2)
    plans = plan_corpus(cfg)
    for fmt, kinds in DEFECTS_BY_FORMAT.items():
        seen = {p.defect for p in plans if p.format == fmt and p.defect}
        assert seen == {k.value for k in kinds}, fmt
    assert len({p.accession for p in plans}) == len(plans)
    mrns = {p.patient_index: p.mrn for p in plans}
    assert len(set(mrns.values())) == cfg.n_patients
    assert any(p.age > 89 for p in plans)  # de-identification must cap these
    assert 0.05 < np.mean([p.lvef_le40 for p in plans]) < 0.3
    assert 0.02 < np.mean([p.stemi for p in plans]) < 0.1
    assert all(cfg.severity_min <= p.severity <= 1.0 for p in plans)
    # several ECGs per patient on distinct dates
    counts = np.bincount([p.patient_index for p in plans])
    assert counts.min() >= 1 and counts.max() == cfg.ecgs_per_patient_max


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_deterministic_across_runs_and_workers(corpus, tmp_path):
    out, cfg, _ = corpus
    again = tmp_path / "again"
    again.mkdir()
    write_corpus(cfg, again, workers=2, progress=False)
    assert _hashes(again) == _hashes(out)
    other = tmp_path / "other"
    other.mkdir()
    write_corpus(replace(cfg, seed=cfg.seed + 1, n_patients=6), other, workers=1, progress=False)
    h_other = _hashes(other)
    common = set(h_other) & set(_hashes(out))
    assert all(h_other[k] != _hashes(out)[k] for k in common if k.endswith((".csv", ".json")))
    assert not set(h_other.values()) & set(_hashes(out).values())


@pytest.mark.slow
def test_cli_writes_resolved_config(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = cli_main(["synth", "--out", str(out), "--n", "3", "--seed", "4", "--workers", "1", "--no-progress",
                   "--set", "synth.broken_fraction=0.0"])
    assert rc == 0
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["synth"]["n_patients"] == 3 and resolved["synth"]["seed"] == 4
    meta = json.loads((out / "synth.json").read_text())
    assert meta["patients"] == 3 and meta["broken"] == 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    # an existing output is not overwritten silently
    assert cli_main(["synth", "--out", str(out), "--n", "3", "--no-progress"]) == 2  # a refusal: exit 2, one line on stderr (docs/errors.md)
    assert cli_main(["synth", "--out", str(out), "--n", "2", "--overwrite", "--no-progress", "--workers", "1"]) == 0
    assert json.loads((out / "synth.json").read_text())["patients"] == 2
    # config errors name the key and exit 2 before any work
    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--set", "synth.n_patientz=3"]) == 2
    assert "n_patientz" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli_main(["synth", "--out", str(tmp_path / "y"), "--seed", "-1"]) == 2
    assert "seed" in capsys.readouterr().err
