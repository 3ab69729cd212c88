"""Real WFDB collections: only .hea files drive records, annotation and side files are
skipped and counted, both header comment conventions give age/sex, a labels CSV keyed by record name, and
header diagnoses (CinC SNOMED `#Dx:` codes, free-text statement blocks) mapped to binary label columns."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from helpers.data_ingest.crafted import ecg, write_wfdb
from helpers.data_ingest.wfdb_collection import ANNOTATORS, write_collection
from heartbeit.config import ConfigError, IngestConfig
from heartbeit.data.corpus import read_metadata, read_rejects
from heartbeit.data.ingest.header_labels import DEFAULT_DX_CODES, HeaderLabelMap
from heartbeit.data.ingest.stage import run_ingest
from heartbeit.data.ingest.listing import list_inputs
from heartbeit.data.ingest.publish import format_summary
from heartbeit.data.ingest.wfdb_io import read_wfdb

KEY = b"0123456789abcdef0123456789abcdef"
CFG = IngestConfig(corpus_fs=250, shard_size=16)


def test_bracketed_comment_form_gives_demographics_and_statements(tmp_path):
    truth = write_collection(tmp_path, n=3)
    for name, t in truth.items():
        rec = read_wfdb(tmp_path / "data" / f"{name}.hea")
        assert rec.meta["age"] == (89.0 if name == "3" else t["age"]) and rec.meta["sex"] == t["sex"]
        assert rec.meta["dx_statements"] == t["statements"] and rec.meta["dx_codes"] == []


def test_cinc_dx_codes_map_to_binary_columns(ecg_fixtures):
    folder = ecg_fixtures / "wfdb" / "cinc2021"
    hmap = HeaderLabelMap.from_config(IngestConfig())
    rows = {}
    for hea in sorted(folder.glob("*.hea")):
        text = hea.read_text()
        dx = next(ln.split(":", 1)[1] for ln in text.splitlines() if ln.lstrip("# ").lower().startswith("dx"))
        rec = read_wfdb(hea)
        assert rec.meta["dx_codes"] == [c.strip() for c in dx.split(",") if c.strip()]
        assert rec.meta["sex"] in ("M", "F") and rec.meta["age"] is not None
        rows[hea.stem] = hmap.labels(rec.meta)
    assert rows["E07505"]["lvh"] == 1.0  # the fixtures README: E07505 carries an LVH code
    af = [k for k, v in rows.items() if v["af"] == 1.0]
    assert len(af) == 1  # exactly one fixture record lists 164889003
    multi = [k for k, v in rows.items() if sum(v.values()) >= 2]
    assert multi, "multi-label records set several columns"
    assert all(not math.isnan(x) for v in rows.values() for x in v.values())  # every record lists diagnoses


def test_header_map_override_and_missing_when_no_diagnoses():
    cfg = IngestConfig(dx_codes={"af": [], "brady": ["426177001"]}, dx_patterns={"af": [], "lvh": [r"\blvh\b"]})
    cfg.validate()
    hmap = HeaderLabelMap.from_config(cfg)
    assert "af" not in hmap.names and "brady" in hmap.names and "rbbb" in hmap.names
    labels = hmap.labels({"dx_codes": ["426177001"], "dx_statements": ["Possible LVH."]})
    assert labels["brady"] == 1.0 and labels["lvh"] == 1.0 and labels["rbbb"] == 0.0
    assert all(math.isnan(v) for v in hmap.labels({"dx_codes": [], "dx_statements": []}).values())
    assert HeaderLabelMap.from_config(IngestConfig(header_labels=False)).names == ()
    assert set(DEFAULT_DX_CODES) <= set(HeaderLabelMap.from_config(IngestConfig()).names)


@pytest.mark.parametrize("bad, key", [
    ({"dx_codes": {"af": ["AF"]}}, "ingest.dx_codes.af"),
    ({"dx_patterns": {"lvh": ["(unclosed"]}}, "ingest.dx_patterns.lvh"),
    ({"dx_codes": {"site": ["1"]}}, "ingest.dx_codes.site"),
    ({"dx_codes": {"Bad Name": ["1"]}}, "ingest.dx_codes.Bad Name"),
    ({"label_columns": ["age"]}, "label_columns"),
    ({"label_key": "a b"}, "label_key"),
])
def test_header_map_config_errors_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        IngestConfig(**bad).validate()


def test_listing_skips_annotation_and_side_files(tmp_path):
    write_collection(tmp_path, n=4)
    listing = list_inputs([tmp_path])
    assert [Path(f.path).suffix for f in listing.files] == [".hea"] * 4
    assert listing.skipped["annotation"] == 4 * len(ANNOTATORS)
    assert listing.skipped["side_file"] == 3 and listing.companions == 4  # RECORDS, ludb.csv, LICENSE.txt
    assert not listing.rejects


def test_header_like_text_under_another_name_is_not_read_as_wfdb(tmp_path):
    hea = write_wfdb(tmp_path / "in", "rec", ecg(1))
    shutil.copy(hea, tmp_path / "in" / "other.head")  # no record 'other': not an annotation of one
    summary = run_ingest([tmp_path / "in"], tmp_path / "c", CFG, KEY, progress=False)
    assert summary["n_accepted"] == 1 and summary["by_reason"] == {"unreadable": 1}
    assert "not named .hea" in read_rejects(tmp_path / "c").detail.iloc[0]


def test_collection_ingest_with_record_key_and_header_labels(tmp_path):
    truth = write_collection(tmp_path / "ludb", n=8)
    names = sorted(truth)
    # labels keyed by record name: one paper task and one of the user's own columns; record 2's hcm is blank
    rows = ["record,hcm,qt_long"] + [f"{k},{'' if k == '2' else int(k) % 2},{int(k) % 3 == 0:d}" for k in names]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = IngestConfig(corpus_fs=250, shard_size=16, label_key="record", label_columns=["qt_long"])
    cfg.validate()
    out = tmp_path / "corpus"
    summary = run_ingest([tmp_path / "ludb"], out, cfg, KEY, labels_csv=str(tmp_path / "labels.csv"), progress=False)
    assert summary["n_rejected"] == 0 and summary["n_accepted"] == 8, read_rejects(out).to_dict("records")
    assert summary["skipped"] == {"annotation": 8 * len(ANNOTATORS), "side_file": 3}
    assert summary["labels_csv"]["matched"] == 8
    assert "lvh 8" in format_summary(summary) and "qt_long 8" in format_summary(summary)
    meta = read_metadata(out)
    assert "record" not in meta.columns and "dx_statements" not in meta.columns and "dx_codes" not in meta.columns
    assert sorted(meta.sex) == sorted(t["sex"] for t in truth.values())
    assert sorted(meta.age) == sorted(t["age"] for t in truth.values())
    # join by record: the multiset of (sex, age, hcm, qt_long, lvh, af) matches the truth
    def key(sex, age, hcm, qt, lvh, af):
        return (sex, age, -1.0 if math.isnan(hcm) else hcm, qt, lvh, af)
    want = sorted(key(t["sex"], t["age"], math.nan if k == "2" else float(int(k) % 2), float(int(k) % 3 == 0),
                      t["lvh"], t["af"]) for k, t in truth.items())
    got = sorted(key(r.sex, r.age, r.hcm, r.qt_long, r.lvh, r.af) for r in meta.itertuples())
    assert got == want
    assert summary["labelled"]["lvh"] == 8 and summary["labelled"]["qt_long"] == 8 and summary["labelled"]["hcm"] == 7
    assert meta.lvh.sum() == sum(t["lvh"] for t in truth.values()) > 0
    # the record names stay out of everything but private/
    for p in out.rglob("*"):
        if p.is_file() and "private" not in p.parts and p.suffix in (".json", ".yaml"):
            assert '"1.hea"' not in p.read_text() and "data/1" not in p.read_text()
