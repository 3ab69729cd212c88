"""BEiT blockwise masking (Bao et al. 2022, microsoft/unilm `beit/masking_generator.py`), seeded per sample.

Blocks are placed one after another: a block's area is uniform in [min_block, remaining], its aspect ratio
log-uniform in [min_aspect, 1/min_aspect], its position uniform inside the grid; a block is accepted when it
adds at least one new patch without exceeding the count, with up to 10 attempts per block.

Two deliberate differences from the reference:
* Randomness is seeded per sample: `MaskSampler` (what pretraining uses) draws each mask from
  ``np.random.default_rng([seed, epoch, hash(sample key)])``, in the loader's worker processes as the batch is
  assembled, so a mask is a pure function of the run's seed, the epoch and the sample, whatever the worker
  count, rank or resume point (the reference draws from unseeded Python ``random`` in loader workers).
  ``BlockMaskGenerator(...)(i)`` seeds by ``(seed, i)`` instead.
* The count is exact. The reference stops when no block fits, which undershoots (e.g. when fewer than
  ``min_block`` patches remain). We then keep placing blocks with the minimum area relaxed to 1 and, if the
  count is still short, add single patches that touch the mask (any unmasked patch when none touches), so
  every sample has exactly ``num_masked`` masked positions and batches need no padding.

`MaskSampler` hands masks to the training step as index arrays ``int64 [B, num_masked]`` (the masked
positions in ascending row-major order): a fixed shape, so the step gathers targets and masked tokens with
``torch.gather`` and never indexes with a boolean mask (which would make the host wait for the GPU).
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable

import numpy as np
import torch

MAX_ATTEMPTS = 10


class BlockMaskGenerator:
    def __init__(self, grid: int | tuple[int, int], num_masked: int, min_block: int = 16,
                 max_block: int | None = None, min_aspect: float = 0.3, seed: int = 0):
        self.height, self.width = (grid, grid) if isinstance(grid, int) else tuple(grid)
        n = self.height * self.width
        if not 0 < num_masked < n:
            raise ValueError(f"num_masked must be in (0, {n}) for a {self.height}x{self.width} grid, got {num_masked}")
        if min_block < 1:
            raise ValueError(f"min_block must be >= 1, got {min_block}")
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.num_masked = num_masked
        self.min_block = min_block
        self.max_block = num_masked if max_block is None else max_block
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.seed = seed

    @property
    def num_patches(self) -> int:
        return self.height * self.width

    def _place_block(self, mask: np.ndarray, budget: int, min_area: int, rng: np.random.Generator) -> int:
        """Try to add one block of at most `budget` new patches; return how many patches it added."""
        for _ in range(MAX_ATTEMPTS):
            area = rng.uniform(min_area, max(min_area, budget))
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < self.height and 0 < w < self.width):
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            window = mask[top:top + h, left:left + w]
            added = h * w - int(window.sum())
            if 0 < added <= budget:
                window[:] = True
                return added
        return 0

    def __call__(self, sample_index: int) -> np.ndarray:
        """Boolean [height, width] mask with exactly `num_masked` True entries, seeded by (seed, sample_index)."""
        return self.draw(np.random.default_rng((self.seed, sample_index)))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Boolean [height, width] mask with exactly `num_masked` True entries, from `rng`."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        for min_area in (self.min_block, 1):  # BEiT's blocks, then smaller blocks to close the gap
            while count < self.num_masked:
                added = self._place_block(mask, min(self.num_masked - count, self.max_block), min_area, rng)
                if added == 0:
                    break
                count += added
        while count < self.num_masked:  # rare: single patches, next to the mask where possible
            free = ~mask
            grown = np.zeros_like(mask)
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            candidates = np.flatnonzero(free & grown) if (free & grown).any() else np.flatnonzero(free)
            mask.flat[int(rng.choice(candidates))] = True
            count += 1
        return mask

    def batch(self, sample_indices: Iterable[int]) -> torch.Tensor:
        """Bool tensor [B, height*width] (row-major, the patch order of timm's PatchEmbed)."""
        masks = np.stack([self(int(i)).reshape(-1) for i in sample_indices])
        return torch.from_numpy(masks)


def key_entropy(key: str) -> int:
    """A stable 128-bit integer for a sample key (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=16).digest(), "little")


class MaskSampler:
    """BEiT block masks as index arrays, one per sample, seeded by (seed, epoch, sample key).

    Called by the loader in its worker processes as a batch is assembled (``batch_extras``): ``sampler(keys,
    epoch)`` -> ``{"mask_index": int64 [len(keys), num_masked]}``. A sample gets a new mask every epoch and
    the same one in any rerun, worker count or resume of that epoch. Picklable (it travels to the workers)."""

    def __init__(self, grid: int | tuple[int, int], num_masked: int, min_block: int = 16, seed: int = 0):
        self.generator = BlockMaskGenerator(grid, num_masked, min_block=min_block, seed=seed)
        self.seed = int(seed)

    @property
    def num_masked(self) -> int:
        return self.generator.num_masked

    def indices(self, key: str, epoch: int) -> np.ndarray:
        """The masked positions of one sample (int64 [num_masked], ascending, row-major patch order)."""
        rng = np.random.default_rng([self.seed, int(epoch), key_entropy(key)])
        return np.flatnonzero(self.generator.draw(rng)).astype(np.int64)

    def __call__(self, keys: Iterable[str], epoch: int) -> dict[str, np.ndarray]:
        rows = [self.indices(k, epoch) for k in keys]
        return {"mask_index": np.stack(rows) if rows else np.zeros((0, self.num_masked), np.int64)}
