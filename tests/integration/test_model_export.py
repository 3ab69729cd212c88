"""A model folder is publishable by construction: identifiers planted in every input channel
never reach a byte of it, small counts are withheld, and it holds only allow-listed fields."""
from __future__ import annotations

import json
import re

import pytest

from heartbeit.modelschema import FORMAT, WITHHELD, class_counts, confusion, publish_metrics
from helpers.model_fixtures import PLANTED, trained_cell


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    return trained_cell(tmp_path_factory)


def test_no_planted_identifier_in_any_byte_of_the_export(study, tmp_path, capsys):
    """Paths and folder names (the run, the inputs, the key file and the labels CSV all lie under folders named
    after a patient), MUSE/WFDB/sidecar free text, site text and the site map keyed by it, a root named after
    the patient (a site label in the cell's predictions) and accession numbers as label keys: the export and
    its console output hold none of them (case-insensitive, every byte of every file)."""
    from heartbeit.cli import main

    out = tmp_path / "published"
    assert main(["export", str(study["cell_dir"]), "--out", str(out)]) == 0
    console = capsys.readouterr()
    blobs = {p.name: p.read_bytes().lower() for p in out.rglob("*") if p.is_file()}
    assert sorted(blobs) == ["README.md", "config.json", "model.safetensors"]
    blobs["console"] = (console.out + console.err).lower().encode()
    leaks = [(name, s) for name, data in blobs.items() for s in PLANTED if s.lower().encode() in data]
    assert not leaks, leaks
    # the channels were live: the planted text did reach the cell and its run (so the test can fail)
    import pandas as pd

    from heartbeit.data.corpus import read_metadata

    sites = set(read_metadata(study["work"] / "corpus").site) | set(pd.read_parquet(study["cell_dir"] /
                                                                                    "predictions.parquet").site)
    run_config = (study["cell_dir"].parent.parent / "config.resolved.yaml").read_text().lower()
    assert "hosp_perpetua" in sites and "goldthwaite" in run_config and "clinic" in run_config
    assert str(study["cell_dir"]).lower().count("goldthwaite")


def test_the_export_holds_allow_listed_fields_and_withholds_small_counts(study):
    cfg = json.loads((study["model"] / "config.json").read_text())
    assert cfg["format"] == FORMAT and cfg["suppression"] == {"min_count": 10}
    assert "model_kwargs" not in cfg and "site_map" not in cfg["ingest"] and "key_file" not in cfg["ingest"]
    assert set(cfg["metrics"]) <= {"test", "external"}
    for count in (cfg["threshold"]["n_val"], cfg["threshold"]["n_val_pos"], cfg["cell"]["n_train_pos"],
                  *cfg["metrics"]["test"]["counts"].values()):
        assert count in ("< 10", WITHHELD) or (isinstance(count, int) and count >= 10), count
    card = (study["model"] / "README.md").read_text()
    assert "load_model_dir" in card and "model_kwargs" not in card and "< 10" in card
    assert not re.search(r"\| test \| [0-9] \|", card)  # no exact small n in the metrics table
    header = (study["model"] / "model.safetensors").read_bytes()
    n = int.from_bytes(header[:8], "little")
    assert json.loads(header[8:8 + n])["__metadata__"] == {"format": "pt"}


def test_lowering_k_publishes_exact_counts(study, tmp_path):
    from heartbeit.modelio import export_cell, load_model_dir

    cfg = export_cell(study["cell_dir"], tmp_path / "k1", min_count=1)
    counts = cfg["metrics"]["test"]["counts"]
    assert isinstance(cfg["threshold"]["n_val"], int) and isinstance(counts["n"], int)
    assert all(isinstance(v, int) or v in ("< 1", WITHHELD) for v in counts.values()), counts  # a 0 is "< 1"
    assert cfg["metrics"]["test"]["auroc"]["reason"] != WITHHELD
    load_model_dir(tmp_path / "k1")


@pytest.mark.parametrize("n,pos,expected", [
    (100, 40, (100, 40, 60)),  # both classes >= k: exact
    (100, 3, (100, "< 10", WITHHELD)),  # the small class hidden; its complement would give it away
    (100, 95, (100, WITHHELD, "< 10")),
    (12, 5, (12, "< 10", "< 10")),  # both small: only the total
    (6, 3, ("< 10", "< 10", "< 10")),
])
def test_class_counts(n, pos, expected):
    assert class_counts(n, pos, 10) == expected


def test_confusion_and_rates_never_give_a_small_cell_away():
    big = {"tp": 40, "fp": 12, "fn": 15, "tn": 60}
    assert confusion(big, 10) == {"n": 127, "n_pos": 55, "n_neg": 72, **big}
    small = {**big, "fn": 3}
    shown = confusion(small, 10)
    assert shown["fn"] == "< 10" and shown["tp"] == shown["fp"] == shown["tn"] == WITHHELD
    metric = {"value": 0.9, "low": 0.8, "high": 0.95, "reason": "one_class: n_pos=3, n_neg=0"}
    pub = publish_metrics({**{m: metric for m in ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")},
                           "counts": {**small, "n": 115, "threshold": 0.5}}, 10)
    # class counts 43 / 72 >= 10: AUROC/AUPRC (threshold-free) stay; every rate at the threshold is withheld
    assert pub["auroc"]["value"] == 0.9 and pub["auroc"]["reason"] == "one_class"
    assert all(pub[m]["value"] is None and pub[m]["reason"] == WITHHELD for m in ("sensitivity", "specificity",
                                                                                  "ppv", "npv"))
