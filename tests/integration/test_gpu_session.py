"""bench/gpu_session.sh, the prepared first GPU run, in its CPU dry mode: every part runs
(versions, the gpu tests' collection, the distributed self-test at world size 1, pretraining steps on one
process and on the paper's data-parallel engine with the profiler's sync count) and writes its record."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_session_dry_run_writes_every_record(tmp_path):
    from heartbeit.config import load_config

    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), "--dry-run", str(tmp_path)],
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = json.loads((tmp_path / "gpu_session.json").read_text())
    parts = {p["part"]: p for p in session["parts"]}
    assert session["dry_run"] is True
    assert {"env", "pytest-gpu", "selftest", "steps-local", "steps-dp"} <= set(parts)
    assert {n: p["rc"] for n, p in parts.items() if p["rc"] != 0} == {}
    env = json.loads((tmp_path / "gpu_env.json").read_text())
    assert env["versions"]["torch"] and env["machine"]["cpu_model"]
    assert "test_gpu.py" in (tmp_path / "gpu_pytest.txt").read_text()
    assert json.loads((tmp_path / "gpu_selftest.json").read_text())["images_per_s"] > 0
    for engine, zero in (("local", 0), ("dp", load_config("paper").pretrain.zero_stage)):
        rec = json.loads((tmp_path / f"gpu_steps_{engine}.json").read_text())
        assert rec["engine"] == engine and rec["zero_stage"] == zero and rec["dry_run"] is True
        assert rec["engine_class"] == {"local": "LocalEngine", "dp": "DDPEngine" if zero == 0 else "DeepSpeedEngine"}[engine]
        assert rec["images_per_s"] > 0 and rec["mfu"] > 0 and rec["profiled_steps"] == 2
        assert "cuda_syncs_per_step" in rec and "host_syncs_in_our_code_per_step" in rec
