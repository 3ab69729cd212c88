"""Ingest end to end: fixtures, the synthetic corpus against its ground truth, determinism, no-op rerun,
resume after an interruption, worker-count invariance, and the Slurm-array slicing + merge (array tasks run
as plain processes with SLURM_ARRAY_TASK_ID/COUNT set)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data_ingest.crafted import ROOT, ecg, run_synth, write_npz
from heartbeit.config import IngestConfig
from heartbeit.data.ingest.arrays import ArrayDefaults
from heartbeit.data.corpus import iter_corpus, list_shards, read_metadata, read_rejects
from heartbeit.data.ingest.stage import run_ingest
from heartbeit.data.ingest.listing import list_inputs, slice_inputs

KEY = b"0123456789abcdef0123456789abcdef"
CFG = IngestConfig(corpus_fs=250, shard_size=16)


def _shard_hashes(corpus: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(corpus)}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return run_synth(tmp_path_factory.mktemp("synth") / "synth", n=40, seed=5, broken=0.25)


@pytest.fixture(scope="module")
def synth_corpus(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    summary = run_ingest([synth_dir], out, CFG, KEY, labels_csv=str(synth_dir / "labels.csv"), workers=2,
                         progress=False)
    return out, summary


# ---- fixtures --------------------------------------------------------------------------------------------

def test_all_fixtures_ingest(ecg_fixtures, tmp_path):
    out = tmp_path / "corpus"
    summary = run_ingest([ecg_fixtures], out, CFG, KEY, array_defaults=ArrayDefaults(fs=500), progress=False)
    # 3 MUSE + 1 CPSC .mat + 49 WFDB headers (PTB-XL record 1, 48 CinC 2021; signal files are companions)
    assert summary["n_inputs"] == 53 and summary["n_companions"] == 49, read_rejects(out).to_dict("records")
    assert summary["n_accepted"] + summary["n_rejected"] == 53
    assert summary["by_format"]["mat"] == {"accepted": 1, "rejected": 0}
    assert summary["by_format"]["muse"] == {"accepted": 3, "rejected": 0}
    # no real recording - AF, bradycardia, LVH included - is refused as "not an ECG"; the CinC rejects are
    # the signal gates' (flat leads, clipping, gain) and one recording present twice
    assert "not_ecg" not in summary["by_reason"] and summary["n_accepted"] >= 45
    assert "amplitude_normalised" not in summary["by_reason"]  # real ECGs in millivolts
    meta = read_metadata(out)
    assert (meta.fs == 250).all() and (meta.n_samples == 2500).all()
    # the CinC headers' SNOMED #Dx codes become label columns: LVH present, every CinC record labelled
    # (the PTB-XL record lists no #Dx: missing)
    assert meta["lvh"].sum() >= 1 and meta["af"].notna().sum() == (meta.format == "wfdb").sum() - 1
    assert meta.loc[meta.format == "muse", "af"].isna().all()
    for row, x in iter_corpus(out):
        assert x.shape == (12, 2500) and x.dtype == np.float32
        np.testing.assert_allclose(x[2], x[1] - x[0], atol=0.0021)  # III = II - I survives int16 uV storage


def test_cpsc_mat_needs_rate_from_flags_or_sidecar(ecg_fixtures, tmp_path):
    src = ecg_fixtures / "arrays" / "cpsc2018" / "A1980.mat"
    out = tmp_path / "no_flags"
    run_ingest([src], out, CFG, KEY, progress=False)
    assert read_rejects(out).reason.tolist() == ["malformed"]  # no rate: refused, not guessed
    folder = tmp_path / "with_sidecar"
    folder.mkdir()
    shutil.copy(src, folder / "A1980.mat")
    (folder / "A1980.json").write_text(json.dumps({"fs": 500, "units": "mV", "site": "cpsc"}))
    summary = run_ingest([folder], tmp_path / "c2", CFG, KEY, progress=False)
    assert summary["n_accepted"] == 1
    row = read_metadata(tmp_path / "c2").iloc[0]
    assert row.sex == "M" and row.age == 52 and row.format == "mat"
    # a sidecar's site is free text: a keyed pseudonym outside private/, its text only inside
    assert row.site.startswith("site-") and "cpsc" not in row.site
    assert json.loads((tmp_path / "c2" / "private" / "site_codes.json").read_text()) == {row.site: "cpsc"}
    # the same file through CLI flags
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "ingest", str(src), "--out", str(tmp_path / "c3"),
                           "--key", str(tmp_path / "k"), "--fs", "500", "--units", "mV", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 ECGs" in proc.stdout and read_metadata(tmp_path / "c3").iloc[0].format == "mat"


def test_array_lead_order_and_units_from_sidecar(tmp_path):
    x = ecg(40)
    order = [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    from helpers.data_ingest.crafted import LEADS

    write_npz(tmp_path / "in", "rev", x[order] * 1000.0, units="uV", sidecar={"leads": [LEADS[i] for i in order]})
    run_ingest([tmp_path / "in"], tmp_path / "c", CFG, KEY, progress=False)
    (_, got), = list(iter_corpus(tmp_path / "c"))
    from scipy.signal import resample_poly

    np.testing.assert_allclose(got, resample_poly(x, 1, 2, axis=1), atol=0.002)


# ---- the synthetic corpus --------------------------------------------------------------------------------

def test_synthetic_ground_truth(synth_dir, synth_corpus):
    out, summary = synth_corpus
    truth = pd.read_csv(synth_dir / "ground_truth.csv", keep_default_na=False, dtype=str)
    rejects = read_rejects(out)
    meta = read_metadata(out)
    # every input in exactly one of corpus / rejects
    assert summary["n_inputs"] == len(truth) == len(meta) + len(rejects)
    assert rejects.source_path.is_unique and set(rejects.source_path) <= set(truth.relpath)
    broken = truth[truth.broken_reason != ""]
    assert len(broken) >= 10
    got = dict(zip(rejects.source_path, rejects.reason))
    assert {r: got.get(r) for r in broken.relpath} == dict(zip(broken.relpath, broken.broken_reason))
    assert len(rejects) == len(broken)  # no clean synthetic ECG refused (e.g. as amplitude_normalised)
    # labels joined, missing stays missing, STEMI for the PTB-XL-like site comes from SCP codes
    assert set(meta.lvef_le40.dropna().unique()) <= {0.0, 1.0}
    assert meta.lvef.notna().sum() > 0 and meta.stemi.notna().sum() > 0
    ptb = meta[meta.format == "wfdb"]
    assert len(ptb) and ptb.stemi.notna().all()
    assert set(meta.site) == set(truth[truth.broken_reason == ""].site)
    assert meta.ecg_uid.is_unique and (meta.age.dropna() <= 90).all()
    assert meta.patient_hash.nunique() <= truth.mrn.nunique()


def test_labels_blank_stays_missing(synth_dir, synth_corpus):
    out, _ = synth_corpus
    labels = pd.read_csv(synth_dir / "labels.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(synth_dir / "ground_truth.csv", keep_default_na=False, dtype=str)
    meta = read_metadata(out)
    n_blank_hcm = (labels.merge(truth[truth.broken_reason == ""], on="accession").hcm_x == "").sum()
    assert (meta[meta.format != "wfdb"].hcm.isna()).sum() == n_blank_hcm
    assert not (meta.hcm < 0).any()


def test_shard_members_match_metadata(synth_corpus):
    import tarfile

    out, _ = synth_corpus
    meta = read_metadata(out)
    for shard in list_shards(out):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
        uids = sorted({n.split(".")[0] for n in names})
        assert uids == sorted(meta[meta.shard == shard.name].ecg_uid)
    rows = list(iter_corpus(out))
    assert [r["ecg_uid"] for r, _ in rows] == meta.ecg_uid.tolist()
    first_meta, x = rows[0]
    assert x.shape == (12, first_meta["n_samples"])


def test_webdataset_reads_shards(synth_corpus):
    import webdataset as wds

    out, _ = synth_corpus
    samples = list(wds.WebDataset([str(p) for p in list_shards(out)], shardshuffle=False).decode())
    assert len(samples) == len(read_metadata(out))
    s = samples[0]
    assert s["signal.npy"].dtype == np.int16 and s["signal.npy"].shape[0] == 12
    assert s["json"]["ecg_uid"] == s["__key__"] and "shard" not in s["json"]


def test_rerun_is_noop_and_same_key_gives_identical_bytes(synth_dir, synth_corpus, tmp_path):
    out, _ = synth_corpus
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = run_ingest([synth_dir], out, CFG, KEY, labels_csv=str(synth_dir / "labels.csv"), progress=False)
    assert again["up_to_date"] and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # a second run elsewhere with one worker (the first used two): byte-identical shards
    other = tmp_path / "corpus"
    run_ingest([synth_dir], other, CFG, KEY, labels_csv=str(synth_dir / "labels.csv"), workers=1, progress=False)
    assert _shard_hashes(other) == _shard_hashes(out)
    pd.testing.assert_frame_equal(read_metadata(other), read_metadata(out))
    # other inputs into an existing corpus: refused without --overwrite
    with pytest.raises(FileExistsError):
        run_ingest([synth_dir / "arrays"], other, CFG, KEY, progress=False)


def test_interrupted_run_resumes_without_duplicates(synth_dir, synth_corpus, tmp_path):
    out, _ = synth_corpus
    target = tmp_path / "corpus"
    calls = []

    def crash_after_two(shard):
        calls.append(shard)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ingest([synth_dir], target, CFG, KEY, labels_csv=str(synth_dir / "labels.csv"), progress=False,
                   on_shard=crash_after_two)
    assert not target.exists()  # nothing half-written in place
    partial = tmp_path / ".corpus.partial"
    assert len(list_shards(partial)) == 2
    resumed = []
    run_ingest([synth_dir], target, CFG, KEY, labels_csv=str(synth_dir / "labels.csv"), progress=False,
               on_shard=resumed.append)
    assert resumed and resumed[0] == "corpus-000002.tar"  # the two finished shards were not redone
    assert _shard_hashes(target) == _shard_hashes(out)
    pd.testing.assert_frame_equal(read_metadata(target), read_metadata(out))
    pd.testing.assert_frame_equal(read_rejects(target), read_rejects(out))
    assert not partial.exists()


def test_slicing_is_a_deterministic_partition():
    items = list(range(103))
    parts = [slice_inputs(items, t, 7) for t in range(7)]
    assert sum(parts, []) == items and max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError):
        slice_inputs(items, 7, 7)


@pytest.mark.slow
def test_slurm_array_tasks_and_merge(synth_dir, synth_corpus, tmp_path):
    out, _ = synth_corpus
    inputs = tmp_path / "inputs"
    shutil.copytree(synth_dir, inputs)
    # a recording duplicated across slices: the merge must reject the later copy
    listing = list_inputs([inputs]).files
    first_ok = next(f for f in listing if f.rel.startswith("arrays/") and f.rel.endswith(".npz"))
    dup = inputs / "zz_dup" / "copy.npz"
    dup.parent.mkdir()
    shutil.copy(first_ok.path, dup)
    shutil.copy(Path(first_ok.path).with_suffix(".json"), dup.with_suffix(".json"))
    key = tmp_path / "k"
    key.write_text(KEY.decode())
    key.chmod(0o600)
    corpus = tmp_path / "merged"
    env = dict(os.environ, HEARTBEIT=f"{sys.executable} -m heartbeit", OMP_NUM_THREADS="1",
               SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_TASK_MIN="1", SLURM_CPUS_PER_TASK="1")
    common = ["--", "--key", str(key), "--labels", str(inputs / "labels.csv"), "--set", "ingest.corpus_fs=250",
              "--set", "ingest.shard_size=16"]
    for task in (3, 1, 2):  # any order, as a scheduler would
        proc = subprocess.run(["bash", "slurm/ingest.sh", "task", str(corpus), str(inputs), *common],
                              env={**env, "SLURM_ARRAY_TASK_ID": str(task)}, capture_output=True, text=True,
                              cwd=ROOT, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
    parts = sorted((tmp_path / "merged.parts").glob("task-*"))
    assert [p.name for p in parts] == ["task-00000", "task-00001", "task-00002"]
    sizes = [json.loads((p / "summary.json").read_text())["n_inputs"] for p in parts]
    assert sum(sizes) == len(listing) + 1 and max(sizes) - min(sizes) <= 1
    proc = subprocess.run(["bash", "slurm/ingest.sh", "merge", str(corpus), "--", "--set", "ingest.corpus_fs=250"],
                          env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged, single = read_metadata(corpus), read_metadata(out)
    assert sorted(merged.ecg_uid) == sorted(single.ecg_uid)
    # (the extra copy makes the folder no longer the synthetic writer's own: its sites are no longer the
    # declared ones but pseudonyms of the files' site text or the root's name, so `site` is not compared)
    assert not set(merged.site) & {"hosp_a", "hosp_b", "hosp_ext", "hosp_b_arrays", "ptbxl_like"}
    assert (corpus / "private" / "sources.parquet").exists() is False
    assert not any((p / "private").exists() for p in parts)  # no file map left beside the parts
    cols = ["ecg_uid", "patient_hash", "lvef", "hcm", "stemi"]
    pd.testing.assert_frame_equal(merged.sort_values("ecg_uid")[cols].reset_index(drop=True),
                                  single.sort_values("ecg_uid")[cols].reset_index(drop=True))
    rejects = read_rejects(corpus)
    assert rejects.set_index("source_path").reason["zz_dup/copy.npz"] == "duplicate_recording"
    assert len(rejects) == len(read_rejects(out)) + 1
    assert len(list(iter_corpus(corpus))) == len(merged)
    summary = json.loads((corpus / "summary.json").read_text())
    assert summary["n_inputs"] == len(listing) + 1
    # the merge is a no-op when repeated
    proc = subprocess.run(["bash", "slurm/ingest.sh", "merge", str(corpus)], env=env, capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "up to date" in proc.stdout
