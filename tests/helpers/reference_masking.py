# A frozen copy of heartbeit/models/masking.py as it was before masks moved to the loader (drawn on the trainer's main
# thread, seeded by the image's position in the run): the reference whose mask statistics the masks drawn
# in the loader workers must keep (tests/integration/test_host_sync.py). Do not edit; it is not used by the package.
"""BEiT blockwise masking (Bao et al. 2022, microsoft/unilm `beit/masking_generator.py`), seeded per sample.

Blocks are placed one after another: a block's area is uniform in [min_block, remaining], its aspect ratio
log-uniform in [min_aspect, 1/min_aspect], its position uniform inside the grid; a block is accepted when it
adds at least one new patch without exceeding the count, with up to 10 attempts per block.

Two deliberate differences from the reference:
* Randomness comes from ``np.random.default_rng((seed, sample_index))``: the mask of a sample is a pure
  function of the seed and its index, whatever the worker, rank or resume point (the reference draws from
  unseeded Python ``random`` in loader workers).
* The count is exact. The reference stops when no block fits, which undershoots (e.g. when fewer than
  ``min_block`` patches remain). We then keep placing blocks with the minimum area relaxed to 1 and, if the
  count is still short, add single patches that touch the mask (any unmasked patch when none touches), so
  every sample has exactly ``num_masked`` masked positions and batches need no padding.
"""
from __future__ import annotations

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
        """Boolean [height, width] mask with exactly `num_masked` True entries."""
        rng = np.random.default_rng((self.seed, sample_index))
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
