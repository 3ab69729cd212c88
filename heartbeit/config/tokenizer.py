"""Visual tokenizer settings (`heartbeit tokenizer`)."""
from __future__ import annotations

from dataclasses import dataclass

from .core import ConfigError


@dataclass
class TokenizerConfig:
    kind: str = "kmeans"  # kmeans | vqvae
    vocab_size: int = 8192
    input_size: int = 112  # the tokenizer's view; grid = input_size / patch
    patch_size: int = 8  # pixels per token on the tokenizer's view
    steps: int = 2000  # vqvae training steps (batches)
    kmeans_steps: int = 300  # kmeans: MiniBatchKMeans.partial_fit calls, one per batch of images
    eval_images: int = 256  # held-out images (val split) for reconstruction error and codebook usage
    vq_hidden: int = 64  # vqvae: conv channels
    vq_code_dim: int = 32  # vqvae: codebook vector size
    # vqvae: a code restarts when its EMA usage falls below this fraction of an equal share of a batch's
    # tokens (heartbeit.models.tokenizer.EMAQuantizer: each code restarts at most once per
    # ln(1 / vq_restart_below) / (1 - decay) steps); 0 = never restart
    vq_restart_below: float = 0.2
    eval_points: int = 10  # how many times the held-out metrics are measured during training
    batch_size: int = 64
    lr: float = 1e-3
    max_images: int = 20000  # images sampled from the train split to fit on
    local_file: str = ""  # a pre-trained tokenizer (safetensors) to load instead of training
    seed: int = 0

    def validate(self) -> None:
        if self.kind not in ("kmeans", "vqvae"):
            raise ConfigError(f"kind must be 'kmeans' or 'vqvae', got {self.kind!r}")
        if self.input_size % self.patch_size:
            raise ConfigError("input_size must be a multiple of patch_size")
        if not 0 <= self.vq_restart_below < 1:
            raise ConfigError(f"vq_restart_below must be in [0, 1), got {self.vq_restart_below}")
        if self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if min(self.steps, self.kmeans_steps, self.batch_size, self.eval_images, self.eval_points) < 1:
            raise ConfigError("steps, kmeans_steps, batch_size, eval_images and eval_points must be >= 1")
