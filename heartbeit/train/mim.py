"""One micro-batch of masked image modeling, the one copy that pretraining (train/pretrain.py), the distributed
self-test (train/dist_selftest.py) and the step benchmark (bench/train_step.py) run.

    step = MimStep(engine, precision="bf16", image_size=224)   # engine: heartbeit.distributed.engine.Engine
    stepped = step(images_uint8, tokens, mask_index)          # forward, loss, backward, engine.step()
    loss, accuracy, n = step.read()                            # at log_every only: this reads the device

Nothing in a call waits for the device (tests/integration/test_host_sync.py counts): inputs move with
`non_blocking=True` (pinned batches from the loader), the masks are index tensors `[B, n_masked]` drawn in the
loader's workers (models.masking.MaskSampler), targets and masked tokens are gathered (fixed shapes, no
boolean indexing), and the loss and accuracy are summed on the device (float64 / int64) until `read()`.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

MEAN = STD = 0.5  # HeartBEiT's image normalisation (Vaid et al.), also in the timm pretrained_cfg


def preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [B, 1, H, W] -> float [B, 1, image_size, image_size], scaled to [0, 1] and normalised."""
    x = images.float().div_(255.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    return (x - MEAN) / STD


class MimStep:
    """`engine` needs `.model`, `.device`, `.backward(loss)` and `.step() -> bool` (the Engine protocol).
    `tokenizer`: encodes the batch on the device when a batch comes without precomputed tokens."""

    def __init__(self, engine, precision: str, image_size: int, tokenizer=None):
        self.engine, self.image_size, self.tokenizer = engine, int(image_size), tokenizer
        self.device = engine.device
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if precision == "bf16"
                         else nullcontext())
        self._zero()

    def _zero(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.count = 0  # from shapes: known on the host without asking the device

    def __call__(self, images: torch.Tensor, tokens: torch.Tensor | None, mask_index: torch.Tensor) -> bool:
        """One micro-batch; returns whether the engine took an optimizer step."""
        device = self.device
        images = images.to(device, non_blocking=True)
        mask_index = mask_index.to(device, non_blocking=True)
        if tokens is None:
            if self.tokenizer is None:
                raise ValueError("a batch without precomputed tokens needs the step's tokenizer")
            tokens = self.tokenizer.encode(images)
        tokens = tokens.to(device, non_blocking=True)
        x = preprocess(images, self.image_size) if images.dtype == torch.uint8 else images
        targets = tokens.flatten(1).long().gather(1, mask_index).reshape(-1)
        with self.autocast:
            logits = self.engine.model(x, mask_index)
        loss = F.cross_entropy(logits.float(), targets)
        self.engine.backward(loss)
        stepped = self.engine.step()
        with torch.no_grad():
            # float64 on the device: the same sum a Python float of loss.item() x n would give
            self.loss_sum += loss.detach().double() * targets.numel()
            self.correct += (logits.detach().argmax(-1) == targets).sum()
        self.count += targets.numel()
        return stepped

    def read(self) -> tuple[float, float, int]:
        """(mean loss, masked-token accuracy, masked tokens) since the last read, then zero the sums. Reads
        the device: call it at log_every, not every step."""
        count = self.count
        loss = float(self.loss_sum) / max(count, 1)
        acc = float(self.correct) / max(count, 1)
        self._zero()
        return loss, acc, count
