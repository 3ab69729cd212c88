"""The small data protocol the tokenizer trainer and the pretraining loop read: an endless iterable of
`ImageBatch`es with a resumable position.

    source = InMemoryBatches(images, batch_size=16, seed=0)       # tests, tiny synthetic data
    source = ShardBatches("runs/ci/images", batch_size=16, seed=0)  # WebDataset image shards
    for batch in source: ...                                      # batch.images uint8 [B, 1, H, W]
    state = source.state_dict(); source.load_state_dict(state)      # position after the last batch

Epoch e visits the data in an order that is a pure function of (seed, e); the position is restored from
`state_dict()`, so a resumed run reads exactly the batches an uninterrupted one would have read.
InMemoryBatches: position (epoch, batches consumed); rank r of w takes every w-th sample of the epoch's
order. ShardBatches: heartbeit.data.loading.loader's own exact-resume state; the loader deals shards to ranks.

With `masks` set (a models.masking.MaskSampler; pretraining sets it), every batch carries its MIM masks as
`mask_index` int64 [B, n_masked], drawn for (epoch, sample key): ShardBatches draws them in the loader's
worker processes as each batch is assembled (key: the ECG's uid), InMemoryBatches as it slices a batch
(key: the image's index in the array).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch

from heartbeit.records import IMAGES_INDEX

log = logging.getLogger("heartbeit.train")


@dataclass
class ImageBatch:
    images: torch.Tensor  # uint8 [B, 1, H, W]
    tokens: torch.Tensor | None = None  # precomputed token grids, integer [B, g, g]
    mask_index: torch.Tensor | None = None  # MIM masks: masked patch positions, int64 [B, n_masked]


class BatchSource(Protocol):
    def __iter__(self) -> Iterator[ImageBatch]: ...
    def state_dict(self) -> dict[str, int]: ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...


class InMemoryBatches:
    """Batches drawn from arrays held in memory (uint8 [N, 1, H, W], optional tokens [N, g, g])."""

    def __init__(self, images: np.ndarray | torch.Tensor, batch_size: int, seed: int = 0,
                 tokens: np.ndarray | torch.Tensor | None = None, rank: int = 0, world_size: int = 1):
        self.images = torch.as_tensor(np.array(images) if isinstance(images, np.ndarray) else images)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be uint8 [N, 1, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        self.tokens = None if tokens is None else torch.as_tensor(tokens).long()
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.batches_per_epoch = len(self.images) // world_size // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{len(self.images)} images are fewer than one batch of {batch_size} x {world_size} ranks")
        self.epoch = 0
        self.batch = 0
        self.masks = None  # a MaskSampler: batches carry mask_index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __iter__(self) -> Iterator[ImageBatch]:
        while True:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))
            mine = order[self.rank::self.world_size]
            while self.batch < self.batches_per_epoch:
                rows = mine[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
                idx = torch.from_numpy(rows)
                self.batch += 1
                masks = None if self.masks is None else torch.from_numpy(
                    self.masks([str(i) for i in rows], self.epoch)["mask_index"])
                yield ImageBatch(self.images[idx], None if self.tokens is None else self.tokens[idx], masks)
            self.epoch, self.batch = self.epoch + 1, 0


class ShardBatches:
    """Training batches from the image shards (`IMAGES/<split>/<split>-*.tar`) through heartbeit.data.loading.loader,
    epoch after epoch. The position is the loader's own exact-resume state (per-worker consumed samples),
    which already includes the epoch; ranks get disjoint shards (the loader deals shards to ranks)."""

    def __init__(self, images_dir: str | Path, batch_size: int, seed: int = 0, split: str = "train",
                 with_tokens: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 decode_threads: int = 1, pin_memory: bool = False, masks=None):
        from heartbeit.data.loading.loader import make_loader

        self.images_dir = Path(images_dir)
        if not (self.images_dir / IMAGES_INDEX).is_file():
            raise FileNotFoundError(f"{self.images_dir}: no index.json; not a complete image shard directory "
                                    "(run `heartbeit render`)")
        self.loader = make_loader(self.images_dir, split, batch_size=batch_size, num_workers=num_workers,
                                  train=True, seed=seed, with_tokens=with_tokens, rank=rank, world_size=world_size,
                                  with_meta=False, decode_threads=decode_threads, pin_memory=pin_memory,
                                  batch_extras=masks,  # drawn in the workers, with the batch
                                  persistent=True)  # the same workers, epoch after epoch
        self.masks = masks
        if len(self.loader) == 0:
            raise RuntimeError(f"{self.images_dir / split}: fewer than one batch of {batch_size} images per rank")

    @property
    def masks(self):
        return self.loader.dataset.batch_extras

    @masks.setter
    def masks(self, sampler) -> None:
        # the loader's workers persist from the first batch on and hold the stream as it was then
        if self.loader.started:
            raise RuntimeError("set the mask sampler before the first batch is read")
        self.loader.dataset.batch_extras = sampler

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def __iter__(self) -> Iterator[ImageBatch]:
        while True:
            for batch in self.loader:
                yield ImageBatch(batch["image"], batch.get("tokens"), batch.get("mask_index"))
            self.loader.set_epoch(self.loader.state_dict()["epoch"] + 1)


def shard_eval_images(images_dir: str | Path, n: int, split: str = "val", size: int | None = None) -> torch.Tensor:
    """The first `n` images of a split in shard order (uint8 [n, 1, H, W]): a fixed held-out set."""
    from heartbeit.data.loading.loader import make_loader

    loader = make_loader(images_dir, split, batch_size=min(n, 256), train=False, rank=0, world_size=1,
                         with_meta=False)
    out: list[torch.Tensor] = []
    got = 0
    for batch in loader:
        out.append(batch["image"])
        got += len(batch["image"])
        if got >= n:
            break
    if not out:
        raise RuntimeError(f"{images_dir}: split '{split}' has no images")
    return torch.cat(out)[:n]
