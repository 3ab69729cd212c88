import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartbeit.config import RenderConfig
from heartbeit.data.render.stage import render_corpus
from heartbeit.data.shard_format import decode_image
from helpers.render_fixtures import make_corpus


def cfg(**kw):
    base = dict(image_size=48, shard_size=8, external_sites=["hosp_ext"])
    base.update(kw)
    return RenderConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, n_patients=24)
    return root


def tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "config.resolved.yaml"}


def test_shards_content_splits_and_index(corpus, tmp_path):
    out = tmp_path / "images"
    summary = render_corpus(corpus, out, cfg(), workers=1, progress=False)
    assert summary["index_written"]
    index = json.loads((out / "index.json").read_text())
    man = pd.read_parquet(out / "manifest.parquet")
    rendered = man[man["split"] != "excluded"]
    assert sum(s["count"] for s in index["splits"].values()) == len(rendered)
    assert set(man.loc[man["site"] == "hosp_ext", "split"]) == {"external"}
    layout = json.loads((out / "layout.json").read_text())
    assert len(layout["boxes"]) == 13 and layout["image_size"] == [48, 48]
    seen = set()
    for split, entry in index["splits"].items():
        for shard in entry["shards"]:
            path = out / shard["name"]
            assert shard["name"].startswith(f"{split}/{split}-") and shard["count"] <= 8
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                names = [m.name for m in members]
                assert names == sorted(names) and len(names) == 2 * shard["count"]
                assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
                for m in members:
                    data = tar.extractfile(m).read()
                    key, _, ext = m.name.partition(".")
                    if ext == "json":
                        meta = json.loads(data)
                        row = man.set_index("key").loc[key]
                        assert meta["split"] == split == row["split"] and row["shard"] == shard["name"]
                        assert meta["patient_hash"] == row["patient_hash"] and meta["layout"] == "3x4+II"
                        assert set(meta["labels"]) == {"lvef_le40", "hcm", "stemi"}
                        # per task: the training fractions this ECG is in (none outside train or unlabelled)
                        assert set(meta["fractions"]) == {"lvef_le40", "hcm", "stemi"}
                        for t, member_of in meta["fractions"].items():
                            assert member_of == [f for f in (0.01, 0.1, 0.25, 0.5, 1.0)
                                                 if f"frac_{t}_{f:g}" in row and bool(row[f"frac_{t}_{f:g}"])]
                            if split != "train" or meta["labels"][t] is None:
                                assert member_of == []
                        seen.add(key)
                    else:
                        img = decode_image(data, ext)
                        assert img.shape == (48, 48) and img.dtype == np.uint8 and img.min() < 100
            # the waveform sibling: the same samples' metadata and filtered waveforms, nothing else
            with tarfile.open(out / shard["name"].replace(".tar", ".wave.tar")) as tar:
                wnames = tar.getnames()
                assert wnames == sorted(wnames) and len(wnames) == 2 * shard["count"]
                assert {n.partition(".")[0] for n in wnames} == {n.partition(".")[0] for n in names}
                for name in wnames:
                    if name.endswith(".wave.npy"):
                        wave = np.load(io.BytesIO(tar.extractfile(name).read()), allow_pickle=False)
                        assert wave.dtype == np.int16 and wave.shape == (12, 1000)
    assert seen == set(rendered["key"])


def test_same_seed_same_bytes_and_rerun_skips(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    render_corpus(corpus, a, cfg(), workers=2, progress=False)
    render_corpus(corpus, b, cfg(), workers=1, progress=False)
    assert tree_bytes(a) == tree_bytes(b)  # worker count never changes the output
    again = render_corpus(corpus, a, cfg(), workers=1, progress=False)
    assert again["rendered_now"] == 0
    # a damaged shard is detected (sha256) and redone; the others are kept
    index = json.loads((a / "index.json").read_text())
    victim = a / index["splits"]["train"]["shards"][0]["name"]
    victim.write_bytes(victim.read_bytes()[:-1024])
    fixed = render_corpus(corpus, a, cfg(), workers=1, progress=False)
    assert fixed["rendered_now"] == 1 and tree_bytes(a) == tree_bytes(b)
    # a render setting change redoes every shard; a different split seed changes the assignment
    changed = render_corpus(corpus, a, cfg(image_size=40), workers=1, progress=False)
    assert changed["rendered_now"] == changed["shards"]
    man_a = pd.read_parquet(b / "manifest.parquet")
    render_corpus(corpus, tmp_path / "c", cfg(split_seed=7), workers=1, progress=False)
    man_c = pd.read_parquet(tmp_path / "c" / "manifest.parquet")
    assert (man_a["split"] != man_c["split"]).any()


def test_array_tasks_render_disjoint_slices(corpus, tmp_path, monkeypatch):
    from heartbeit.data.render import plan as render_plan, stage as render_stage

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    render_corpus(corpus, whole, cfg(), workers=1, progress=False)
    planned = render_corpus(corpus, parts, cfg(), num_tasks=2, plan_only=True, progress=False)
    assert planned["planned"] and planned["rendered_now"] == 0 and not list(parts.glob("*/*.tar"))
    assert (parts / "plan" / "plan.json").is_file() and (parts / "manifest.parquet").is_file()

    # tasks with a current plan read their own slice only: no corpus walk, no manifest, no whole-stage jobs
    def no_planning(*a, **k):
        raise AssertionError("an array task planned the whole stage again")

    monkeypatch.setattr(render_plan, "write_plan", no_planning)
    monkeypatch.setattr(render_stage, "write_plan", no_planning)  # the stage's own binding of it
    monkeypatch.setattr(render_stage, "index_corpus", no_planning)
    monkeypatch.setattr(render_stage, "build_manifest", no_planning)
    first = render_corpus(corpus, parts, cfg(), task_index=0, num_tasks=2, progress=False)
    assert not first["index_written"] and not (parts / "index.json").exists()
    second = render_corpus(corpus, parts, cfg(), task_index=1, num_tasks=2, progress=False)
    assert second["index_written"]
    assert first["rendered_now"] + second["rendered_now"] == first["shards"]
    plan_files = {k for k in tree_bytes(parts) if k.startswith("plan/")}
    assert plan_files == {"plan/plan.json", "plan/task-00000.parquet", "plan/task-00001.parquet"}
    assert tree_bytes(whole) == {k: v for k, v in tree_bytes(parts).items() if k not in plan_files}
    # a plan made from other settings (or for another task count) is not used: that task plans for itself
    with pytest.raises(AssertionError, match="planned the whole stage"):
        render_corpus(corpus, parts, cfg(image_size=40), task_index=0, num_tasks=2, progress=False)
    with pytest.raises(AssertionError, match="planned the whole stage"):
        render_corpus(corpus, parts, cfg(), task_index=0, num_tasks=3, progress=False)
    monkeypatch.undo()
    # and without any plan, array tasks plan for themselves (as before) with the same bytes
    solo = tmp_path / "solo"
    for task in (0, 1):
        render_corpus(corpus, solo, cfg(), task_index=task, num_tasks=2, progress=False)
    assert tree_bytes(solo) == tree_bytes(parts)


def test_npy_encoding_and_errors(corpus, tmp_path):
    out = tmp_path / "npy"
    render_corpus(corpus, out, cfg(encoding="npy"), progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["image_ext"] == "npy"
    with pytest.raises(FileNotFoundError, match="metadata.parquet"):
        render_corpus(tmp_path / "nothing", out, cfg(), progress=False)
    with pytest.raises(ValueError, match="task index"):
        render_corpus(corpus, out, cfg(), task_index=2, num_tasks=2, progress=False)


@pytest.mark.slow
def test_cli_render(corpus, tmp_path):
    from heartbeit.cli import main

    out = tmp_path / "cli"
    rc = main(["render", "--corpus", str(corpus), "--out", str(out), "--profile", "ci", "--no-progress",
               "--set", "render.external_sites=[hosp_ext]", "--set", "render.shard_size=10", "--workers", "1"])
    assert rc == 0
    assert (out / "index.json").is_file() and (out / "config.resolved.yaml").is_file()
    assert json.loads((out / "index.json").read_text())["image_size"] == 64  # the ci profile's size
