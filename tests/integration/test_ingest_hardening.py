"""Ingest under attack: one crafted case per class of input that once got through - identifiers in
folder names and free text, error texts that echo content, concurrent runs, unaccounted paths, signal files
outside the root, garbage that is not an ECG, conflicting labels, killed workers, decompression bombs,
misleading reasons, patient ids - plus the public synthetic key."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers.data_ingest.crafted import LEADS, ROOT, ecg, muse_bytes, run_synth, write_npz, write_wfdb
from heartbeit.config import IngestConfig
from heartbeit.data.ingest import deid
from heartbeit.data.corpus import list_shards, read_metadata, read_rejects
from heartbeit.data.ingest.stage import run_ingest
from heartbeit.data.ingest.labels import LabelError, load_labels
from heartbeit.data.ingest.listing import list_inputs
from heartbeit.data.lock import DirLock, LockBusy, lock_path
from heartbeit.data.ingest.pool import ordered_map
from heartbeit.data.ingest.quality import check_plausible_ecg, check_signals, to_corpus
from heartbeit.data.reasons import IngestError

CFG = IngestConfig(corpus_fs=250, shard_size=4)
KEY = b"h" * 32
NAME, MRN, ZIP, SERIAL = "HORATIO_BLUNDERBUSS", "44556677", "02139", "55001234567"
SECRETS = [b"HORATIO", b"BLUNDERBUSS", MRN.encode(), ZIP.encode(), SERIAL.encode()]


def cli(*args: str, cwd: Path = ROOT, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "heartbeit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def public_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file() and "private" not in p.relative_to(root).parts]


# ---- identifiers: folder names, free text, error texts, array-part file maps ---------------------------------

@pytest.fixture(scope="module")
def leaky_inputs(tmp_path_factory) -> Path:
    """Identifiers in a folder name below the root, a MUSE SiteName and a device serial."""
    root = tmp_path_factory.mktemp("leaky") / "hospital_x"
    folder = root / f"MRN{MRN}_{NAME}"
    write_wfdb(folder, "rec1", ecg(1), comments=["Age: 60", "Sex: Male"])
    write_npz(folder, "arr1", ecg(2), sidecar={"site": ""})  # no site field: the folder would have named it
    doc = muse_bytes(ecg(3), site=f"Home visit {NAME} {ZIP}").replace(
        b"<AcquisitionDevice>MAC5500</AcquisitionDevice>", f"<AcquisitionDevice>MAC5500 SN {SERIAL}</AcquisitionDevice>".encode())
    (folder / "visit.xml").write_bytes(doc)
    # a file that is rejected for a reason read from inside it (its units text must not be echoed)
    bad = muse_bytes(ecg(4)).replace(b"MICROVOLTS", f"{NAME}VOLTS".encode(), 1)
    (folder / f"{NAME}_bad.xml").write_bytes(bad)
    return root


def test_no_identifier_from_folder_names_free_text_or_errors(leaky_inputs, tmp_path):
    out = tmp_path / "work" / "corpus"
    proc = cli("ingest", str(leaky_inputs), "--out", str(out), "--key", str(tmp_path / "k" / "deid.key"),
               "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    meta = read_metadata(out)
    assert len(meta) == 3
    sites = set(meta.site)
    assert "hospital_x" in sites  # files without a site field: the root's own name as typed
    codes = json.loads((out / "private" / "site_codes.json").read_text())
    assert set(codes) == sites - {"hospital_x"} and all(c.startswith("site-") for c in codes)
    assert NAME in " ".join(codes.values())  # the text behind the pseudonym lives in private/ only
    assert set(meta.device) == {"MAC5500", "CardioSoft", ""}  # the model, never the serial
    leaks = [(p, s) for p, data in public_bytes(out.parent) for s in SECRETS if s in data]
    leaks += [("console", s) for s in SECRETS if s.decode() in proc.stdout + proc.stderr]
    assert not leaks, leaks
    rejects = read_rejects(out)
    assert list(rejects.reason) == ["unsupported"] and NAME not in rejects.detail[0].split(":", 1)[1]
    assert rejects.reject_id[0].startswith("r") and (out / "private").stat().st_mode & 0o777 == 0o700


def test_site_map_and_site_flag_name_sites(leaky_inputs, tmp_path):
    cfg = IngestConfig(corpus_fs=250, site_map={f"Home visit {NAME} {ZIP}": "home_visits"})
    run_ingest([leaky_inputs], tmp_path / "c", cfg, KEY, progress=False)
    assert set(read_metadata(tmp_path / "c").site) == {"home_visits", "hospital_x"}
    proc = cli("ingest", str(leaky_inputs), "--site", "clinic_7", "--out", str(tmp_path / "c2"), "--key",
               str(tmp_path / "k.key"), "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(read_metadata(tmp_path / "c2").site) == {"clinic_7"}  # --site wins over text in the files


def test_headerless_labels_csv_error_does_not_print_its_first_row(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{MRN},{NAME},35\n1234,OTHER_NAME,50\n")
    with pytest.raises(LabelError) as exc:
        load_labels(csv, "mrn")
    assert NAME not in str(exc.value) and MRN not in str(exc.value) and "header" in str(exc.value)


# ---- concurrency, atomicity, the key file ----------------------------------------------------------------------

def test_lock_refuses_a_second_writer_and_takes_over_a_stale_lock(tmp_path):
    out = tmp_path / "corpus"
    inputs = tmp_path / "in"
    write_npz(inputs, "a", ecg(5))
    with DirLock(out):
        with pytest.raises(LockBusy, match="being written by another run"):
            run_ingest([inputs], out, CFG, KEY, progress=False)
    assert not lock_path(out).exists()
    # a lock left by a process that no longer exists (same host) is stale: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    lock_path(out).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}))
    assert run_ingest([inputs], out, CFG, KEY, progress=False)["n_accepted"] == 1
    assert not lock_path(out).exists()


def test_two_concurrent_ingests_into_one_folder(tmp_path):
    inputs = tmp_path / "in"
    for i in range(12):
        write_npz(inputs, f"e{i:02d}", ecg(100 + i))
    out = tmp_path / "corpus"
    key = tmp_path / "deid.key"
    deid.load_or_create_key(key)
    args = ["ingest", str(inputs), "--out", str(out), "--key", str(key), "--no-progress", "--workers", "1",
            "--set", "ingest.shard_size=2", "--set", "ingest.corpus_fs=250"]
    procs = [None, None]

    def go(i):
        procs[i] = cli(*args)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rcs = sorted(p.returncode for p in procs)
    assert rcs in ([0, 0], [0, 2]), [p.stdout + p.stderr for p in procs]
    if rcs == [0, 2]:
        assert any("being written by another run" in p.stderr for p in procs)
    meta = read_metadata(out)
    assert len(meta) == 12 and meta.ecg_uid.is_unique
    assert set(meta.shard) == {p.name for p in list_shards(out)}  # every listed shard exists, none extra
    again = cli(*args)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_up_to_date_claim_checks_the_shards_exist(tmp_path):
    inputs = tmp_path / "in"
    write_npz(inputs, "a", ecg(6))
    out = tmp_path / "c"
    run_ingest([inputs], out, CFG, KEY, progress=False)
    for shard in list_shards(out):
        shard.unlink()
    with pytest.raises(FileExistsError):  # not silently "up to date": a rebuild needs --overwrite
        run_ingest([inputs], out, CFG, KEY, progress=False)
    run_ingest([inputs], out, CFG, KEY, progress=False, overwrite=True)
    assert len(list_shards(out)) == 1


def test_resume_never_publishes_temporary_files(tmp_path):
    inputs = tmp_path / "in"
    for i in range(6):
        write_npz(inputs, f"e{i}", ecg(200 + i))
    out = tmp_path / "corpus"
    calls = []

    def crash(shard):
        calls.append(shard)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ingest([inputs], out, IngestConfig(corpus_fs=250, shard_size=2), KEY, progress=False, on_shard=crash)
    partial = tmp_path / ".corpus.partial"
    (partial / "shards" / ".corpus-000001.tar.x1y2.tmp").write_bytes(b"half a tar")  # what kill -9 leaves
    (partial / "shards" / "corpus-000007.tar").write_bytes(b"beyond the ledger")
    run_ingest([inputs], out, IngestConfig(corpus_fs=250, shard_size=2), KEY, progress=False)
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names
    assert sorted(p.name for p in list_shards(out)) == ["corpus-000000.tar", "corpus-000001.tar", "corpus-000002.tar"]


def test_key_creation_leaves_an_existing_folder_alone_and_key_inside_out_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    deid.load_or_create_key(shared / "deid.key")
    assert shared.stat().st_mode & 0o7777 == 0o1777
    fresh = tmp_path / "new" / "secret"
    deid.load_or_create_key(fresh / "deid.key")
    assert fresh.stat().st_mode & 0o777 == 0o700  # a folder created for the key is private
    inputs = tmp_path / "in"
    write_npz(inputs, "a", ecg(7))
    proc = cli("ingest", str(inputs), "--out", str(tmp_path / "c"), "--key", str(tmp_path / "c" / "k.key"),
               "--no-progress")
    assert proc.returncode == 2 and "inside --out" in proc.stderr


# ---- every path accounted for ------------------------------------------------------------------------------

def test_every_path_is_accepted_rejected_or_counted_as_skipped(tmp_path):
    root = tmp_path / "in"
    write_npz(root, "good", ecg(8))
    write_npz(root / ".hidden_dir", "h", ecg(9))
    (root / ".DS_Store").write_bytes(b"x")
    write_npz(tmp_path / "elsewhere", "linked", ecg(10))
    (root / "linked_dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "dangling.xml").symlink_to(tmp_path / "nowhere.xml")
    (root / "loop.xml").symlink_to(root / "loop.xml")
    os.mkfifo(root / "pipe.xml")  # reading it would block forever
    (root / "rec.atr").write_bytes(b"\x00" * 10)
    (root / os.fsdecode(b"bad\xffname.xml")).write_bytes(muse_bytes(ecg(11)))
    (root / "self.hea").write_text("self 12 500 5000\n" + "".join(f"self.hea 16 1000/mV 16 0 0 0 0 {n}\n" for n in LEADS))
    write_wfdb(root / "w", "r2", ecg(12))
    hea = (root / "w" / "r2.hea").read_text().replace("r2.dat", "other.xml")
    (root / "w" / "r2.hea").write_text(hea)
    (root / "w" / "other.xml").write_bytes(muse_bytes(ecg(13)))  # named as r2's signal file: still an input
    summary = run_ingest([root], tmp_path / "c", CFG, KEY, progress=False)
    rejects = read_rejects(tmp_path / "c").set_index("source_path")
    assert summary["skipped"] == {"annotation": 1, "hidden": 2, "side_file": 1, "special_file": 1,
                                  "symlinked_folder": 1}
    assert rejects.reason["dangling.xml"] == "unreadable" and rejects.reason["loop.xml"] == "unreadable"
    assert rejects.reason["self.hea"] == "malformed"
    assert "w/other.xml" not in rejects.index  # a valid MUSE file, accepted
    assert summary["n_accepted"] == 3 and summary["n_inputs"] == 8
    assert summary["n_accepted"] + summary["n_rejected"] == summary["n_inputs"]
    # r2.hea now names other.xml, so r2.dat is nobody's companion: an input of its own, refused
    assert rejects.reason.to_dict() == {"dangling.xml": "unreadable", "loop.xml": "unreadable", "self.hea": "malformed",
                                        "w/r2.dat": "unreadable", "w/r2.hea": "truncated"}
    # accepted: good.npz, w/other.xml and the MUSE file whose name is not UTF-8


def test_signal_files_must_stay_inside_the_input_root(tmp_path):
    outside = tmp_path / "outside"
    write_wfdb(outside, "victim", ecg(14))
    root = tmp_path / "in"
    for name, ref in (("abs", str(outside / "victim.dat")), ("up", "../outside/victim.dat")):
        write_wfdb(root, name, ecg(15))
        (root / f"{name}.hea").write_text((root / f"{name}.hea").read_text().replace(f"{name}.dat", ref))
        (root / f"{name}.dat").unlink()
    write_wfdb(root, "piped", ecg(16))
    (root / "piped.dat").unlink()
    os.mkfifo(root / "piped.dat")  # a signal file that would block its reader forever
    run_ingest([root], tmp_path / "c", CFG, KEY, progress=False)
    assert dict(zip(*read_rejects(tmp_path / "c")[["source_path", "reason"]].T.values)) == {
        "abs.hea": "outside_root", "up.hea": "outside_root", "piped.hea": "unreadable"}


# ---- garbage that is not an ECG -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gauss", "sine", "int16", "uniform", "copied", "impulsive"])
def test_noise_sine_and_random_data_are_not_ecgs(kind, tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500
    # scaled so that every earlier gate (flat, clipping, amplitude, gain) lets them through
    x = {"gauss": lambda: rng.normal(0, 0.15, (12, 5000)),
         "sine": lambda: np.tile(np.sin(2 * np.pi * t), (12, 1)) + rng.normal(0, 0.02, (12, 5000)),
         "int16": lambda: rng.integers(-32768, 32767, (12, 5000)) * 1e-5,
         "uniform": lambda: rng.uniform(-0.3, 0.3, (12, 5000)),
         "copied": lambda: np.tile(rng.normal(0, 0.15, 5000), (12, 1)),  # one noise trace in every lead
         "impulsive": lambda: np.clip(rng.standard_t(2, (12, 5000)) * 0.05, -2, 2)}[kind]()
    check_signals(x.astype(np.float32), 500, kind, CFG)
    write_npz(tmp_path / "in", kind, x)
    run_ingest([tmp_path / "in"], tmp_path / "c", CFG, KEY, progress=False)
    assert list(read_rejects(tmp_path / "c").reason) == ["not_ecg"]
    for seed in range(20):  # and at both corpus rates, many draws of the same kind: never taken for an ECG
        rng = np.random.default_rng(100 + seed)
        x = {"gauss": lambda: rng.normal(0, 0.15, (12, 5000)), "uniform": lambda: rng.uniform(-0.3, 0.3, (12, 5000)),
             "copied": lambda: np.tile(rng.normal(0, 0.15, 5000), (12, 1)),
             "impulsive": lambda: rng.standard_t(2, (12, 5000)) * 0.05}.get(kind, lambda: x)()
        for fs, step in ((500, 1), (250, 2)):
            with pytest.raises(IngestError, match="not an ECG"):
                check_plausible_ecg(np.rint(x[:, ::step] * 1000).astype(np.int16), fs, kind, IngestConfig())


@pytest.mark.parametrize("corpus_fs", [500, 250])
def test_plausibility_gate_passes_every_real_fixture(ecg_fixtures, corpus_fs):
    from heartbeit.data.ingest.arrays import ArrayDefaults
    from heartbeit.data.ingest.stage import Context, read_record
    from heartbeit.data.ingest.ptbxl import ScpTaskMap

    cfg = IngestConfig(corpus_fs=corpus_fs)
    ctx = Context(cfg, KEY, None, "accession", "auto", ArrayDefaults(fs=500), ScpTaskMap())
    checked = 0
    for item in list_inputs([ecg_fixtures]).files:
        try:
            rec = read_record(item, ctx)
            check_signals(rec.signals, rec.fs, item.rel, cfg)
        except IngestError:
            continue  # refused by an earlier gate for its own reason (test_ingest checks those)
        check_plausible_ecg(to_corpus(rec.signals, rec.fs, cfg, item.rel), cfg.corpus_fs, item.rel, cfg)
        checked += 1
    assert checked >= 45  # 3 MUSE, the CPSC .mat and the CinC records (AF, brady/tachycardia, LVH)


# ---- labels and patients ------------------------------------------------------------------------------------

def test_conflicting_labels_become_missing_and_unmatched_csv_warns(tmp_path, caplog):
    root = tmp_path / "in"
    write_npz(root, "a", ecg(20), sidecar={"accession": "A1"})
    write_npz(root, "b", ecg(21), sidecar={"accession": "B1"})
    csv = tmp_path / "labels.csv"
    csv.write_text("accession,lvef,lvef_le40,hcm\nA1,30,0,1\nB1,55,0,0\n")
    summary = run_ingest([root], tmp_path / "c", CFG, KEY, labels_csv=str(csv), progress=False)
    meta = read_metadata(tmp_path / "c").set_index("lvef_le40", drop=False)
    rows = {r.hcm: r for r in read_metadata(tmp_path / "c").itertuples()}
    assert math.isnan(rows[1.0].lvef) and math.isnan(rows[1.0].lvef_le40)  # A1: 30 % with flag 0 -> neither
    assert rows[0.0].lvef == 55 and rows[0.0].lvef_le40 == 0
    assert summary["labels_csv"] == {"rows": 2, "matched": 2, "conflicting_rows": 1} and len(meta) == 2
    other = tmp_path / "other.csv"
    other.write_text("accession,lvef\nZZZ,40\n")
    with caplog.at_level(logging.WARNING, logger="heartbeit.ingest"):
        summary = run_ingest([root], tmp_path / "c2", CFG, KEY, labels_csv=str(other), progress=False)
    assert summary["labels_csv"]["matched"] == 0 and "no record matched" in caplog.text


def test_patient_ids_from_sidecars_and_wfdb_comments_must_be_strings(tmp_path):
    root = tmp_path / "in"
    write_npz(root, "a", ecg(30), sidecar={"patient_id": "P-1", "mrn": None})
    write_npz(root, "b", ecg(31), sidecar={"patient_id": "P-1", "mrn": None})
    write_npz(root, "c", ecg(32), sidecar={"mrn": True})
    write_npz(root, "d", ecg(33), sidecar={"mrn": True})
    write_wfdb(root, "w1", ecg(34), comments=["Patient ID: W-9"])
    write_wfdb(root, "w2", ecg(35), comments=["Patient ID: W-9"])
    run_ingest([root], tmp_path / "c", CFG, KEY, progress=False)
    meta = read_metadata(tmp_path / "c")
    assert len(meta) == 4 and meta.patient_hash.nunique() == 2  # a pair per patient
    assert dict(zip(*read_rejects(tmp_path / "c")[["source_path", "reason"]].T.values)) == {
        "c.npz": "bad_patient_id", "d.npz": "bad_patient_id"}


# ---- workers, limits, formats -----------------------------------------------------------------------------

def _die_on_three(x):
    if x == 3:
        os._exit(9)  # what the OOM killer does to a worker
    return x * 10


@pytest.fixture
def forked_pool(monkeypatch):
    """Workers forked from this process (the pool spawns instead once torch is loaded, as it is by other tests
    in a full session): the killing functions below live in this test module and its monkeypatches."""
    import multiprocessing

    import heartbeit.data.ingest.pool as pool

    monkeypatch.setattr(pool, "_context", lambda: multiprocessing.get_context("fork"))


def test_a_killed_worker_costs_one_file_not_the_run(forked_pool):
    got = list(ordered_map(_die_on_three, list(range(8)), workers=2, chunk_size=3, on_death=lambda x: ("died", x)))
    assert got == [0, 10, 20, ("died", 3), 40, 50, 60, 70]


def test_ingest_survives_a_killed_worker(tmp_path, monkeypatch, forked_pool):
    import heartbeit.data.ingest.stage as ingest

    root = tmp_path / "in"
    for i in range(6):
        write_npz(root, f"e{i}", ecg(60 + i))
    real = ingest.read_record

    def oom_on_e3(item, ctx, fmt=None):
        if item.rel == "e3.npz":
            os._exit(137)  # the worker vanishes as under the OOM killer (workers are forked: they see this patch)
        return real(item, ctx, fmt)

    monkeypatch.setattr(ingest, "read_record", oom_on_e3)
    summary = run_ingest([root], tmp_path / "c", CFG, KEY, workers=2, progress=False)
    assert summary["n_accepted"] == 5 and summary["by_reason"] == {"worker_died": 1}
    assert read_rejects(tmp_path / "c").source_path.tolist() == ["e3.npz"]


def test_size_limits_refuse_bombs(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    # an npz whose member declares 12 x 50M float64 (4.8 GB) in a few hundred bytes
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (12, 50000000), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    with zipfile.ZipFile(root / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("signals.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)
    (root / "bomb.json").write_text(json.dumps({"fs": 500}))
    (root / "deep.xml").write_bytes(b"<RestingECG>" + b"<a>" * 300_000 + b"</a>" * 300_000 + b"</RestingECG>")
    import scipy.io

    # 2.4 MB of zeros compressed to a few kB; the limit is set to 1 MB here (default 64 MB)
    scipy.io.savemat(root / "zeros.mat", {"val": np.zeros((12, 25_000))}, do_compression=True)
    (root / "zeros.json").write_text(json.dumps({"fs": 500}))
    assert (root / "zeros.mat").stat().st_size < 50_000
    cfg = IngestConfig(corpus_fs=250, max_decompressed_mb=1.0)
    run_ingest([root], tmp_path / "c", cfg, KEY, progress=False)
    assert dict(zip(*read_rejects(tmp_path / "c")[["source_path", "reason"]].T.values)) == {
        "bomb.npz": "too_large", "deep.xml": "too_large", "zeros.mat": "too_large"}


def test_mat_v4_and_utf16_xml_are_read(tmp_path):
    import scipy.io

    root = tmp_path / "in"
    root.mkdir()
    scipy.io.savemat(root / "v4.mat", {"val": (ecg(40) * 1000).astype(np.float64)}, format="4")
    (root / "v4.json").write_text(json.dumps({"fs": 500, "units": "uV"}))
    doc = muse_bytes(ecg(41)).decode("iso-8859-1").replace('encoding="ISO-8859-1"', 'encoding="UTF-16"')
    (root / "u16.xml").write_bytes(doc.encode("utf-16"))
    summary = run_ingest([root], tmp_path / "c", CFG, KEY, progress=False)
    assert summary["n_accepted"] == 2, read_rejects(tmp_path / "c").to_dict("records")


# ---- the public synthetic key -----------------------------------------------------------

@pytest.fixture(scope="module")
def small_synth(tmp_path_factory) -> Path:
    return run_synth(tmp_path_factory.mktemp("pubkey") / "synth", n=12, seed=3, broken=0.0)


def test_synthetic_input_uses_the_public_key_wherever_the_key_file_is(small_synth, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}" / "corpus"
        proc = cli("ingest", str(small_synth), "--out", str(out), "--key", str(tmp_path / f"keys{i}" / "deid.key"),
                   "--no-progress", "--workers", "1", "--set", "ingest.corpus_fs=250")
        assert proc.returncode == 0, proc.stderr
        assert not (tmp_path / f"keys{i}").exists()  # no private key made or read for synthetic data
        outs.append(out)
    a, b = outs
    assert (a / "metadata.parquet").read_bytes() == (b / "metadata.parquet").read_bytes()
    assert [p.read_bytes() for p in list_shards(a)] == [p.read_bytes() for p in list_shards(b)]
    meta = read_metadata(a)
    uid = meta.ecg_uid.iloc[0]
    assert len(meta) and meta.patient_hash.str.len().eq(64).all() and uid
    assert set(meta.site) <= {"hosp_a", "hosp_b", "hosp_b_arrays", "hosp_ext", "ptbxl_like"}


def test_real_data_refuses_the_public_key_and_mixing_is_refused(small_synth, tmp_path):
    real = tmp_path / "real"
    write_npz(real, "a", ecg(50))
    with pytest.raises(deid.KeyFileError, match="synthetic input"):
        run_ingest([real], tmp_path / "c", CFG, deid.PUBLIC_SYNTH_KEY, progress=False)
    key = tmp_path / "pub.key"
    key.write_bytes(deid.PUBLIC_SYNTH_KEY + b"\n")
    key.chmod(0o600)
    proc = cli("ingest", str(real), "--out", str(tmp_path / "c2"), "--key", str(key), "--no-progress")
    assert proc.returncode == 2 and "synthetic" in proc.stderr
    with pytest.raises(deid.KeyFileError, match="mix"):
        run_ingest([small_synth, real], tmp_path / "c3", CFG, tmp_path / "k" / "deid.key", progress=False)
    # a real file dropped into a synthetic folder makes that folder real: the private key, not the public one
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(small_synth, tampered)
    write_npz(tampered / "arrays", "intruder", ecg(51))
    assert list_inputs([tampered]).synthetic is False


def test_plausibility_gate_accepts_severe_low_ef_ecgs():
    """Severe cardiomyopathy draws small, wide QRS complexes that are sharp in only some leads: the demo's
    synthetic corpus lost 9 such ECGs (LVEF 15-26 %) to `not_ecg` before the synchrony bar took them into
    account. Every synthetic low-EF ECG at full severity, with the corpus' artefacts, must pass."""
    from heartbeit.data.ingest.quality import to_corpus
    from heartbeit.data.synth.ecg import simulate_ecg

    failed = []
    for corpus_fs in (250,):
        cfg = IngestConfig(corpus_fs=corpus_fs)
        for seed in range(600):
            rng = np.random.default_rng(seed)
            x = simulate_ecg(seed, fs=500, lvef_le40=True, severity=float(rng.uniform(0.6, 1.0)),
                             noise_mv=float(rng.uniform(0.005, 0.03)), wander_mv=float(rng.uniform(0.0, 0.15)),
                             powerline_mv=float(rng.uniform(0.0, 0.02)))
            try:
                check_plausible_ecg(to_corpus(x, 500, cfg, "x"), corpus_fs, f"seed {seed}", cfg)
            except IngestError as exc:
                failed.append(str(exc))
    assert failed == []


def test_tall_voltage_hcm_ecgs_are_not_taken_for_a_gain_error():
    """The demo corpus lost 2 synthetic HCM ECGs (median lead 3.2 mV) to implausible_amplitude under a 3 mV
    median bar; a gain off by 4.88x lands well above 4 mV and stays refused (test_badinput)."""
    from heartbeit.data.synth.ecg import simulate_ecg

    cfg = IngestConfig()
    failed = []
    for seed in range(400):
        rng = np.random.default_rng(seed)
        x = simulate_ecg(seed, fs=500, hcm=True, severity=float(rng.uniform(0.7, 1.0)), noise_mv=0.02,
                         wander_mv=0.15, powerline_mv=0.02)
        try:
            check_signals(x, 500, f"seed {seed}", cfg)
        except IngestError as exc:
            failed.append(str(exc))
    assert failed == []
