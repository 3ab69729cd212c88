"""The member-offset index: ranks x workers may outnumber shards, and a
small training subset reads only its own samples' bytes with the batches of a whole-shard read."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from heartbeit.config import RenderConfig
from heartbeit.data import members
from heartbeit.data.loading.dealing import epoch_plan
from heartbeit.data.loading.epoch_loader import ImageLoader
from heartbeit.data.loading.loader import make_image_dataset, make_loader
from heartbeit.data.render.stage import render_corpus
from helpers.render_fixtures import make_corpus


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    make_corpus(root / "corpus", n_patients=60, seed=3)
    # 51 training ECGs in 3 shards (the 4 ranks x 2 workers over 3 shards)
    cfg = RenderConfig(image_size=32, shard_size=17, external_sites=["hosp_ext"], wave_hz=50)
    render_corpus(root / "corpus", root / "images", cfg, workers=1, progress=False)
    return root / "images"


def _shards(images, split):
    return [s["name"] for s in json.loads((images / "index.json").read_text())["splits"][split]["shards"]]


def _without_index(images, dest):
    shutil.copytree(images, dest)
    for path in dest.rglob("*.idx.json"):
        path.unlink()
    return dest


def test_index_ranges_read_the_same_samples(images):
    tar = images / _shards(images, "train")[0]
    whole = list(members.read_tar_samples(tar))
    index = members.load_member_index(tar)
    assert index["keys"] == [s["__key__"] for s in whole]
    picked = [0, 2, 3, 4, len(whole) - 1]
    got = list(members.read_indexed_samples(tar, index, picked))
    assert [s["__key__"] for s in got] == [whole[i]["__key__"] for i in picked]
    assert all(g["png"] == whole[i]["png"] and g["json"] == whole[i]["json"] for g, i in zip(got, picked))
    # a stale index (the tar changed since) is not used
    stale = dict(index, tar_bytes=index["tar_bytes"] + 512)
    stale.pop("position")
    copy = tar.parent.parent.parent / "stale.tar"
    shutil.copy(tar, copy)
    members.index_path(copy).write_text(json.dumps(stale))
    assert members.load_member_index(copy) is None
    # an index that names the wrong samples is refused, not trusted
    wrong = dict(index, keys=index["keys"][::-1])
    with pytest.raises(ValueError, match="member index does not match"):
        list(members.read_indexed_samples(tar, wrong, [0]))


def _rank_batches(images, rank, world, workers, modality="image"):
    loader = make_loader(images, "train", batch_size=4, num_workers=workers, rank=rank, world_size=world,
                         shuffle_buffer=8, multiprocessing_context="fork", modality=modality)
    return loader, [(u, b["worker"]) for b in loader for u in b["ecg_uid"]]


@pytest.mark.parametrize("modality", ["image", "wave"])
def test_four_ranks_two_workers_over_three_shards(images, modality):
    assert len(_shards(images, "train")) == 3
    train = sorted(pd.read_parquet(images / "manifest.parquet").query("split == 'train'")["key"])
    plan = epoch_plan(images, "train", world_size=4, num_workers=2)
    assert plan.sum() == len(train) and (plan > 0).all()
    seen, steps = [], set()
    for rank in range(4):
        loader, got = _rank_batches(images, rank, 4, 2, modality)
        steps.add(len(loader))
        seen += [u for u, _ in got]
        counts = np.bincount([w for _, w in got], minlength=2)
        # every (rank, worker) slot delivers, and no more than the plan says it holds
        assert (counts > 0).all() and (counts <= plan[rank]).all()
    assert len(steps) == 1 and steps.pop() >= 1  # equal steps on every rank (one batch of 4 at least)
    assert len(seen) == len(set(seen)) and set(seen) <= set(train)
    # without training's equal-steps cut, the epoch is every sample exactly once
    whole = []
    for rank in range(4):
        for worker in range(2):
            ds = make_image_dataset(images, "train", batch_size=4, rank=rank, world_size=4, shuffle_buffer=8)
            whole += [u for b in _as_worker(ds, worker, 2) for u in b["ecg_uid"]]
    assert sorted(whole) == train


def _as_worker(ds, worker, num_workers):
    """Iterate a dataset as DataLoader worker `worker` of `num_workers` would, in this process."""
    from types import SimpleNamespace
    from unittest import mock

    info = SimpleNamespace(id=worker, num_workers=num_workers)
    with mock.patch("torch.utils.data.get_worker_info", return_value=info):
        return [dict(b) for b in ds]


def test_old_shards_without_index_are_read_whole_or_refused_clearly(images, tmp_path):
    old = _without_index(images, tmp_path / "old")
    keys = [u for b in make_loader(old, "test", batch_size=4, train=False) for u in b["ecg_uid"]]
    assert sorted(keys) == sorted(pd.read_parquet(old / "manifest.parquet").query("split == 'test'")["key"])
    with pytest.raises(ValueError, match="no current member index.*heartbeit render"):
        _rank_batches(old, 0, 4, 2)
    # rendering again adds the index to the complete shards without rendering them again
    cfg = RenderConfig(image_size=32, shard_size=17, external_sites=["hosp_ext"], wave_hz=50)
    before = {p: p.stat().st_mtime_ns for p in old.rglob("*.tar")}
    summary = render_corpus(images.parent / "corpus", old, cfg, workers=1, progress=False)
    assert summary["rendered_now"] == 0
    assert {p: p.stat().st_mtime_ns for p in old.rglob("*.tar")} == before
    assert all(members.load_member_index(p) is not None for p in old.rglob("*.tar"))


def _count_reads(monkeypatch):
    read = {"bytes": 0}
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def seek(self, pos):
            return self.fh.seek(pos)

        def read(self, n=-1):
            data = self.fh.read(n)
            read["bytes"] += len(data)
            return data

    monkeypatch.setattr(members, "open", lambda p, mode="r": Counting(real_open(p, mode)), raising=False)
    return read


def test_one_percent_subset_reads_its_bytes_only_with_identical_batches(images, tmp_path, monkeypatch):
    man = pd.read_parquet(images / "manifest.parquet")
    train = man[man["split"] == "train"]
    subset = frozenset(train["ecg_uid"].sort_values().iloc[[7]].astype(str))  # 1 of 51 ECGs (~2 %)
    split_bytes = sum((images / n).stat().st_size for n in _shards(images, "train"))
    old = _without_index(images, tmp_path / "whole")

    def batches(root, epoch):
        ds = make_image_dataset(root, "train", epoch=epoch, seed=3, batch_size=2, shuffle_buffer=8, subset=subset)
        return [(b["ecg_uid"], b["image"].numpy().tobytes(), b["labels"].numpy().tobytes())
                for b in ImageLoader(ds, num_workers=0)]

    read = _count_reads(monkeypatch)
    got = [batches(images, e) for e in (0, 1)]
    indexed_bytes = read["bytes"]
    read["bytes"] = 0
    today = [batches(old, e) for e in (0, 1)]  # no index: whole shards streamed and filtered (as before)
    assert got == today and got[0] and got[0][0][0] == sorted(subset)
    assert indexed_bytes <= 0.05 * 2 * split_bytes < read["bytes"]
    # a larger subset (every third ECG) and a fraction + task filter: the same batches as whole reads
    third = frozenset(train["ecg_uid"].astype(str).iloc[::3])
    for kw in ({"subset": third}, {"fraction": 0.5, "task": "hcm"}):
        a = [u for b in make_image_dataset(images, "train", batch_size=3, shuffle_buffer=8, **kw) for u in b["ecg_uid"]]
        b = [u for b in make_image_dataset(old, "train", batch_size=3, shuffle_buffer=8, **kw) for u in b["ecg_uid"]]
        assert a == b and a
