"""The documented PTB-XL path (docs/ptbxl.md) on the fixtures: configs/ptbxl.yaml and the external-site example
load through the strict config loader; `heartbeit ingest` + `heartbeit render` with them on a PTB-XL-shaped
folder give the SCP-map STEMI labels, the site name the external variant holds out, the documented count of
database rows without a file, and no patient id from ptbxl_database.csv in any output."""
from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from heartbeit.cli import main as heartbeit
from heartbeit.config import PROFILES, RunConfig, dump_yaml, load_config
from heartbeit.config.core import from_dict

ROOT = Path(__file__).resolve().parents[2]
PTBXL_CFG = ROOT / "configs" / "ptbxl.yaml"
EXTERNAL_CFG = ROOT / "configs" / "site_plus_ptbxl.example.yaml"
DOC = ROOT / "docs" / "ptbxl.md"

# ecg_id -> (age, sex) in the excerpt: the corpus drops ecg_id, so rows are told apart by these two fields.
PRESENT = {1: (56.0, "F"), 8: (48.0, "M"), 39: (56.0, "M"), 50: (59.0, "F")}
# Rows 2 and 30 have no file, like an incomplete download. Row 63 has no file either: in the excerpt it holds one
# field too few (its strat_fold column holds the filename), so no file could be matched to it.
WITHOUT_FILE = {2, 30, 63}
EXCERPT_PATIENT_IDS = ("15709", "13243", "11275", "19053", "13619", "16961", "15265")


@pytest.fixture(autouse=True)
def _drop_log_files():
    """In-process CLI calls add a log-file handler each; close and remove them after the test."""
    logger = logging.getLogger("heartbeit")
    before = list(logger.handlers)
    yield
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()


def make_ptbxl_download(fixtures: Path, dest: Path, edit_rows: dict[int, dict] | None = None,
                        ecg_ids: tuple[int, ...] = tuple(PRESENT)) -> Path:
    """A folder laid out as PTB-XL unpacks, named `ptbxl`: ptbxl_database.csv (the 7-row excerpt, rows edited
    by `edit_rows` {ecg_id: {column: value}}), scp_statements.csv and records100/00000/<id>_lr.{hea,dat} for
    `ecg_ids`. Record 1 is the real fixture; the others carry its samples circularly shifted (a distinct
    recording each, else ingest drops them as duplicates) - their labels come from the csv rows."""
    import wfdb

    root = dest / "ptbxl"
    records = root / "records100" / "00000"
    records.mkdir(parents=True)
    with open(fixtures / "ptbxl_metadata" / "ptbxl_database_excerpt.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    for row in rows[1:]:
        for column, value in (edit_rows or {}).get(int(row[0]), {}).items():
            row[header.index(column)] = value
    with open(root / "ptbxl_database.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    shutil.copy(fixtures / "ptbxl_metadata" / "scp_statements.csv", root / "scp_statements.csv")
    for ext in (".hea", ".dat"):
        shutil.copy(fixtures / "wfdb" / "ptbxl" / f"00001_lr{ext}", records / f"00001_lr{ext}")
    first = wfdb.rdrecord(str(records / "00001_lr"), physical=False)
    for shift, ecg_id in enumerate(sorted(set(ecg_ids) - {1}), start=1):
        wfdb.wrsamp(f"{ecg_id:05d}_lr", fs=first.fs, units=first.units, sig_name=first.sig_name,
                    d_signal=np.roll(first.d_signal, 37 * shift, axis=0), fmt=first.fmt, adc_gain=first.adc_gain,
                    baseline=first.baseline, write_dir=str(records))
    return root


def ingest(workdir: Path, config: Path, inputs: list[Path], *overrides: str) -> dict:
    # A fixed key (the default one is random per workdir) keeps every hash in the outputs, and so the
    # identifier scan below, the same from run to run.
    key = workdir / "secret" / "deid.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n")
    key.chmod(0o600)
    sets = [x for o in (f"input_dirs=[{','.join(str(p) for p in inputs)}]", *overrides) for x in ("--set", o)]
    rc = heartbeit(["ingest", "--profile", "ci", "--config", str(config), "--workdir", str(workdir), *sets,
                    "--key", str(key), "--workers", "1", "--no-progress"])
    assert rc == 0
    return json.loads((workdir / "corpus" / "summary.json").read_text())


def render(workdir: Path, config: Path, *overrides: str) -> pd.DataFrame:
    sets = [x for o in overrides for x in ("--set", o)]
    rc = heartbeit(["render", "--profile", "ci", "--config", str(config), "--workdir", str(workdir), *sets,
                    "--workers", "1", "--no-progress"])
    assert rc == 0
    return pd.read_parquet(workdir / "images" / "manifest.parquet")


def stemi_by_row(corpus: Path) -> dict[int, float]:
    meta = pd.read_parquet(corpus / "metadata.parquet")
    by_demo = {(r.age, r.sex): r.stemi for r in meta.itertuples()}
    assert len(by_demo) == len(meta) == len(PRESENT)
    return {ecg_id: by_demo[demo] for ecg_id, demo in PRESENT.items()}


def assert_no_patient_id(workdir: Path, extra: tuple[str, ...] = ()) -> None:
    """No patient id of the csv (as '15709' or '15709.0') in any output file, text or binary. The id must
    stand alone: hex hashes may hold its digits inside a longer alphanumeric run by chance."""
    ids = [re.compile(rb"(?<![0-9A-Za-z])" + re.escape(pid.encode()) + rb"(?![0-9A-Za-z])")
           for pid in EXCERPT_PATIENT_IDS + extra]
    files = [p for p in workdir.rglob("*") if p.is_file() and p.name != "deid.key"]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".tar" for p in files)
    for path in files:
        data = path.read_bytes()
        for pattern in ids:
            assert not pattern.search(data), f"patient id found in {path.relative_to(workdir)}"


def doc_check_script() -> str:
    """The count-check snippet of docs/ptbxl.md (the python block after its `check-counts` marker)."""
    match = re.search(r"<!-- check-counts -->\s*```bash\n.*?<<'EOF'\n(.*?)\nEOF\n```", DOC.read_text(), re.S)
    assert match, "docs/ptbxl.md lost its check-counts snippet"
    return match.group(1)


# ---- configs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_ptbxl_configs_load_strictly_over_every_profile(profile):
    cfg = load_config(profile, config_file=PTBXL_CFG)
    assert cfg.matrix.tasks == ["stemi"] and cfg.render.external_sites == []
    assert cfg.input_dirs == ["/data/ingest/ptbxl/records500"] and cfg.labels_csv == ""
    assert cfg.ingest.ptbxl_unknown_stadium == "missing"
    assert from_dict(RunConfig, yaml.safe_load(dump_yaml(cfg))) == cfg  # resolved YAML loads back unchanged
    ext = load_config(profile, config_file=EXTERNAL_CFG)
    assert ext.render.external_sites == ["ptbxl"] and ext.matrix.tasks == ["lvef_le40", "hcm", "stemi"]
    assert [Path(p).name for p in ext.input_dirs] == ["muse_export", "records500"]
    assert Path(ext.input_dirs[1]).parent.name in ext.render.external_sites  # the site ingest will name


# ---- PTB-XL alone ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ptbxl_run(ecg_fixtures, tmp_path_factory):
    base = tmp_path_factory.mktemp("ptbxl_alone")
    download = make_ptbxl_download(ecg_fixtures, base)
    work = base / "run"
    logger = logging.getLogger("heartbeit")
    before = list(logger.handlers)
    summary = ingest(work, PTBXL_CFG, [download / "records100"])
    manifest = render(work, PTBXL_CFG)
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()
    return download, work, summary, manifest


def test_records_present_are_ingested_as_site_ptbxl(ptbxl_run):
    _, work, summary, _ = ptbxl_run
    assert summary["n_inputs"] == summary["n_accepted"] == len(PRESENT) and summary["n_rejected"] == 0
    assert summary["by_site"] == {"ptbxl": len(PRESENT)} and summary["n_patients"] == len(PRESENT)
    meta = pd.read_parquet(work / "corpus" / "metadata.parquet")
    assert set(meta["source_fs"]) == {100.0} and sorted(meta["strat_fold"]) == [3.0, 7.0, 9.0, 9.0]
    paper = {k: summary["labelled"].pop(k) for k in ("lvef", "lvef_le40", "hcm", "stemi")}
    assert paper == {"lvef": 0, "lvef_le40": 0, "hcm": 0, "stemi": 1}  # no LVEF/HCM in PTB-XL
    assert set(summary["labelled"].values()) == {0}  # header-map columns: PTB-XL headers list no diagnoses


def test_stemi_follows_the_scp_map_default(ptbxl_run):
    _, work, _, _ = ptbxl_run
    stemi = stemi_by_row(work / "corpus")
    assert stemi[1] == 0.0  # NORM: negative
    for ecg_id in (8, 39, 50):  # IMI / IMI / LMI with infarction_stadium1 'unknown': missing, never negative
        assert np.isnan(stemi[ecg_id])


def test_rows_without_a_file_are_counted_by_the_documented_check(ptbxl_run):
    download, work, _, _ = ptbxl_run
    proc = subprocess.run([sys.executable, "-", str(download), str(work / "corpus"), "records100"],
                          input=doc_check_script(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "7 rows in ptbxl_database.csv, 3 without a records100 file" in out
    assert "4 files read: 4 accepted, 0 rejected" in out
    assert "stemi: 1 labelled (0 positive, 1 negative), 3 missing" in out
    assert not any(pid in out for pid in EXCERPT_PATIENT_IDS)


def test_a_record_without_a_database_row_is_rejected_with_its_reason(ecg_fixtures, tmp_path):
    # A file for row 63, whose database row is malformed (one field short): without its row a record has no
    # patient id and no labels, so ingest rejects it instead of taking it as an unlabelled patient of its own.
    download = make_ptbxl_download(ecg_fixtures, tmp_path, ecg_ids=(*PRESENT, 63))
    summary = ingest(tmp_path / "run", PTBXL_CFG, [download / "records100"])
    assert summary["n_accepted"] == len(PRESENT) and summary["n_rejected"] == 1
    rejects = pd.read_parquet(tmp_path / "run" / "corpus" / "private" / "rejects.parquet")
    assert list(rejects["reason"]) == ["malformed"]
    assert "not a row of ptbxl_database.csv" in rejects["detail"].iloc[0]
    proc = subprocess.run([sys.executable, "-", str(download), str(tmp_path / "run" / "corpus"), "records100"],
                          input=doc_check_script(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "5 files read: 4 accepted, 1 rejected {'malformed': 1}" in proc.stdout
    assert "stemi: 1 labelled (0 positive, 1 negative), 3 missing" in proc.stdout


def test_render_splits_ptbxl_internally_by_patient(ptbxl_run):
    _, work, _, manifest = ptbxl_run
    assert len(manifest) == len(PRESENT) and set(manifest["site"]) == {"ptbxl"}
    assert set(manifest["split"]) <= {"train", "val", "test"}  # external_sites: [] -> nothing held out
    assert manifest.groupby("patient_hash")["split"].nunique().max() == 1
    meta = pd.read_parquet(work / "corpus" / "metadata.parquet").set_index("ecg_uid")
    labels = manifest.set_index("ecg_uid")["stemi"]
    pd.testing.assert_series_equal(labels, meta.loc[labels.index, "stemi"], check_names=False)


def test_no_patient_id_in_any_output(ptbxl_run):
    _, work, _, _ = ptbxl_run
    assert_no_patient_id(work)


# ---- the map's acute / old stadia and its override -----------------------------------------------------------

def test_acute_and_old_stadia_and_the_unknown_override(ecg_fixtures, tmp_path):
    # The excerpt's infarct rows all have stadium 'unknown'; a copy with edited stadia exercises the rest.
    edits = {8: {"infarction_stadium1": "Stadium I"}, 39: {"infarction_stadium1": "Stadium II-III"},
             50: {"infarction_stadium1": "unknown", "infarction_stadium2": "Stadium I-II"}}
    edited = make_ptbxl_download(ecg_fixtures, tmp_path / "edited", edits)
    summary = ingest(tmp_path / "edited_run", PTBXL_CFG, [edited / "records100"])
    assert summary["labelled"]["stemi"] == 4
    assert stemi_by_row(tmp_path / "edited_run" / "corpus") == {1: 0.0, 8: 1.0, 39: 0.0, 50: 1.0}

    plain = make_ptbxl_download(ecg_fixtures, tmp_path / "plain")
    ingest(tmp_path / "negative_run", PTBXL_CFG, [plain / "records100"], "ingest.ptbxl_unknown_stadium=negative")
    assert stemi_by_row(tmp_path / "negative_run" / "corpus") == {1: 0.0, 8: 0.0, 39: 0.0, 50: 0.0}


# ---- external-STEMI role next to a hospital export ------------------------------------------------------------

def test_external_variant_holds_ptbxl_out_whole(ecg_fixtures, tmp_path):
    download = make_ptbxl_download(ecg_fixtures, tmp_path)
    muse = tmp_path / "muse_export"
    muse.mkdir()
    for name in ("example1.xml", "example2.xml", "muse_ecg1.xml"):
        shutil.copy(ecg_fixtures / "muse_xml" / name, muse / name)
    work = tmp_path / "run"
    summary = ingest(work, EXTERNAL_CFG, [muse, download / "records100"], "labels_csv=")
    assert summary["n_accepted"] == 3 + len(PRESENT) and summary["by_site"]["ptbxl"] == len(PRESENT)
    manifest = render(work, EXTERNAL_CFG)
    external = load_config("ci", config_file=EXTERNAL_CFG).render.external_sites
    at_ptbxl = manifest["site"].isin(external)
    assert at_ptbxl.sum() == len(PRESENT)
    assert (manifest.loc[at_ptbxl, "split"] == "external").all()
    assert not (manifest.loc[~at_ptbxl, "split"] == "external").any()
    frac = [c for c in manifest.columns if c.startswith("frac_")]  # per-task training fractions
    assert frac and not manifest.loc[manifest["split"] == "external", frac].any().any()  # never trained on
    assert_no_patient_id(work, extra=("JAX01234",))


def test_a_hospital_labels_csv_never_labels_ptbxl_records(ecg_fixtures, tmp_path):
    # PTB-XL's ecg_id / patient_id are small integers; a hospital CSV keyed by accession "1" must not label
    # PTB-XL record 1 (whose SCP statements leave STEMI missing) nor override its SCP-derived labels.
    download = make_ptbxl_download(ecg_fixtures, tmp_path)
    labels = tmp_path / "hospital_labels.csv"
    labels.write_text("accession,lvef,lvef_le40,hcm,stemi\n" + "".join(f"{i},30,1,1,1\n" for i in PRESENT))
    ingest(tmp_path / "run", PTBXL_CFG, [download / "records100"], f"labels_csv={labels}")
    meta = pd.read_parquet(tmp_path / "run" / "corpus" / "metadata.parquet")
    assert meta["hcm"].isna().all() and meta["lvef_le40"].isna().all()
    assert (meta["stemi"] != 1).all()  # the excerpt's present rows hold no acute infarct
