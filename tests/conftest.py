"""Shared fixtures. Tests that need ../shared/fixtures skip with a reason when it is absent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures" / "ecg"

# Keep tests on a 2-core machine from oversubscribing: torch/numpy threads per test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def ecg_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"real ECG fixtures not present at {SHARED_FIXTURES} (they live in ../shared beside the checkout)")
    return SHARED_FIXTURES


@pytest.fixture
def images_dir(tmp_path):
    """A stand-in image folder for matrix planning (an index naming one shard; no tar is read)."""
    d = tmp_path / "images"
    d.mkdir()
    (d / "index.json").write_text(json.dumps({"shards": ["a"]}))
    return d
