"""The sync-free pretraining step: no host sync in our code on a non-logging step, masks as
index tensors drawn in the loader's workers by (seed, epoch, sample key), with BEiT's mask statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.mim_data import ecg_images, write_image_shards
from helpers.reference_masking import BlockMaskGenerator as ReferenceMasks

from heartbeit.config import PretrainConfig
from heartbeit.distributed.local import LocalEngine
from heartbeit.models.heartbeit import create_mim_model
from heartbeit.models.masking import MaskSampler
from heartbeit.train import mim
from heartbeit.train.batches import InMemoryBatches
from heartbeit.train.param_groups import param_groups
from heartbeit.utils.host_sync import PACKAGE_DIR, HostSyncProbe

MICRO = "heartbeit_micro_patch8_64"


def _step(precision: str = "bf16", grad_accum: int = 2):
    torch.manual_seed(0)
    model = create_mim_model(MICRO, 32, img_size=64)
    cfg = PretrainConfig(model=MICRO, image_size=64, batch_size=4, grad_accum=grad_accum, precision=precision)
    engine = LocalEngine(model, param_groups(model, 0.05), cfg, device=torch.device("cpu"))
    return mim.MimStep(engine, precision, 64), engine


def test_mim_step_makes_no_host_sync_and_reads_only_when_asked():
    step, engine = _step()
    batches = InMemoryBatches(ecg_images(16, 64), 4, seed=0, tokens=torch.randint(0, 32, (16, 8, 8)))
    batches.masks = MaskSampler(8, 24, min_block=4, seed=0)
    stream = iter(batches)
    with HostSyncProbe() as probe:
        stepped = [step(b.images, b.tokens, b.mask_index) for b in (next(stream) for _ in range(4))]
        assert probe.total == 0, probe.sites  # forward, loss, backward, clipping, AdamW, the device-side sums
        loss, acc, count = step.read()
        norm = engine.grad_norm()
    assert stepped == [False, True, False, True]
    assert probe.counts["float"] == 3  # read() and grad_norm() are the syncs, at log_every
    assert count == 4 * 4 * 24 and np.isfinite(loss) and 0 <= acc <= 1 and norm > 0
    # the probe sees the syncs the old step made: boolean indexing (in the model) and .item() (here)
    with HostSyncProbe(roots=(PACKAGE_DIR, Path(__file__).parent)) as probe:
        bool_mask = torch.zeros(4, 64, dtype=torch.bool)
        bool_mask[:, :24] = True
        logits = engine.model(torch.zeros(4, 1, 64, 64), bool_mask)
        logits.sum().item()
    assert probe.counts["bool_index"] >= 1 and probe.counts["item"] == 1
    assert any(site.startswith("heartbeit.py:") for site in probe.sites)


def test_index_masks_give_the_boolean_masks_logits():
    torch.manual_seed(0)
    model = create_mim_model(MICRO, 32, img_size=64).eval()
    idx = torch.from_numpy(MaskSampler(8, 24, min_block=4)([str(i) for i in range(3)], 0)["mask_index"])
    as_bool = torch.zeros(3, 64, dtype=torch.bool).scatter_(1, idx, True)
    x = torch.randn(3, 1, 64, 64)
    assert torch.equal(model(x, idx), model(x, as_bool))


def test_pretraining_loop_syncs_only_on_log_steps(tmp_path, monkeypatch):
    """pretrain() itself: between one micro-batch and the next our code waits for the device only after a
    log step (loss/accuracy read, grad norm, stop request); every other step queues and moves on."""
    from heartbeit.models.tokenizer import KMeansTokenizer
    from heartbeit.train.pretrain import pretrain

    probe = HostSyncProbe()
    at_call: list[int] = []
    real_call = mim.MimStep.__call__

    def counting(self, *args):
        at_call.append(probe.total)
        return real_call(self, *args)

    monkeypatch.setattr(mim.MimStep, "__call__", counting)
    cfg = PretrainConfig(model=MICRO, image_size=64, steps=7, batch_size=4, grad_accum=1, warmup_steps=1,
                         mask_patches=24, min_mask_block=4, log_every=3, checkpoint_every=100, precision="bf16")
    tokenizer = KMeansTokenizer(32, 64, 8, centroids=torch.rand(32, 64))
    with probe:
        pretrain(cfg, InMemoryBatches(ecg_images(32, 64), 4, seed=0), tokenizer, tmp_path / "run", progress=False,
                 stop_after=6)
    deltas = np.diff(at_call)  # syncs after step k's micro-batch, before step k + 1's
    log_steps = {1, 3, 6}
    for k, delta in enumerate(deltas, start=1):
        assert (delta > 0) == (k in log_steps), (k, delta, probe.sites)


def _components(mask: np.ndarray) -> tuple[int, int]:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    return n, int(np.bincount(labels.ravel())[1:].max())


def test_masks_keep_beits_statistics():
    """Against the generator as it was (a copy kept in tests/helpers/reference_masking.py): exactly 75 of 196
    patches, and the same block structure (number of blocks, largest block, where masks fall)."""
    n = 300
    ref = np.stack([ReferenceMasks(14, 75, min_block=16, seed=0)(i) for i in range(n)])
    sampler = MaskSampler(14, 75, min_block=16, seed=0)
    new = np.zeros((n, 14, 14), dtype=bool)
    for i in range(n):
        idx = sampler.indices(f"ecg-{i}", epoch=0)
        assert idx.dtype == np.int64 and len(idx) == 75 and len(set(idx)) == 75 and (np.diff(idx) > 0).all()
        new[i].flat[idx] = True
    stats = {name: np.array([_components(m) for m in masks]) for name, masks in (("ref", ref), ("new", new))}
    for col, tolerance in ((0, 0.15), (1, 0.10)):  # components per mask, largest component
        r, m = stats["ref"][:, col].mean(), stats["new"][:, col].mean()
        assert abs(m - r) <= tolerance * r, (col, r, m)
    assert np.abs(ref.mean(0) - new.mean(0)).mean() < 0.05  # where on the grid masks fall


def test_masks_are_drawn_in_the_workers_by_key_and_epoch(tmp_path):
    """Each batch's masks come from the loader (2 worker processes here) and are exactly the sampler's
    masks of those ECGs in that epoch: the same for any worker count, rerun or resume."""
    from heartbeit.data.loading.loader import make_loader

    write_image_shards(tmp_path, ecg_images(48, 64), per_shard=12)
    sampler = MaskSampler(8, 24, min_block=4, seed=3)
    for workers, epoch in ((2, 1), (0, 0)):
        loader = make_loader(tmp_path, "train", batch_size=8, num_workers=workers, epoch=epoch, seed=1,
                             with_meta=False, batch_extras=sampler, multiprocessing_context="fork")
        seen = 0
        for batch in loader:
            expect = np.stack([sampler.indices(uid, epoch) for uid in batch["ecg_uid"]])
            assert torch.equal(batch["mask_index"], torch.from_numpy(expect))
            seen += len(expect)
        assert seen == 48
    a, b = sampler.indices("x", 0), sampler.indices("x", 1)
    assert not np.array_equal(a, b) and np.array_equal(a, MaskSampler(8, 24, 4, seed=3).indices("x", 0))
