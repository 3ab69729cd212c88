import numpy as np
import pandas as pd
import pytest

from heartbeit.config import RenderConfig
from heartbeit.data.splits import assign_fractions, assign_splits, build_manifest, fraction_column, keyed_uniform

FRACTIONS = [0.01, 0.1, 0.25, 0.5, 1.0]


def cohort(n_patients, seed=0, prefix="p", prevalence=(0.15, 0.05, 0.08)):
    rng = np.random.default_rng(seed)
    rows = []
    sites = ["hosp_a", "hosp_b", "hosp_ext"]
    for p in range(n_patients):
        site = sites[int(rng.integers(3))]
        labels = {t: float(rng.random() < q) for t, q in zip(("lvef_le40", "hcm", "stemi"), prevalence)}
        for e in range(int(rng.integers(1, 4))):
            row = dict(ecg_uid=f"{prefix}{p:06d}e{e}", patient_hash=f"{prefix}{p:06d}", site=site, **labels)
            if rng.random() < 0.1:
                row["stemi"] = np.nan  # missing label
            rows.append(row)
    return pd.DataFrame(rows)


def manifest(meta, **kw):
    return build_manifest(meta, RenderConfig(external_sites=["hosp_ext"], **kw))


def test_no_patient_in_two_splits_and_external_only_external():
    meta = cohort(3000)
    meta.loc[meta.index[:5], "site"] = "hosp_ext"  # some patients with ECGs at both kinds of site
    man = manifest(meta)
    per_patient = man[man["split"] != "excluded"].groupby("patient_hash")["split"].nunique()
    assert (per_patient == 1).all()
    assert set(man.loc[man["site"] == "hosp_ext", "split"]) == {"external"}
    assert set(man.loc[man["site"] != "hosp_ext", "split"]) <= {"train", "val", "test", "excluded"}
    # internal ECGs of a patient seen at an external site are excluded, never trained or tested on
    mixed = set(man.loc[man["site"] == "hosp_ext", "patient_hash"])
    assert set(man.loc[man["patient_hash"].isin(mixed) & (man["site"] != "hosp_ext"), "split"]) <= {"excluded"}
    internal = man[man["split"].isin(["train", "val", "test"])]
    shares = internal.groupby("patient_hash")["split"].first().value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.03) and shares["val"] == pytest.approx(0.1, abs=0.03)


def test_split_is_a_pure_function_of_patient_and_seed():
    meta = cohort(500)
    a = assign_splits(meta, 42, 0.1, 0.2, ["hosp_ext"])
    shuffled = meta.sample(frac=1.0, random_state=1)
    b = assign_splits(shuffled, 42, 0.1, 0.2, ["hosp_ext"])
    pd.testing.assert_series_equal(a, b.loc[a.index])
    assert (assign_splits(meta, 43, 0.1, 0.2, ["hosp_ext"]) != a).any()
    u = keyed_uniform(["x", "y"], 0, "split")
    assert ((0 <= u) & (u < 1)).all() and u[0] == keyed_uniform(["x"], 0, "split")[0]


def test_fractions_nested_stratified_with_positives():
    meta = cohort(20000, prevalence=(0.15, 0.01, 0.08))
    man = manifest(meta, fractions=FRACTIONS)
    train = man[man["split"] == "train"]
    prev = None
    for f in FRACTIONS:
        inside = train[train[fraction_column(f)]]
        if prev is not None:
            assert set(prev["ecg_uid"]) <= set(inside["ecg_uid"])  # nested
        # patient-level: all or none of a patient's train ECGs
        assert (train.groupby("patient_hash")[fraction_column(f)].nunique() == 1).all()
        patients = inside["patient_hash"].nunique() / train["patient_hash"].nunique()
        assert patients == pytest.approx(f, rel=0.25, abs=0.003)
        for task in ("lvef_le40", "hcm", "stemi"):
            assert (inside[task] == 1).any(), (f, task)  # >= 1 positive per task
            if f >= 0.1:  # stratified: the positive rate tracks the train split's
                assert inside[task].mean() == pytest.approx(train[task].mean(), rel=0.3, abs=0.01)
        prev = inside
    assert man.loc[man["split"] != "train", [fraction_column(f) for f in FRACTIONS]].to_numpy().sum() == 0
    assert train[fraction_column(1.0)].all()
    smallest = train.apply(lambda r: min(f for f in FRACTIONS if r[fraction_column(f)]), axis=1)
    np.testing.assert_allclose(train["fraction"], smallest)


def test_top_up_guarantees_a_positive_in_tiny_fractions():
    meta = cohort(150, prevalence=(0.2, 0.03, 0.1))  # 1% of ~100 train patients: ~1 patient
    split = assign_splits(meta, 42, 0.1, 0.2, ["hosp_ext"])
    fr = assign_fractions(meta, split, 42, FRACTIONS)
    train_pos = {t: meta.loc[(split == "train") & (meta[t] == 1)] for t in ("lvef_le40", "hcm", "stemi")}
    for f in FRACTIONS:
        for t, pos in train_pos.items():
            if len(pos):
                assert fr.loc[pos.index, fraction_column(f)].any(), (f, t)


def test_adding_ecgs_does_not_move_existing_assignments():
    base = cohort(2000, seed=1)
    more = pd.concat([base, cohort(800, seed=2, prefix="q")], ignore_index=True)
    # plus a new ECG for existing patients (same labels)
    extra = base.drop_duplicates("patient_hash").head(50).assign(ecg_uid=lambda d: d["ecg_uid"] + "x")
    more = pd.concat([more, extra], ignore_index=True)
    a = manifest(base).set_index("ecg_uid")
    b = manifest(more).set_index("ecg_uid").loc[a.index]
    pd.testing.assert_series_equal(a["split"], b["split"])
    # The hash-threshold membership (r < f) never moves. Only a top-up (the lowest-ranked positive of a
    # task added when the threshold rule leaves a fraction without one) may be replaced by a new, better
    # ranked positive: at most one patient per task and fraction, and only positives.
    r = pd.Series(keyed_uniform(a["patient_hash"], 42, "fraction"), index=a.index)
    for f in FRACTIONS:
        col = fraction_column(f)
        by_threshold = (a["split"] == "train") & (r < f)
        assert a.loc[by_threshold, col].all() and b.loc[by_threshold, col].all()
        moved = a.index[a[col] != b[col]]
        assert not by_threshold[moved].any()
        assert a.loc[moved, "patient_hash"].nunique() <= 3
        assert (a.loc[moved, ["lvef_le40", "hcm", "stemi"]] == 1).any(axis=1).all()
    # the new ECGs of existing patients follow their patient
    new_rows = manifest(more).set_index("ecg_uid").loc[extra["ecg_uid"]]
    old_rows = a.loc[extra["ecg_uid"].str[:-1]]
    assert (new_rows["split"].to_numpy() == old_rows["split"].to_numpy()).all()


def test_manifest_columns_and_errors():
    man = manifest(cohort(50))
    for col in ["ecg_uid", "patient_hash", "site", "split", "fraction", "lvef_le40", "hcm", "stemi"] + [
            fraction_column(f) for f in FRACTIONS]:
        assert col in man
    assert man["ecg_uid"].is_monotonic_increasing
    dup = pd.concat([cohort(5), cohort(5)])
    with pytest.raises(ValueError, match="duplicate"):
        manifest(dup)
    with pytest.raises(ValueError, match="patient_hash"):
        manifest(cohort(5).drop(columns="patient_hash"))
