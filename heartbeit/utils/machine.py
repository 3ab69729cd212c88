"""What machine and software a run's numbers came from: CPU model, the vector ISA features that change
floating-point results (AVX2 / AVX-512 / AVX-512-BF16 / AMX pick different torch, oneDNN and MKL kernels),
the ISA torch actually dispatches to, any ISA pins in the environment, and library versions. Training bytes
are reproducible on one machine type, not across them (docs/reproducibility.md)."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# /proc/cpuinfo flags that select different numeric kernels
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
# environment variables that pin the ISA of torch's own kernels, oneDNN and MKL (the portable numeric mode)
ISA_PINS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
            "MKL_CBWR", "OMP_NUM_THREADS")
LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "pandas", "deepspeed", "webdataset",
             "safetensors", "pillow")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine_record() -> dict:
    """{cpu_model, isa_flags, torch_cpu_capability, isa_pins, cpus, python, libraries}."""
    model, flags = _cpuinfo()
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - a record must never fail the run it describes
        capability = None
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu_model": model, "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "torch_cpu_capability": capability, "isa_pins": {k: os.environ[k] for k in ISA_PINS if k in os.environ},
            "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "libraries": libs}
