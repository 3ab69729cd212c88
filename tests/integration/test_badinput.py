"""A suite of >= 30 crafted corruptions (XML bombs, external entities, damaged base64/CRC/counts, truncated
and mislabelled WFDB, pickled/truncated arrays, implausible signals): one ingest run through the CLI must
finish (never crash, never hang: it runs under a timeout) and reject each file with its specific reason."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from helpers.data_ingest.crafted import ROOT, build_bad_inputs


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    expected = build_bad_inputs(base / "inputs")
    out = base / "corpus"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "ingest", str(base / "inputs"), "--out", str(out),
                           "--key", str(base / "secret" / "k"), "--workers", "2", "--no-progress",
                           "--set", "ingest.shard_size=4"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=180)
    return expected, out, proc


def test_suite_is_large_enough(bad_run):
    expected, _, _ = bad_run
    corruptions = [k for k, v in expected.items() if v]
    assert len(corruptions) >= 30
    assert {"xml_unsafe", "truncated", "bad_base64", "byte_count_mismatch", "crc_mismatch", "missing_lead",
            "duplicate_lead", "nan_or_inf", "flat_line", "clipping", "implausible_amplitude", "implausible_rate",
            "rate_mismatch", "too_short", "duplicate_recording"} <= set(expected.values())


def test_run_never_crashes(bad_run):
    _, out, proc = bad_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "metadata.parquet").is_file()


def test_each_corruption_has_its_reason(bad_run):
    expected, out, _ = bad_run
    rejects = pd.read_parquet(out / "private" / "rejects.parquet")
    got = dict(zip(rejects.source_path, rejects.reason))
    wrong = {rel: (want, got.get(rel, "<accepted>")) for rel, want in expected.items() if want and got.get(rel) != want}
    assert not wrong, wrong
    # valid controls (incl. Frank-lead and format-212 WFDB records) are accepted, not rejected
    accepted = [rel for rel, want in expected.items() if not want]
    assert not set(accepted) & set(got)
    meta = pd.read_parquet(out / "metadata.parquet")
    assert len(meta) == len(accepted)
    assert len(meta) + len(rejects) == len(expected)


def test_details_name_file_not_identifiers(bad_run):
    from helpers.data_ingest.crafted import SECRET_FIRST, SECRET_LAST, SECRET_MRN

    expected, out, proc = bad_run
    rejects = pd.read_parquet(out / "private" / "rejects.parquet")
    for rel, detail in zip(rejects.source_path, rejects.detail):
        assert detail.startswith(rel), (rel, detail)
        for secret in (SECRET_MRN, SECRET_FIRST, SECRET_LAST, "/etc/passwd", "example.invalid"):
            assert secret not in detail
    for secret in (SECRET_MRN, SECRET_FIRST, SECRET_LAST):
        assert secret not in proc.stderr and secret not in proc.stdout
