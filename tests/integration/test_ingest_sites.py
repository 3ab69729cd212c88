"""Site labels only from what the user typed, and ingest on a full or read-only disk:
a single file or `.` gets a keyed pseudonym, never its parent folder's name; a root named with control
characters or look-alike letters is refused with a pointer to --site; every refusal is one line on stderr; a
disk that fills up publishes nothing, and a rerun after freeing space resumes."""
from __future__ import annotations

import errno
import json
import logging
import subprocess
from pathlib import Path

import pytest

from helpers.data_ingest.crafted import ecg, muse_bytes, write_npz
from heartbeit.config import IngestConfig
from heartbeit.data.corpus import read_metadata, read_rejects
from heartbeit.data.ingest.stage import run_ingest

KEY = b"s" * 32
CFG = IngestConfig(corpus_fs=250, shard_size=2)
NAME = "AMBROSE_FITZWILLIAM"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from heartbeit.cli import main

    try:
        rc = main(list(argv))
    finally:
        root = logging.getLogger("heartbeit")
        for h in list(root.handlers):  # handlers bound to this test's streams and log files
            if getattr(h, "_heartbeit", False) or isinstance(h, logging.FileHandler):
                root.removeHandler(h)
                h.close()
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def ingest_args(root, out: Path, key: Path, *extra: str) -> list[str]:
    return ["ingest", str(root), "--out", str(out), "--key", str(key), "--no-progress", "--workers", "1",
            "--set", "ingest.corpus_fs=250", "--set", "ingest.shard_size=2", *extra]


def public_text(corpus: Path) -> bytes:
    return b"".join(p.read_bytes() for p in corpus.rglob("*") if p.is_file()
                    and "private" not in p.relative_to(corpus).parts)


def test_a_single_file_and_dot_get_pseudonymous_sites(tmp_path, capsys, monkeypatch):
    folder = tmp_path / f"{NAME}_MRN4471"
    write_npz(folder, "a", ecg(1), sidecar={"site": ""})
    write_npz(folder, "b", ecg(2), sidecar={"site": ""})
    run_ingest([folder / "a.npz"], tmp_path / "c1", CFG, KEY, progress=False)
    site = read_metadata(tmp_path / "c1").site[0]
    assert site.startswith("site-") and len(site) == 13
    codes = json.loads((tmp_path / "c1" / "private" / "site_codes.json").read_text())
    assert NAME in codes[site]  # the path behind the pseudonym lives in private/ only
    monkeypatch.chdir(folder)
    rc, out, err = cli(capsys, *ingest_args(".", tmp_path / "c2", tmp_path / "k" / "deid.key"))
    assert rc == 0, err
    assert "keyed pseudonym" in out and NAME not in out + err
    sites = set(read_metadata(tmp_path / "c2").site)
    assert len(sites) == 1 and sites.pop().startswith("site-")
    for corpus in (tmp_path / "c1", tmp_path / "c2"):
        assert NAME.encode() not in public_text(corpus) and NAME.lower().encode() not in public_text(corpus).lower()


@pytest.mark.parametrize("name,problem", [
    ("hosp\x1b[31mred", "control"), ("hosp\nB", "control"), ("h\u043esp_a", "several scripts"),
    ("\uff48\uff4f\uff53\uff50", "look-alike"), ("hosp\u202eevil", "control"),
])
def test_root_names_that_could_deceive_are_refused(name, problem, tmp_path, capsys):
    root = tmp_path / name
    write_npz(root, "a", ecg(3), sidecar={"site": ""})
    rc, out, err = cli(capsys, *ingest_args(root, tmp_path / "c", tmp_path / "k" / "deid.key"))
    lines = [ln for ln in err.splitlines() if ln.startswith("heartbeit ingest")]
    assert rc == 2 and len(lines) == 1 and problem in lines[0] and "--site" in lines[0], err
    assert "\x1b" not in out + err and "\u202e" not in out + err and not (tmp_path / "c").exists()
    rc, out, err = cli(capsys, *ingest_args(root, tmp_path / "c", tmp_path / "k" / "deid.key", "--site", "hosp_a"))
    assert rc == 0 and set(read_metadata(tmp_path / "c").site) == {"hosp_a"}, err
    rc, _, err = cli(capsys, *ingest_args(root, tmp_path / "c3", tmp_path / "k" / "deid.key", "--site",
                                          "h\u043esp_a"))
    assert rc == 2 and "several scripts" in err


def test_refusals_are_true_and_on_stderr(tmp_path, capsys):
    root = tmp_path / "in"
    write_npz(root, "a", ecg(4))
    empty = tmp_path / "labels.csv"
    empty.write_text("")
    rc, out, err = cli(capsys, *ingest_args(root, tmp_path / "c", tmp_path / "k" / "deid.key", "--labels",
                                            str(empty)))
    assert rc == 2 and "labels CSV is empty" in err and "Traceback" not in err and "heartbeit" not in out
    keydir = tmp_path / "keydir"
    keydir.mkdir()
    rc, _, err = cli(capsys, *ingest_args(root, tmp_path / "c", keydir))
    assert rc == 2 and "not a regular file" in err and "readable by others" not in err
    # an empty lead is too short, not a CRC mismatch
    doc = muse_bytes(ecg(5))
    start, end = doc.index(b"<WaveFormData>") + len(b"<WaveFormData>"), doc.index(b"</WaveFormData>")
    doc = doc[:start] + doc[end:]
    doc = doc.replace(b"<LeadByteCountTotal>10000</LeadByteCountTotal>", b"<LeadByteCountTotal>0</LeadByteCountTotal>",
                      1).replace(b"<LeadSampleCountTotal>5000</LeadSampleCountTotal>",
                                 b"<LeadSampleCountTotal>0</LeadSampleCountTotal>", 1)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "empty_lead.xml").write_bytes(doc)
    run_ingest([tmp_path / "m"], tmp_path / "c4", CFG, KEY, progress=False)
    assert read_rejects(tmp_path / "c4").reason.tolist() == ["too_short"]


def _inputs(tmp_path: Path, n: int = 12) -> Path:
    root = tmp_path / "in"
    for i in range(n):
        write_npz(root, f"e{i:02d}", ecg(40 + i), sidecar={"site": ""})
    return root


def test_a_full_disk_publishes_nothing_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    """ENOSPC injected at the third ledger entry (always runs; the tmpfs test below does it for real)."""
    import heartbeit.data.ingest.stage as ingest

    root = _inputs(tmp_path)
    out = tmp_path / "corpus"
    real = ingest.atomic_write_json
    calls = []

    def full(path, obj):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(ingest, "atomic_write_json", full)
    rc, _, err = cli(capsys, *ingest_args(root, out, tmp_path / "k" / "deid.key"))
    lines = [ln for ln in err.splitlines() if ln.startswith("heartbeit ingest")]
    assert rc == 2 and len(lines) == 1 and "ENOSPC" in lines[0] and "resumes" in lines[0], err
    assert "Traceback" not in err and not out.exists()
    monkeypatch.setattr(ingest, "atomic_write_json", real)
    written = []
    summary = run_ingest([root], out, CFG, tmp_path / "k" / "deid.key", progress=False, on_shard=written.append)
    assert summary["n_accepted"] == 12 and len(written) == 4  # 2 of 6 shards were finished before the disk filled


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on this machine (needs root with CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_ingest_on_a_small_tmpfs_then_read_only(small_tmpfs, tmp_path, capsys):
    root = _inputs(tmp_path)
    out = small_tmpfs / "corpus"
    key = tmp_path / "k" / "deid.key"
    rc, _, err = cli(capsys, *ingest_args(root, out, key))
    lines = [ln for ln in err.splitlines() if ln.startswith("heartbeit ingest")]
    assert rc == 2 and len(lines) == 1 and "No space left" in lines[0] and "Traceback" not in err, err
    assert not out.exists()  # nothing published
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    rc, out_text, err = cli(capsys, *ingest_args(root, out, key))
    assert rc == 0 and "resuming" in err and read_metadata(out).shape[0] == 12, err
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    rc, _, err = cli(capsys, *ingest_args(root, small_tmpfs / "other", key))
    lines = [ln for ln in err.splitlines() if ln.startswith("heartbeit ingest")]
    assert rc == 2 and len(lines) == 1 and "Read-only file system" in lines[0] and "Traceback" not in err, err
    assert not (small_tmpfs / "other").exists()
