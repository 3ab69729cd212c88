"""MFU peaks by exact GPU SKU (MIG slices as fractions, unknown GPUs say so) and cuDNN autotuning for CNN
cells on CUDA only, with the device type in GPU cells' ids and CPU ids unchanged."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from heartbeit.config import MatrixConfig
from heartbeit.train import flops
from heartbeit.train.flops import gpu_peak_flops


@pytest.mark.parametrize("name, tflops, sku", [
    ("NVIDIA A100-SXM4-40GB", 312, "A100 40GB"), ("NVIDIA A100-PCIE-40GB", 312, "A100 40GB"),
    ("NVIDIA A100-SXM4-80GB", 312, "A100 80GB"), ("NVIDIA A100 80GB PCIe", 312, "A100 80GB"),
    ("NVIDIA H100 80GB HBM3", 989, "H100 SXM"), ("NVIDIA H100 PCIe", 756, "H100 PCIe"),
    ("NVIDIA H100 NVL", 835, "H100 NVL"), ("NVIDIA H200", 989, "H200 SXM"), ("NVIDIA H800", 989, "H800 SXM"),
    ("NVIDIA H800 PCIe", 756, "H800 PCIe"), ("NVIDIA L4", 121, "L4"), ("NVIDIA L40S", 362, "L40S"),
    ("NVIDIA L40", 181, "L40"),
])
def test_peak_is_the_exact_skus(name, tflops, sku):
    assert gpu_peak_flops(name) == (tflops * 1e12, f"table:{sku}")


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB", "NVIDIA H100",
                                  "NVIDIA L40G", "NVIDIA A100-SXM4-40GB-X", "NVIDIA B200 MIG 1g.23gb"])
def test_unknown_gpus_have_no_peak_and_say_so(name):
    peak, source = gpu_peak_flops(name)
    assert peak == 0.0 and source.startswith("unknown GPU") and "pretrain.peak_tflops" in source
    assert flops.mfu(100.0, 1e9, peak, 1) is None  # no MFU rather than a wrong one


def test_mig_slices_get_their_share():
    peak, source = gpu_peak_flops("NVIDIA A100-SXM4-40GB MIG 1g.5gb", sm_count=14)
    assert peak == pytest.approx(312e12 * 14 / 108) and "14/108 SMs" in source and "MIG 1g.5gb" in source
    assert gpu_peak_flops("NVIDIA A100-SXM4-40GB MIG 3g.20gb")[0] == pytest.approx(312e12 * 3 / 7)
    # a compute instance of a GPU instance: its own slices count
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb")[0] == pytest.approx(989e12 / 7)
    assert gpu_peak_flops("NVIDIA H100 PCIe MIG 7g.80gb", sm_count=114)[0] == pytest.approx(756e12)
    assert flops.gpu_sku_of("NVIDIA H100 NVL MIG 1g.12gb") is None  # a slice is no whole GPU


def test_device_peak_reads_the_cuda_device_name_and_sms(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 NVL MIG 2g.24gb")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(multi_processor_count=32))
    peak, source = flops.device_peak_flops(torch.device("cuda"), "bf16")
    assert peak == pytest.approx(835e12 * 32 / 132) and source.startswith("table:H100 NVL MIG 2g.24gb")
    assert flops.device_peak_flops(torch.device("cuda"), "bf16", override_tflops=100.0) == (100e12, "config")


def test_cpu_cell_ids_stay_exactly_as_they_were_and_gpu_ids_name_the_device(tmp_path, monkeypatch):
    import heartbeit.matrix as matrix

    (tmp_path / "manifest.parquet").write_bytes(b"x")
    # everything but the key's structure pinned: these ids were computed by the code before GPU cells' ids named their device
    monkeypatch.setattr(matrix, "_finetune_fingerprint", lambda mcfg: {"pinned": True})
    monkeypatch.setattr(matrix, "__version__", "0.0-test")
    monkeypatch.setattr(matrix, "FINETUNE_RECIPE_VERSION", 2)
    archs = ["resnet18", "efficientnet_b0", "vit_micro_patch8_64"]
    cpu = matrix.plan_cells(MatrixConfig(architectures=archs, device="cpu", fractions=[1.0], tasks=["hcm"],
                                         seeds=[0]), tmp_path, None)
    assert [c.cell_id for c in cpu] == ["bcf82b78993f5219", "6f91d86999cdc45a", "8d81cc7741ed0006"]
    cuda = matrix.plan_cells(MatrixConfig(architectures=archs, device="cuda", fractions=[1.0], tasks=["hcm"],
                                          seeds=[0]), tmp_path, None)
    assert not {c.cell_id for c in cuda} & {c.cell_id for c in cpu}
    # same effective numerics on both device types (forced bf16, vit has no memory-format row): still apart
    same = [matrix.plan_cells(MatrixConfig(architectures=["vit_micro_patch8_64"], device=d, fractions=[1.0],
                                           tasks=["hcm"], seeds=[0], precision="bf16"), tmp_path, None)[0]
            for d in ("cpu", "cuda")]
    assert (same[0].precision, same[0].channels_last) == (same[1].precision, same[1].channels_last)
    assert same[0].cell_id != same[1].cell_id


def test_cudnn_autotune_only_for_cnn_cells_on_cuda():
    from heartbeit.models.precision import cudnn_autotune, numerics_for

    assert numerics_for("resnet18", "cuda").cudnn_benchmark and numerics_for("efficientnet_b0", "cuda").cudnn_benchmark
    assert numerics_for("resnet18", "cuda", "fp32").cudnn_benchmark  # a forced precision keeps the row's rest
    assert not numerics_for("vit_micro_patch8_64", "cuda").cudnn_benchmark
    assert not any(numerics_for(a, "cpu").cudnn_benchmark for a in ("resnet18", "efficientnet_b0"))
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True  # left on by something else: a CPU or ViT cell turns it off
        for arch, device, want in (("resnet18", "cuda", True), ("vit_micro_patch8_64", "cuda", False),
                                   ("resnet18", "cpu", False)):
            with cudnn_autotune(arch, device) as on:
                assert on is want and torch.backends.cudnn.benchmark is want
            assert torch.backends.cudnn.benchmark is True  # restored
    finally:
        torch.backends.cudnn.benchmark = before
