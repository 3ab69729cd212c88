"""Discrete visual tokenizers for ECG images, behind one interface.

The DALL-E dVAE BEiT used cannot be downloaded, so the suite trains its own tokenizer on ECG images:

* ``kmeans``: a codebook of ``vocab_size`` centroids over slightly blurred ``patch_size`` x ``patch_size``
  pixel patches (scikit-learn MiniBatchKMeans: 256 codes fit in seconds, and MIM on
  them helps fine-tuning). The blur makes a trace shifted by a pixel land on the same code.
* ``vqvae``: a convolutional VQ-VAE whose encoder downsamples by ``patch_size`` (112 -> 14x14 for patch 8)
  into a codebook kept by exponential moving averages, with dead-code restarts (van den Oord et al. 2017;
  Razavi et al. 2019). The paper/workstation default (vocabulary 8192).

Both map uint8 images [B, 1, H, W] (any H, W: they are resized to ``input_size``) to a LongTensor token
grid [B, g, g] with g = input_size / patch_size, and are saved as one safetensors file whose metadata holds
the configuration (no pickle anywhere).
"""
from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

METADATA_KEY = "heartbeit_tokenizer"


def to_unit_float(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, 1, H, W] -> float32 [B, 1, size, size] in [0, 1] (antialiased resize when needed)."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected uint8 images [B, 1, H, W], got shape {tuple(images.shape)}")
    x = images.to(torch.float32) / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def codebook_usage(tokens: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """Perplexity (exp of the code entropy; = vocab_size when all codes are used equally) and dead codes."""
    counts = torch.bincount(tokens.reshape(-1).long(), minlength=vocab_size).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum().item())
    return {"perplexity": math.exp(entropy), "used_codes": used, "dead_codes": vocab_size - used,
            "usage_fraction": used / vocab_size}


class Tokenizer(ABC):
    kind: ClassVar[str]

    def __init__(self, vocab_size: int, input_size: int, patch_size: int):
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        self.vocab_size = vocab_size
        self.input_size = input_size
        self.patch_size = patch_size

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 1, H, W] -> LongTensor [B, g, g]."""

    @abstractmethod
    def reconstruction_error(self, images: torch.Tensor) -> float:
        """Mean squared error of the tokenizer's reconstruction (k-means: patch space; VQ-VAE: image space)."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        ...

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "input_size": self.input_size,
                "patch_size": self.patch_size}

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        from heartbeit.utils.io import atomic_path

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: tokenizers are saved as .safetensors")
        tensors = {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in self.tensors().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(self.config(), sort_keys=True)})
        return path

    @staticmethod
    def load(path: str | Path) -> "Tokenizer":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types for a corrupt header
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
        if METADATA_KEY not in meta:
            raise ValueError(f"{path}: no '{METADATA_KEY}' metadata; not a HeartBEiT tokenizer file")
        cfg = json.loads(meta[METADATA_KEY])
        kinds = {cls.kind: cls for cls in (KMeansTokenizer, VQVAETokenizer)}
        if cfg.get("kind") not in kinds:
            raise ValueError(f"{path}: unknown tokenizer kind {cfg.get('kind')!r}")
        return kinds[cfg.pop("kind")].from_tensors(cfg, tensors)


# --------------------------------------------------------------------------------------------- k-means
def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


class KMeansTokenizer(Tokenizer):
    kind = "kmeans"

    def __init__(self, vocab_size: int, input_size: int, patch_size: int, blur_sigma: float = 1.0,
                 centroids: torch.Tensor | None = None):
        super().__init__(vocab_size, input_size, patch_size)
        self.blur_sigma = blur_sigma
        self.centroids = centroids  # [vocab, patch*patch]; set by fitting or loading

    def config(self) -> dict[str, Any]:
        return {**super().config(), "blur_sigma": self.blur_sigma}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"centroids": self._require_centroids()}

    @classmethod
    def from_tensors(cls, cfg: dict, tensors: dict[str, torch.Tensor]) -> "KMeansTokenizer":
        tok = cls(**cfg, centroids=tensors["centroids"].to(torch.float32))
        if tok.centroids.shape != (tok.vocab_size, tok.patch_size ** 2):
            raise ValueError(f"k-means centroids have shape {tuple(tok.centroids.shape)}, expected "
                             f"({tok.vocab_size}, {tok.patch_size ** 2})")
        return tok

    def to(self, device: torch.device | str) -> "KMeansTokenizer":
        self.centroids = self._require_centroids().to(device)
        return self

    def _require_centroids(self) -> torch.Tensor:
        if self.centroids is None:
            raise RuntimeError("k-means tokenizer is not fitted")
        return self.centroids

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 1, H, W] -> float32 [B, g*g, patch*patch] blurred patch pixels (row-major grid)."""
        device = self.centroids.device if self.centroids is not None else images.device
        # non-blocking: a no-op when the step has the batch on the device already, else queued
        x = _blur(to_unit_float(images.to(device, non_blocking=True), self.input_size), self.blur_sigma)
        p = self.patch_size
        return F.unfold(x, kernel_size=p, stride=p).transpose(1, 2).contiguous()

    def assign(self, patches: torch.Tensor) -> torch.Tensor:
        """Nearest centroid of each row of patches [..., d] (squared Euclidean), in chunks to bound memory."""
        c = self._require_centroids()
        flat = patches.reshape(-1, c.shape[1])
        c_sq = (c * c).sum(1)
        out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        for start in range(0, flat.shape[0], 65536):
            chunk = flat[start:start + 65536]
            out[start:start + chunk.shape[0]] = (c_sq - 2.0 * chunk @ c.T).argmin(1)
        return out.view(patches.shape[:-1])

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        g = self.grid_size
        return self.assign(self.patches(images)).view(images.shape[0], g, g)

    @torch.no_grad()
    def reconstruction_error(self, images: torch.Tensor) -> float:
        patches = self.patches(images)
        recon = self._require_centroids()[self.assign(patches)]
        return F.mse_loss(recon, patches).item()


# --------------------------------------------------------------------------------------------- VQ-VAE
class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EMAQuantizer(nn.Module):
    """Nearest-code quantizer whose codebook follows EMA cluster means.

    Codes whose EMA usage falls below `restart_below` of an equal share of the batch's tokens (tokens /
    vocab_size: 1.5 for 64 images x 196 tokens over 8192 codes) restart on encoder outputs of the current
    batch, drawn with probability proportional to their squared distance from the codebook (k-means++
    seeding), so restarts go where the codebook represents the data worst rather than onto the ubiquitous
    blank-paper patches. The first batch seeds the whole codebook the same way.

    A restarted code starts at a full equal share, so an unused one decays for L = ln(1 / restart_below) /
    (1 - decay) steps (~160 at 0.2 and 0.99) before it can restart again: each code restarts at most once
    per L steps, i.e. at most 1/L of the codebook per step on average (0.6 %). The seeded codebook starts
    at shares spread evenly over that decay, so the codes the encoder abandons early come back a few at a
    time from the first steps on instead of all together L steps later. (A fixed threshold of 1 token per
    batch sits below the equal share at batch 64 (1.5) and restarted thousands of the 8192 codes every
    step: a restarted code that missed one batch was dead again.)"""

    def __init__(self, vocab_size: int, dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.vocab_size, self.dim, self.decay, self.eps = vocab_size, dim, decay, eps
        self.register_buffer("codebook", torch.zeros(vocab_size, dim))
        self.register_buffer("ema_count", torch.zeros(vocab_size))
        self.register_buffer("ema_sum", torch.zeros(vocab_size, dim))
        self.register_buffer("initialized", torch.zeros(()))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances [n, vocab] of the rows of z [n, dim] to the codes."""
        c = self.codebook
        return ((z * z).sum(1, keepdim=True) - 2.0 * z @ c.T + (c * c).sum(1)).clamp_min(0)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        c = self.codebook
        return ((c * c).sum(1) - 2.0 * z @ c.T).argmin(1)

    @torch.no_grad()
    def _restart(self, codes: torch.Tensor, z: torch.Tensor, weights: torch.Tensor, count: float | torch.Tensor,
                 generator: torch.Generator) -> None:
        w = weights.detach().double().cpu() + 1e-12  # the generator lives on the CPU: draws match on any device
        pick = torch.multinomial(w / w.sum(), codes.numel(), replacement=codes.numel() > z.shape[0],
                                 generator=generator).to(z.device)
        codes = codes.to(z.device)
        count = torch.as_tensor(count, dtype=z.dtype).to(z.device)
        self.codebook[codes] = z[pick]
        self.ema_sum[codes] = z[pick] * (count.unsqueeze(-1) if count.ndim else count)
        self.ema_count[codes] = count

    @torch.no_grad()
    def update(self, z: torch.Tensor, idx: torch.Tensor, min_dist: torch.Tensor, generator: torch.Generator,
               restart_below: float = 0.2) -> int:
        """One EMA step on this batch; returns how many dead codes were restarted."""
        share = z.shape[0] / self.vocab_size  # tokens per code per batch if every code were used equally
        if not bool(self.initialized):
            spread = ((z - z.mean(0)) ** 2).sum(1)  # favour latents far from the typical (blank) patch
            # shares from `share` down to the threshold, evenly in log: unused codes reach it one by one
            u = (torch.randperm(self.vocab_size, generator=generator).double() + 0.5) / self.vocab_size
            start = share * torch.as_tensor(max(restart_below, 1e-6), dtype=torch.float64) ** u
            self._restart(torch.arange(self.vocab_size), z, spread, start.float(), generator)
            self.initialized.fill_(1)
            return 0
        counts = torch.bincount(idx, minlength=self.vocab_size).to(z.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, z)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.vocab_size * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        dead = torch.nonzero(self.ema_count < restart_below * share).flatten()
        if dead.numel():
            self._restart(dead, z, min_dist, share, generator)
        return int(dead.numel())


class VQVAETokenizer(nn.Module, Tokenizer):
    kind = "vqvae"

    def __init__(self, vocab_size: int, input_size: int, patch_size: int, hidden: int = 64, code_dim: int = 32,
                 decay: float = 0.99, commitment: float = 0.25):
        nn.Module.__init__(self)
        Tokenizer.__init__(self, vocab_size, input_size, patch_size)
        n_down = int(round(math.log2(patch_size)))
        if 2 ** n_down != patch_size:
            raise ValueError(f"VQ-VAE patch_size must be a power of two, got {patch_size}")
        self.hidden, self.code_dim, self.decay, self.commitment = hidden, code_dim, decay, commitment
        enc: list[nn.Module] = [nn.Conv2d(1, hidden, 4, stride=2, padding=1)]
        for _ in range(n_down - 1):
            enc += [nn.ReLU(), nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)]
        self.encoder = nn.Sequential(*enc, _ResBlock(hidden), _ResBlock(hidden), nn.ReLU(),
                                     nn.Conv2d(hidden, code_dim, 1))
        dec: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1), _ResBlock(hidden), _ResBlock(hidden)]
        for _ in range(n_down):
            dec += [nn.ReLU(), nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1)]
        self.decoder = nn.Sequential(*dec, nn.ReLU(), nn.Conv2d(hidden, 1, 3, padding=1))
        self.quantizer = EMAQuantizer(vocab_size, code_dim, decay)

    def config(self) -> dict[str, Any]:
        return {**Tokenizer.config(self), "hidden": self.hidden, "code_dim": self.code_dim, "decay": self.decay,
                "commitment": self.commitment}

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    @classmethod
    def from_tensors(cls, cfg: dict, tensors: dict[str, torch.Tensor]) -> "VQVAETokenizer":
        tok = cls(**cfg)
        tok.load_state_dict(tensors, strict=True)
        return tok.eval()

    def _encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """float images [B, 1, S, S] -> latents [B*g*g, code_dim] (row-major grid)."""
        z = self.encoder(x * 2.0 - 1.0)
        return z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)

    def _decode(self, q: torch.Tensor, batch: int) -> torch.Tensor:
        g = self.grid_size
        q = q.view(batch, g, g, self.code_dim).permute(0, 3, 1, 2)
        return (self.decoder(q) + 1.0) / 2.0

    def training_step(self, images: torch.Tensor, generator: torch.Generator,
                      restart_below: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss to backpropagate (reconstruction + commitment) and batch stats; updates the codebook by EMA."""
        x = to_unit_float(images.to(self.quantizer.codebook.device), self.input_size)
        z = self._encode_latents(x)
        with torch.no_grad():
            if bool(self.quantizer.initialized):
                min_dist, idx = self.quantizer.distances(z.detach()).min(1)
            else:
                min_dist = torch.ones(z.shape[0], device=z.device)
                idx = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
            restarted = self.quantizer.update(z.detach(), idx, min_dist, generator, restart_below)
            idx = self.quantizer.nearest(z.detach())
            usage = codebook_usage(idx, self.vocab_size)
        q = self.quantizer.codebook[idx]
        recon = self._decode(z + (q - z).detach(), x.shape[0])  # straight-through estimator
        rec_loss = F.mse_loss(recon, x)
        loss = rec_loss + self.commitment * F.mse_loss(z, q)
        return loss, {"recon_mse": rec_loss.item(), "restarted_codes": restarted,
                      "batch_perplexity": usage["perplexity"], "batch_used_codes": usage["used_codes"]}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        g = self.grid_size
        images = images.to(self.quantizer.codebook.device, non_blocking=True)  # as in KMeansTokenizer.patches
        z = self._encode_latents(to_unit_float(images, self.input_size))
        return self.quantizer.nearest(z).view(images.shape[0], g, g)

    @torch.no_grad()
    def reconstruction_error(self, images: torch.Tensor) -> float:
        x = to_unit_float(images.to(self.quantizer.codebook.device), self.input_size)
        q = self.quantizer.codebook[self.quantizer.nearest(self._encode_latents(x))]
        return F.mse_loss(self._decode(q, x.shape[0]), x).item()


def build_tokenizer(kind: str, vocab_size: int, input_size: int, patch_size: int, **kwargs: Any) -> Tokenizer:
    if kind == "kmeans":
        return KMeansTokenizer(vocab_size, input_size, patch_size, **kwargs)
    if kind == "vqvae":
        return VQVAETokenizer(vocab_size, input_size, patch_size, **kwargs)
    raise ValueError(f"unknown tokenizer kind {kind!r} (kmeans | vqvae)")


load_tokenizer = Tokenizer.load
