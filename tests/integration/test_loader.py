import json
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from heartbeit.config import RenderConfig
from heartbeit.data.loading.dealing import epoch_plan, steps_per_epoch
from heartbeit.data.loading.loader import make_image_dataset, make_loader
from heartbeit.data.render.stage import render_corpus
from helpers.render_fixtures import make_corpus


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    make_corpus(root / "corpus", n_patients=40, seed=3)
    cfg = RenderConfig(image_size=32, shard_size=5, external_sites=["hosp_ext"])
    render_corpus(root / "corpus", root / "images", cfg, workers=1, progress=False)
    return root / "images"


def split_keys(images, split, fraction=None, task=None):
    man = pd.read_parquet(images / "manifest.parquet")
    man = man[man["split"] == split]
    if fraction is not None:
        man = man[man[f"frac_{task}_{fraction:g}"]]  # fractions are per task
    if task is not None:
        man = man[man[task].notna()]
    return sorted(man["key"])


def uids(loader):
    return [u for batch in loader for u in batch["ecg_uid"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_epoch_covers_split_once(images, workers):
    loader = make_loader(images, "test", batch_size=4, num_workers=workers)
    got = uids(loader)
    assert sorted(got) == split_keys(images, "test")
    batch = next(iter(make_loader(images, "test", batch_size=4)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (1, 32, 32)
    assert batch["labels"].shape == (batch["count"], 3)


def test_shuffling_is_deterministic_per_epoch(images):
    def order(epoch, seed=0):
        return uids(make_loader(images, "train", batch_size=3, epoch=epoch, seed=seed, shuffle_buffer=16))

    assert order(0) == order(0)
    assert order(0) != order(1) and order(0) != order(0, seed=1)
    # training drops the last partial batch; without dropping, each epoch is a permutation of the split
    whole = [uids(make_image_dataset(images, "train", epoch=e, batch_size=3, shuffle_buffer=16)) for e in (0, 1)]
    assert whole[0] != whole[1] and sorted(whole[0]) == sorted(whole[1]) == split_keys(images, "train")


def test_fraction_and_task_filters(images):
    keys = uids(make_loader(images, "train", batch_size=2, train=False, fraction=0.5, task="hcm"))
    assert sorted(keys) == split_keys(images, "train", 0.5, "hcm") and keys
    batch = next(iter(make_loader(images, "train", batch_size=2, task="hcm")))
    assert batch["label"].dtype == torch.int64 and set(batch["label"].tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="fractions subset the train split"):
        make_image_dataset(images, "test", fraction=0.1, task="hcm")
    with pytest.raises(ValueError, match="fractions are per task"):
        make_image_dataset(images, "train", fraction=0.1)
    with pytest.raises(ValueError, match="unknown task"):
        make_image_dataset(images, "train", task="afib")
    with pytest.raises(ValueError, match="split 'nope'"):
        make_image_dataset(images, "nope")


def test_training_ranks_take_equal_steps(images):
    plan = epoch_plan(images, "train", world_size=2, num_workers=2, epoch=0)
    assert plan.sum() == len(split_keys(images, "train"))
    steps = steps_per_epoch(images, "train", 2, 2, batch_size=2, epoch=0)
    for rank in range(2):
        loader = make_loader(images, "train", batch_size=2, num_workers=0, rank=rank, world_size=2)
        assert len(list(loader)) == len(loader) == steps_per_epoch(images, "train", 2, 1, batch_size=2)
    assert steps >= 1


@pytest.mark.parametrize("workers,stop", [(0, 3), (2, 3), (2, 8)])
def test_resume_continues_exactly(images, workers, stop):
    def loader():
        return make_loader(images, "train", batch_size=2, num_workers=workers, epoch=1, shuffle_buffer=8)

    full = [b["ecg_uid"] for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it)["ecg_uid"] for _ in range(stop)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint round trip
    del it
    second = loader()
    second.load_state_dict(state)
    assert head + [b["ecg_uid"] for b in second] == full


def test_tokens_member(images, tmp_path):
    import shutil
    import tarfile

    from heartbeit.data.corpus import write_shard

    copy = tmp_path / "tok"
    shutil.copytree(images, copy)
    index = json.loads((copy / "index.json").read_text())
    for shard in index["splits"]["val"]["shards"]:
        path = copy / shard["name"]
        with tarfile.open(path) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        import io

        extra = []
        for name, _ in members:
            if name.endswith(".json"):
                buf = io.BytesIO()
                np.save(buf, np.full((4, 4), 7, np.int16))
                extra.append((name.replace(".json", ".tokens.npy"), buf.getvalue()))
        write_shard(path, members + extra)
    batch = next(iter(make_loader(copy, "val", batch_size=2, with_tokens=True)))
    assert batch["tokens"].shape == (batch["count"], 4, 4) and (batch["tokens"] == 7).all()
    with pytest.raises(ValueError, match="tokens.npy"):
        next(iter(make_loader(images, "val", batch_size=2, with_tokens=True)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS = (("train", False), ("test", False), ("train", True))


def _rank_main(rank, world, port, images, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for split, train in SCENARIOS:
            loader = make_loader(images, split, batch_size=3, num_workers=2, train=train, shuffle_buffer=8,
                                 multiprocessing_context="fork")
            assert loader.dataset.rank == rank and loader.dataset.world_size == world
            got = [(u, b["worker"]) for b in loader for u in b["ecg_uid"]]
            Path(out_dir, f"{split}-{train}-rank{rank}.json").write_text(
                json.dumps({"samples": got, "batches": len(loader)}))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_two_workers_cover_epoch_exactly_once(images, tmp_path):
    """torch.distributed (gloo, CPU), world size 2, 2 DataLoader workers per rank."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(images), str(tmp_path)), nprocs=2, join=True)
    for split, train in SCENARIOS:
        results = [json.loads((tmp_path / f"{split}-{train}-rank{r}.json").read_text()) for r in range(2)]
        got = [u for res in results for u, _ in res["samples"]]
        workers = {(r, w) for r, res in enumerate(results) for _, w in res["samples"]}
        if train:  # equal step counts on both ranks; no sample twice
            assert len({res["batches"] for res in results}) == 1
            assert len(got) == len(set(got)) and set(got) <= set(split_keys(images, split))
        else:
            assert sorted(got) == split_keys(images, split)  # every sample exactly once
            # every (rank, worker) contributes: whole shards when there are >= 4, else samples dealt one by one
            assert len(workers) == 4


def test_tar_reader_matches_webdataset_and_decoder(images):
    """The direct ustar reader groups members exactly as wds.tarfile_to_samples; pixels equal decode_image."""
    import webdataset as wds

    from heartbeit.data.members import read_tar_samples
    from heartbeit.data.shard_format import decode_image

    shard = images / json.loads((images / "index.json").read_text())["splits"]["train"]["shards"][0]["name"]
    ours = list(read_tar_samples(shard))
    theirs = list(wds.DataPipeline(wds.SimpleShardList([str(shard)]), wds.tarfile_to_samples()))
    strip = lambda s: {k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}  # noqa: E731
    assert [strip(s) for s in ours] == [strip(s) for s in theirs] and ours
    batch = next(iter(make_loader(images, "train", batch_size=4, train=False, with_meta=False)))
    assert "meta" not in batch and len(batch["ecg_uid"]) == 4 and batch["labels"].dtype == torch.float32
    # in order, rank 0 / worker 0 starts with the first sample of the first shard
    assert batch["ecg_uid"][0] == json.loads(ours[0]["json"])["ecg_uid"]
    assert np.array_equal(batch["image"][0, 0].numpy(), decode_image(ours[0]["png"], "png"))


def test_tar_reader_names_the_file_on_damage(images, tmp_path):
    from heartbeit.data.members import read_tar_samples

    shard = images / json.loads((images / "index.json").read_text())["splits"]["train"]["shards"][0]["name"]
    data = bytearray(shard.read_bytes())
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data[:512 + 100]))  # first header, member data cut short
    with pytest.raises(ValueError, match="bad.tar: member .* is truncated"):
        list(read_tar_samples(bad))
    data[0] ^= 0xFF  # a flipped byte in the first header's name
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad.tar: bad tar header checksum"):
        list(read_tar_samples(bad))


def test_iterating_leaves_the_global_rng_alone(images):
    """A resumed trainer restores the global torch RNG and then starts a new loader iterator; if the iterator
    drew its seed from the global RNG, drop path would see a shifted stream and resume would not be exact."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for _ in make_loader(images, "train", batch_size=4, num_workers=0):
        pass
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("workers", [0, 1])
def test_threaded_decoding_gives_identical_batches(images, workers):
    def batches(threads):
        loader = make_loader(images, "train", batch_size=5, num_workers=workers, train=True, seed=3,
                             decode_threads=threads, multiprocessing_context="fork" if workers else None)
        return [(b["image"].clone(), b["ecg_uid"]) for b in loader]

    one, three = batches(1), batches(3)
    assert len(one) == len(three) > 1
    for (a, ua), (b, ub) in zip(one, three):
        assert ua == ub and torch.equal(a, b)
    with pytest.raises(ValueError, match="decode_threads"):
        make_loader(images, "train", decode_threads=0)


def test_threaded_decoding_names_the_bad_member(tmp_path, images):
    import shutil

    bad = tmp_path / "images"
    shutil.copytree(images, bad)
    tar_path = sorted((bad / "val").glob("val-*.tar"))[0]
    members = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            members[m.name] = tar.extractfile(m).read()
    png = sorted(n for n in members if n.endswith(".png"))[1]
    members[png] = members[png][:40]  # truncated PNG
    from heartbeit.data.corpus import write_shard

    write_shard(tar_path, members.items())
    with pytest.raises(ValueError, match=f"{png.split('.')[0]}: unreadable PNG"):
        for _ in make_loader(bad, "val", batch_size=4, train=False, decode_threads=2):
            pass


def test_threaded_decoding_decodes_the_next_batch_before_handing_out_this_one(images, monkeypatch):
    """decode_threads > 1: the next batch goes to the decode pool before the current batch is handed out, so
    it decodes while the consumer works on this one; closing the iterator early leaves no thread writing."""
    from heartbeit.data.loading import batch_arrays as L

    jobs = []
    start = L.BatchDecode.start

    def recording_start(self, pool, threads):
        jobs.append(self)
        start(self, pool, threads)

    monkeypatch.setattr(L.BatchDecode, "start", recording_start)
    it = iter(make_loader(images, "train", batch_size=2, train=False, decode_threads=2))
    first = next(it)
    assert len(jobs) == 2 and first["count"] == 2  # batch 2 was in the pool when batch 1 came out
    next(it)
    assert len(jobs) == 3
    it.close()
    assert all(f.done() for job in jobs for f in job.futures)
    jobs.clear()
    for _ in make_loader(images, "train", batch_size=2, train=False, decode_threads=1):
        pass
    assert jobs == []  # one decode thread: each batch decodes in the reading thread, nothing is handed off


def test_pretraining_batches_ask_for_pinned_memory(images):
    """Pretraining on a GPU copies batches with non_blocking=True, which only overlaps from page-locked memory:
    ShardBatches hands pin_memory to the loader (which pins only where CUDA exists)."""
    from heartbeit.train.batches import ShardBatches

    pinned = ShardBatches(images, batch_size=2, pin_memory=True)
    assert pinned.loader.pin_memory is True and ShardBatches(images, batch_size=2).loader.pin_memory is False
    batch = next(iter(pinned))
    assert batch.images.shape[0] == 2 and batch.images.is_pinned() == torch.cuda.is_available()


def test_pinned_memory_request_is_quiet_without_cuda(images):
    """pin_memory=True on a machine without CUDA (a CPU profile with loader workers) pins nothing and warns
    nothing: the DataLoader is only asked to pin where there is a GPU."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = make_loader(images, "val", batch_size=4, num_workers=1, train=False, pin_memory=True,
                             multiprocessing_context="fork")
        assert sum(b["count"] for b in loader) > 0


class _WorkerPid:
    """batch_extras that stamps each batch with the process that assembled it (picklable)."""

    def __call__(self, uids, epoch):
        import os

        return {"pid": np.array([os.getpid()]), "epoch_seen": np.array([epoch])}


def test_persistent_workers_start_once_and_give_the_fresh_loaders_batches(images):
    """One loader, iterated epoch after epoch, abandoned mid-epoch and resumed in place: its worker processes
    start once, and every iteration yields exactly what a fresh loader at that epoch/position yields."""
    def fresh(epoch):
        from heartbeit.data.loading.epoch_loader import ImageLoader

        ds = make_image_dataset(images, "train", epoch=epoch, batch_size=2, drop_last=True, shuffle_buffer=8,
                                batch_extras=_WorkerPid())
        return ImageLoader(ds, num_workers=2, equalize=True, persistent=False)  # workers per iteration

    loader = make_loader(images, "train", batch_size=2, num_workers=2, shuffle_buffer=8, batch_extras=_WorkerPid(),
                         persistent=True)
    assert loader.persistent
    pids, fresh_pids = set(), set()
    for epoch in (0, 1, 2):
        loader.set_epoch(epoch)
        got = [(b["ecg_uid"], int(b["epoch_seen"][0])) for b in loader if not pids.add(int(b["pid"][0]))]
        want_loader = fresh(epoch)
        want = [(b["ecg_uid"], int(b["epoch_seen"][0])) for b in want_loader
                if not fresh_pids.add(int(b["pid"][0]))]
        assert got == want and {e for _, e in got} == {epoch}
    assert len(pids) == 2 and len(fresh_pids) == 6  # two workers for three epochs, against two per epoch
    # stop after 3 batches of epoch 1, then restart the epoch and resume from a saved position, in place
    loader.set_epoch(1)
    it = iter(loader)
    head = [next(it)["ecg_uid"] for _ in range(3)]
    state = loader.state_dict()
    it.close()
    loader.set_epoch(2)
    assert [b["ecg_uid"] for b in loader][:2] == [b["ecg_uid"] for b in fresh(2)][:2]
    loader.load_state_dict(state)
    assert head + [b["ecg_uid"] for b in loader] == [b["ecg_uid"] for b in fresh(1)]
    loader.close()
    assert not loader.started


def test_the_epoch_plan_filters_the_manifest_once(images, monkeypatch):
    """The filter is resolved against the manifest once per loader; an epoch only permutes shards."""
    from heartbeit.data.loading import dealing

    calls = []
    real = dealing.filtered_manifest
    monkeypatch.setattr(dealing, "filtered_manifest", lambda *a, **k: calls.append(1) or real(*a, **k))
    loader = make_loader(images, "train", batch_size=2, task="hcm", shuffle_buffer=8)
    lengths = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        lengths.append(len(loader))
        assert len(list(loader)) == lengths[-1]
        assert (loader._plan() == epoch_plan(images, "train", 1, 0, epoch=epoch, task="hcm")).all()
    assert len(calls) == 1 + 4  # the loader's one, and the four reference plans above


def test_a_second_reader_of_one_loader_is_refused(images):
    loader = make_loader(images, "train", batch_size=2, shuffle_buffer=8)
    first = iter(loader)
    next(first)
    loader.set_epoch(0)
    assert len(list(loader)) == len(loader)  # the second iteration reads the epoch; the first is now stale
    with pytest.raises(RuntimeError, match="iterated again"):
        next(first)


def test_pretraining_batches_keep_their_workers_across_epochs_and_resume_exactly(images):
    """ShardBatches (pretraining) iterates one persistent loader epoch after epoch: the batches are a fresh
    loader's per epoch, and a new source loading a mid-epoch state continues exactly."""
    from heartbeit.train.batches import ShardBatches

    def fresh(epoch):
        return [b["image"].numpy().tobytes()
                for b in make_loader(images, "train", batch_size=2, num_workers=2, epoch=epoch)]

    source = ShardBatches(images, batch_size=2, num_workers=2)
    per_epoch = len(source.loader)
    stream = iter(source)
    got = [next(stream).images.numpy().tobytes() for _ in range(3 * per_epoch)]
    assert got == fresh(0) + fresh(1) + fresh(2)
    assert source.loader.started and source.loader.persistent
    with pytest.raises(RuntimeError, match="before the first batch"):
        source.masks = None  # the workers hold the stream as it was when they started

    source = ShardBatches(images, batch_size=2, num_workers=2)
    stream = iter(source)
    head = [next(stream).images.numpy().tobytes() for _ in range(per_epoch + 2)]  # into epoch 1
    state = json.loads(json.dumps(source.state_dict()))
    resumed = ShardBatches(images, batch_size=2, num_workers=2)
    resumed.load_state_dict(state)
    tail = iter(resumed)
    rest = [next(tail).images.numpy().tobytes() for _ in range(2 * per_epoch - 2)]
    assert head + rest == fresh(0) + fresh(1) + fresh(2)  # the rest of epoch 1, then all of epoch 2
