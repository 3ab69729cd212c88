"""FLOPs per trained image and device peaks, for model FLOPs utilisation (MFU).

FLOPs = 2 x MACs, counted once per model configuration with `torch.utils.flop_counter.FlopCounterMode` on
the meta device (no memory, no compute). Training counts 3x the forward (backward = 2x forward), the
convention of PaLM/nanoGPT MFU. Only the model is counted: a tokenizer running on the fly is overhead that
lowers MFU, as it should.

Peaks: dense bf16 tensor-core numbers per GPU SKU, matched on the exact CUDA device name (`GPU_SKUS`; fp32
runs use the same table, so fp32 MFU on a GPU reads low; a MIG slice gets its share of the SMs; a GPU not in
the table has no peak and says so), an explicit `pretrain.peak_tflops` wins over everything, and on a CPU the
peak is an estimate from cores x clock x FLOPs per cycle (AVX-512: 64 fp32/cycle/core; AMX bf16:
1024/cycle/core; AVX2: 32).
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch


# Dense bf16 tensor-core peaks (TFLOPS, no sparsity) per GPU SKU, keyed by the exact CUDA device names
# (torch.cuda.get_device_name) each SKU reports, with its streaming-multiprocessor count: a MIG slice
# ("<name> MIG 1g.10gb") is that share of the SMs, hence of the peak. Matching is exact, never by substring
# (an "L40" is not an "L4", an H100 PCIe is not an H100 SXM); a name not listed has no peak and says so.
# Peaks: NVIDIA data sheets (A100 312; H100/H200/H800 SXM 989, PCIe 756, NVL 835; L4 121; L40S 362; L40 181).
@dataclass(frozen=True)
class GpuSku:
    sku: str
    bf16_tflops: float
    sms: int  # streaming multiprocessors of the whole GPU
    names: tuple[str, ...]


GPU_SKUS: tuple[GpuSku, ...] = (
    GpuSku("A100 40GB", 312.0, 108, ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB")),
    GpuSku("A100 80GB", 312.0, 108, ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe")),
    GpuSku("A800 80GB", 312.0, 108, ("NVIDIA A800-SXM4-80GB", "NVIDIA A800 80GB PCIe")),
    GpuSku("H100 SXM", 989.0, 132, ("NVIDIA H100 80GB HBM3",)),
    GpuSku("H100 PCIe", 756.0, 114, ("NVIDIA H100 PCIe",)),
    GpuSku("H100 NVL", 835.0, 132, ("NVIDIA H100 NVL",)),
    GpuSku("H200 SXM", 989.0, 132, ("NVIDIA H200",)),
    GpuSku("H200 NVL", 835.0, 132, ("NVIDIA H200 NVL",)),
    GpuSku("H800 SXM", 989.0, 132, ("NVIDIA H800",)),
    GpuSku("H800 PCIe", 756.0, 114, ("NVIDIA H800 PCIe",)),
    GpuSku("GH200", 989.0, 132, ("NVIDIA GH200 480GB",)),
    GpuSku("L4", 121.0, 58, ("NVIDIA L4",)),
    GpuSku("L40S", 362.0, 142, ("NVIDIA L40S",)),
    GpuSku("L40", 181.0, 142, ("NVIDIA L40",)),
)
MIG_SLICES = 7  # compute slices of a whole A100/H100/H200 (a "3g" instance holds 3 of them)
_MIG = re.compile(r"^(?P<base>.+) MIG (?:(?P<ci>\d+)c\.)?(?P<g>\d+)g\.\d+gb$", re.IGNORECASE)
_BY_NAME = {name.upper(): sku for sku in GPU_SKUS for name in sku.names}


def gpu_sku(sku: str) -> GpuSku:
    """A table row by its SKU name (e.g. "H100 SXM"), for figures that assume a GPU (bench/plan.py)."""
    for row in GPU_SKUS:
        if row.sku == sku:
            return row
    raise KeyError(f"no GPU SKU {sku!r} in heartbeit.train.flops.GPU_SKUS")


def gpu_sku_of(name: str) -> GpuSku | None:
    """The SKU of a whole GPU's exact device name (None for a MIG slice or a GPU not in the table)."""
    return _BY_NAME.get(" ".join(name.split()).upper())


def gpu_peak_flops(name: str, sm_count: int | None = None) -> tuple[float, str]:
    """(dense bf16 peak FLOP/s, where it came from) for a CUDA device name; a MIG slice ("... MIG 3g.40gb")
    gets the share of its SMs (`sm_count`, from the device's properties) or, without it, of the 7 slices.
    An unknown name gives 0 and a source that says so: MFU is then not reported rather than wrong."""
    name = " ".join(name.split())
    mig = _MIG.match(name)
    sku = _BY_NAME.get((mig["base"] if mig else name).upper())
    if sku is None:
        return 0.0, f"unknown GPU {name!r}: not in heartbeit.train.flops.GPU_SKUS (set pretrain.peak_tflops)"
    if mig is None:
        return sku.bf16_tflops * 1e12, f"table:{sku.sku}"
    profile = name[mig.end("base") + len(" MIG "):]
    if sm_count:
        share, how = min(1.0, sm_count / sku.sms), f"{sm_count}/{sku.sms} SMs"
    else:
        slices = int(mig["ci"] or mig["g"])
        share, how = slices / MIG_SLICES, f"{slices}/{MIG_SLICES} slices"
    return sku.bf16_tflops * 1e12 * share, f"table:{sku.sku} MIG {profile} ({how})"


@functools.lru_cache(maxsize=None)
def mim_forward_flops(model_name: str, img_size: int, vocab_size: int, num_masked: int) -> float:
    """Forward FLOPs of one image through the MIM model (backbone on all patches, lm head on masked ones)."""
    from torch.utils.flop_counter import FlopCounterMode

    from heartbeit.models.heartbeit import create_mim_model

    with torch.device("meta"):
        model = create_mim_model(model_name, vocab_size, drop_path_rate=0.0, img_size=img_size)
        x = torch.zeros(1, 1, img_size, img_size)
        mask = torch.zeros(1, model.patch_embed.num_patches, dtype=torch.bool)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.forward_features_mim(x, mask)
        model.lm_head(torch.zeros(num_masked, model.embed_dim, device="meta"))
    return float(counter.get_total_flops())


def mim_train_flops_per_image(model_name: str, img_size: int, vocab_size: int, num_masked: int) -> float:
    return 3.0 * mim_forward_flops(model_name, img_size, vocab_size, num_masked)


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_peak_flops(precision: str) -> float:
    """A rough peak for the cores this process may use (an estimate: turbo and AVX clocks vary)."""
    flags: set[str] = set()
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    ghz = (mhz or 2500.0) / 1000.0
    if precision == "bf16" and "amx_bf16" in flags:
        per_cycle = 1024.0
    elif "avx512f" in flags:
        per_cycle = 64.0
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32.0
    else:
        per_cycle = 8.0
    return _cpu_cores() * ghz * 1e9 * per_cycle


def device_peak_flops(device: torch.device, precision: str, override_tflops: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s, where the number came from) for one device."""
    if override_tflops and override_tflops > 0:
        return override_tflops * 1e12, "config"
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device),
                              torch.cuda.get_device_properties(device).multi_processor_count)
    return cpu_peak_flops(precision), "cpu-estimate"


def mfu(images_per_s: float, flops_per_image: float, peak_flops: float, world_size: int) -> float | None:
    """Model FLOPs utilisation: the model FLOP/s achieved over every rank's peak (None without a known peak).
    The one formula of pretraining's log and of the distributed self-test's summary."""
    return images_per_s * flops_per_image / (peak_flops * world_size) if peak_flops else None


def _counted(build, inputs) -> float:
    """Forward FLOPs of `build()` on `inputs()`, both made on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build()
        x = inputs()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


@functools.lru_cache(maxsize=None)
def classifier_forward_flops(arch: str, img_size: int = 224, wave_len: int = 1000) -> float:
    """Forward FLOPs of one input through a matrix classifier: the paper's BEiT/ViT (HeartBEiT, the ImageNet
    BEiT-B), ResNet, EfficientNet on a 1-channel `img_size` image, or the signal model on a [12, wave_len]
    waveform (render.wave_hz x render.duration_s) -- the very model a cell trains (models/zoo.py)."""
    import timm

    import heartbeit.models  # noqa: F401  (registers ours)
    from heartbeit.models.families import is_signal_arch
    from heartbeit.models.zoo import classifier_kwargs

    kwargs = classifier_kwargs(arch, 2, img_size, finetune=False)
    shape = (1, 12, wave_len) if is_signal_arch(arch) else (1, 1, img_size, img_size)
    return _counted(lambda: timm.create_model(arch, pretrained=False, **kwargs), lambda: torch.zeros(shape))


def classifier_train_flops_per_image(arch: str, img_size: int = 224, wave_len: int = 1000) -> float:
    """Training FLOPs per image (forward + backward = 3 x forward, the MFU convention above)."""
    return 3.0 * classifier_forward_flops(arch, img_size, wave_len)


@functools.lru_cache(maxsize=None)
def tokenizer_forward_flops(kind: str, vocab_size: int, input_size: int, patch_size: int, hidden: int = 64,
                            code_dim: int = 32) -> float:
    """Encoding FLOPs of one image by the visual tokenizer (vqvae: encoder + nearest code; kmeans: the
    distance of every patch to every centroid, 2 x patch pixels x vocabulary per patch)."""
    if kind == "kmeans":
        patches = (input_size // patch_size) ** 2
        return 2.0 * patches * patch_size ** 2 * vocab_size
    from heartbeit.models.tokenizer import build_tokenizer

    def build():
        tok = build_tokenizer(kind, vocab_size, input_size, patch_size, hidden=hidden, code_dim=code_dim)
        return _Encode(tok)
    return _counted(build, lambda: torch.zeros(1, 1, input_size, input_size))


class _Encode(torch.nn.Module):
    def __init__(self, tok):
        super().__init__()
        self.tok = tok

    def forward(self, x):
        return self.tok.encode(x)
