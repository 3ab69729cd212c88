"""`heartbeit synth compare`: the comparison's arithmetic, the command end to end, and the regression test
of the generator's tuned defaults (every real fixture median inside the synthetic 10-90 % range)."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from heartbeit.cli import main as cli_main
from heartbeit.eval.delineate import FEATURES
from heartbeit.eval.realism import REFERENCE_RANGES, compare


def test_reference_table_is_complete_and_ordered():
    assert list(REFERENCE_RANGES) == list(FEATURES)
    for name, ref in REFERENCE_RANGES.items():
        assert ref.low <= ref.median <= ref.high, name
        assert ref.source.startswith("["), name  # every value names its publication


def test_compare_distances_and_flags():
    real = pd.DataFrame({f: np.linspace(0.0, 4.0, 5) for f in FEATURES})  # median 2, IQR 2
    syn = pd.DataFrame({f: np.linspace(3.0, 7.0, 41) for f in FEATURES})  # median 5, 10 % = 3.4
    syn["normal"] = [1] * 20 + [0] * 21
    syn.loc[syn["normal"] == 0, "qrs_ms"] = np.nan  # NaNs are counted, not compared
    table = compare(real, syn).set_index(["cohort", "feature"])
    row = table.loc[("all", "pr_ms")]
    assert row["real_p50"] == 2.0 and row["syn_p50"] == 5.0
    assert row["d_median"] == pytest.approx(1.5)  # |5 - 2| / IQR 2
    assert row["w1"] == pytest.approx(1.5)  # every synthetic quantile above the real one: W1 = 5 - 2
    assert not row["real_in_syn_10_90"]
    assert table.loc[("normal", "pr_ms"), "n_syn"] == 20
    assert table.loc[("all", "qrs_ms"), "syn_nan"] == 21 and table.loc[("all", "qrs_ms"), "n_syn"] == 20
    # the real median inside the synthetic 10..90 %
    inside = compare(real, syn.assign(pr_ms=np.linspace(0.0, 4.0, 41))).set_index(["cohort", "feature"])
    assert inside.loc[("all", "pr_ms"), "real_in_syn_10_90"]
    assert inside.loc[("all", "pr_ms"), "w1"] < 0.2  # same range, 5 vs 41 points (vs 1.5 above)


def test_command_end_to_end(ecg_fixtures, tmp_path):
    real = tmp_path / "real"
    shutil.copytree(ecg_fixtures / "muse_xml", real)
    (real / "broken_patient_name.xml").write_text("<RestingECG><oops")  # a bad file: skipped, counted
    out = tmp_path / "realism"
    assert cli_main(["synth", "compare", "--real", str(real), "--n", "6", "--out", str(out)]) == 0
    for name in ("realism.csv", "realism.json", "realism.md", "realism.png", "features_real.csv",
                 "features_synthetic.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "realism.json").read_text())
    assert summary["real_records"] == 3 and sum(summary["real_skipped"].values()) == 1
    assert summary["synthetic_ecgs"] == 6 and len(summary["table"]) == 2 * len(FEATURES)
    table = pd.read_csv(out / "realism.csv")
    assert set(table["feature"]) == set(FEATURES) and set(table["cohort"]) == {"normal", "all"}
    feats = pd.read_csv(out / "features_real.csv")
    assert list(feats["format"]) == ["muse"] * 3
    # the cart's own measurements travel with the real features
    assert feats["device_qt_interval_ms"].notna().all()
    # privacy: no real file name (nor the patient identifiers inside them) reaches the outputs
    for f in out.iterdir():
        if f.suffix != ".png":
            text = f.read_text()
            for leak in ("example1", "muse_ecg1", "broken_patient_name", "JAX01234"):
                assert leak not in text, (f.name, leak)
    # a --real folder that does not exist is an error (exit 2), before any work
    assert cli_main(["synth", "compare", "--real", str(tmp_path / "missing"), "--n", "2",
                     "--out", str(tmp_path / "o2")]) == 2


def test_tuned_generator_matches_the_real_fixtures(ecg_fixtures):
    """Regression test of heartbeit/data/synth/ecg.py's baseline morphology: for every feature the median of
    the real fixtures lies within the 10..90 % range of the normal synthetic ECGs of the ci profile (the
    README table). Fails when someone moves a default far enough to push a feature out."""
    from heartbeit.config import load_config
    from heartbeit.eval.realism import measure_real, measure_synthetic

    cfg = load_config("ci")
    real, skipped = measure_real([ecg_fixtures], cfg.render)
    assert len(real) >= 50 and not skipped
    table = compare(real, measure_synthetic(cfg.synth, 300, cfg.render))
    normal = table[table["cohort"] == "normal"]
    out = normal.loc[~normal["real_in_syn_10_90"], ["feature", "real_p50", "syn_p10", "syn_p90"]]
    assert out.empty, out.to_string()
