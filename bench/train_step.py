"""Training-step throughput and model FLOPs utilisation (MFU) of every matrix architecture and of HeartBEiT
masked-image-modeling pretraining, with the speed knobs measured against the eager fp32 step of the same
model in the same run: bf16 autocast, `torch.compile`, channels-last (CNNs).

One step = forward + cross-entropy + backward + AdamW (fused on CUDA, foreach on CPU) on a fixed batch of
random 1-channel images already on the device, so the figure is the model's ceiling, not the loader's
(bench/loader.py measures that). Each variant runs `warmup` steps, then `steps` timed steps; the step time
is the median. FLOPs = 2 x MACs counted once per model with `torch.utils.flop_counter.FlopCounterMode`
(heartbeit.train.flops); training = 3 x forward. MFU = images/s x FLOPs/image / peak, with the peak from
heartbeit.train.flops: a table of bf16 dense tensor-core peaks on GPUs (A100 312, H100/H200 989 TFLOPS),
an estimate from cores x clock x FLOPs/cycle on CPUs (fp32 and bf16 peaks differ there), or the env var
HEARTBEIT_PEAK_TFLOPS, which wins over both.

Models: --quick on a CPU uses the ci profile's matrix (heartbeit_micro_patch8_64, vit_micro_patch8_64,
efficientnet_b0, resnet18 at 64 px) and pretraining of heartbeit_micro_patch8_64; --full or any CUDA device
uses the paper's (heartbeit_base_patch16_224, beit_base_patch16_224, efficientnet_b4, resnet152 at 224 px,
BEiT-B/16 pretraining with an 8192-token vocabulary and 75 masked patches). A `heartbeit_*` classifier is
built with random weights here: its fine-tuning step costs the same whatever the weights.

CPU threads: one with --quick (per-core figures, stable on a shared machine), all with --full;
HEARTBEIT_BENCH_THREADS=N overrides. MFU is against the peak of the threads used.

torch.compile (compile time reported): on CUDA every model, bf16 and fp32; on a CPU only the pretraining
model with --full, none with --quick (see compile_targets; HEARTBEIT_BENCH_COMPILE overrides). HEARTBEIT_BENCH_TINY=1
runs one micro model for a few steps (tests).

    .venv/bin/python bench/train_step.py --quick [--json OUT]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CI_MODELS = ("heartbeit_micro_patch8_64", "vit_micro_patch8_64", "efficientnet_b0", "resnet18")
PAPER_MODELS = ("heartbeit_base_patch16_224", "beit_base_patch16_224", "efficientnet_b4", "resnet152")
# (model, vocab, masked patches, min block) as in configs/ci.yaml and configs/paper.yaml
CI_MIM = ("heartbeit_micro_patch8_64", 64, 24, 4)
PAPER_MIM = ("heartbeit_base_patch16_224", 8192, 75, 16)
CNN_PREFIXES = ("resnet", "efficientnet", "convnext", "regnet")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: torch.device, precision: str) -> tuple[float, str]:
    """Peak FLOP/s of what the step may use: on a CPU the cores' estimate scaled to the threads torch runs."""
    from heartbeit.train.flops import _cpu_cores, device_peak_flops

    override = float(os.environ.get("HEARTBEIT_PEAK_TFLOPS", "0") or 0)
    peak, source = device_peak_flops(device, precision, override)
    if device.type == "cpu" and not override:
        threads = min(torch.get_num_threads(), _cpu_cores())
        peak, source = peak * threads / _cpu_cores(), f"{source} x {threads}/{_cpu_cores()} cores"
    return peak, source


def classifier(arch: str, img_size: int) -> torch.nn.Module:
    import timm

    import heartbeit.models  # noqa: F401  (registers heartbeit_* / vit_micro / vit_tiny with timm)
    from heartbeit.models.families import needs_mim_export
    from heartbeit.models.zoo import create_classifier

    if needs_mim_export(arch):  # same architecture as the export-initialised one; weights do not matter
        return timm.create_model(arch, pretrained=False, num_classes=2, in_chans=1, img_size=img_size)
    return create_classifier(arch, num_classes=2, img_size=img_size)[0]


def classifier_forward_flops(arch: str, img_size: int) -> float:
    """Forward FLOPs (2 x MACs) of one image, counted on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = classifier(arch, img_size)
        x = torch.zeros(1, 1, img_size, img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def time_steps(step, warmup: int, steps: int, device: torch.device, min_time: float = 0.0,
               max_steps: int = 100) -> list[float]:
    """Per-step seconds of at least `steps` steps, more (up to max_steps) until min_time has passed: fast
    models get enough samples for a stable median."""
    for _ in range(warmup):
        step()
    _sync(device)
    times: list[float] = []
    while len(times) < steps or (sum(times) < min_time and len(times) < max_steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def _math_attention(model: torch.nn.Module) -> None:
    """timm's explicit softmax(QK^T + bias) V instead of F.scaled_dot_product_attention (the SDPA baseline)."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False


def _random_tokenizer(vocab: int, img_size: int, patch: int, device: torch.device):
    """A tokenizer of the profile's kind and size with random weights: encoding costs the same as a trained one.
    ci: k-means (vocab 64, 64 px); paper: the VQ-VAE (vocab 8192, 112 px input)."""
    from heartbeit.models.tokenizer import KMeansTokenizer, VQVAETokenizer

    gen = torch.Generator(device="cpu").manual_seed(0)
    if vocab <= 1024:
        return KMeansTokenizer(vocab, img_size, patch, centroids=torch.rand(vocab, patch * patch, generator=gen)).to(device)
    return VQVAETokenizer(vocab, img_size // 2, patch // 2).to(device).eval()


def _optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused, foreach=not fused)


def classifier_step(arch: str, img_size: int, batch: int, device: torch.device, precision: str,
                    channels_last: bool, compile_: bool, math_attention: bool = False):
    torch.manual_seed(0)
    model = classifier(arch, img_size).to(device).train()
    if math_attention:
        _math_attention(model)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 1, img_size, img_size, generator=gen).to(device)
    y = torch.randint(0, 2, (batch,), generator=gen).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = _optimizer(model, device)
    fwd = torch.compile(model) if compile_ else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step():
        with autocast:
            loss = F.cross_entropy(fwd(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def mim_step(name: str, vocab: int, num_masked: int, min_block: int, img_size: int, batch: int,
             device: torch.device, precision: str, compile_: bool, math_attention: bool = False,
             online_tokenizer: bool = False):
    """One pretraining micro-batch through the pretraining loop's own step (heartbeit.train.mim.MimStep:
    preprocessing, masked patches -> mask token, lm head on the gathered masked positions, cross-entropy,
    device-side loss sums) with AdamW; tokens precomputed (stored in the shards), or with online_tokenizer
    encoded inside the step (what precomputing saves). Masks: index tensors, as the loader's workers draw them."""
    from types import SimpleNamespace

    from heartbeit.models.heartbeit import create_mim_model
    from heartbeit.models.masking import MaskSampler
    from heartbeit.train.mim import MimStep

    torch.manual_seed(0)
    model = create_mim_model(name, vocab, img_size=img_size).to(device).train()
    if math_attention:
        _math_attention(model)
    grid = model.grid_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(0, 256, (batch, 1, img_size, img_size), generator=gen, dtype=torch.uint8).to(device)
    masks = MaskSampler(grid, num_masked, min_block=min_block, seed=0)
    mask_index = torch.from_numpy(masks([str(i) for i in range(batch)], 0)["mask_index"]).to(device)
    tokens = torch.randint(0, vocab, (batch, grid[0] * grid[1]), generator=gen).to(device)
    tokenizer = _random_tokenizer(vocab, img_size, model.patch_embed.patch_size[0], device) if online_tokenizer else None
    opt = _optimizer(model, device)

    def optimizer_step() -> bool:
        opt.step()
        opt.zero_grad(set_to_none=True)
        return True

    engine = SimpleNamespace(model=torch.compile(model) if compile_ else model, device=device,
                             backward=lambda loss: loss.backward(), step=optimizer_step)
    step = MimStep(engine, precision, img_size, tokenizer)
    return lambda: step(images, None if online_tokenizer else tokens, mask_index)


def variants(arch: str, device: torch.device, compile_this: bool, quick: bool = True) -> list[tuple[str, str, bool, bool]]:
    """(name, precision, channels_last, compile); the first is the eager fp32 baseline."""
    out = [("eager_fp32", "fp32", False, False), ("eager_bf16", "bf16", False, False)]
    cnn = arch.startswith(CNN_PREFIXES)
    if not cnn:  # transformers: SDPA (fused attention, the default) against timm's explicit attention
        out.append(("eager_fp32_math_attention", "fp32", False, False))
    if arch == "mim":
        out.append(("eager_fp32_online_tokenizer", "fp32", False, False))
    if cnn:
        out += [("eager_fp32_channels_last", "fp32", True, False), ("eager_bf16_channels_last", "bf16", True, False)]
    if compile_this:  # CPU inductor's bf16 code is slow: compile fp32 there; bf16 on CUDA (and fp32 with --full)
        precisions = (("bf16",) if quick else ("bf16", "fp32")) if device.type == "cuda" else ("fp32",)
        out += [(f"compile_{p}" + ("_channels_last" if cnn else ""), p, cnn, True) for p in precisions]
    return out


def compile_targets(models: tuple[str, ...], device: torch.device, quick: bool) -> set[str]:
    """Which jobs get a torch.compile variant: HEARTBEIT_BENCH_COMPILE = all | first | none, else all on CUDA,
    the pretraining model only on a CPU with --full, none on a CPU with --quick (a CPU compile of even the
    micro model takes a minute or more; run once with HEARTBEIT_BENCH_COMPILE=first to record it)."""
    choice = os.environ.get("HEARTBEIT_BENCH_COMPILE") or (
        "all" if device.type == "cuda" else ("none" if quick else "first"))
    if choice not in ("all", "first", "none"):
        raise ValueError(f"HEARTBEIT_BENCH_COMPILE must be all, first or none, got {choice!r}")
    return {"all": set(models) | {"mim"}, "first": {"mim"}, "none": set()}[choice]


def run(quick: bool) -> dict:
    from heartbeit.benchsuite import smoke

    # tiny: one micro classifier for two steps (unit tests); smoke: the same plus the MIM step (suite test)
    tiny = os.environ.get("HEARTBEIT_BENCH_TINY") == "1" or smoke()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    paper = (not quick or device.type == "cuda") and not tiny
    if paper:
        models, mim, img = PAPER_MODELS, PAPER_MIM, 224
        batch = 128 if device.type == "cuda" else 8
        warmup, steps = (10, 20) if device.type == "cuda" else (2, 3)
    else:
        models, mim, img = CI_MODELS, CI_MIM, 64
        batch, warmup, steps = 16, 3, 5
    min_time = 0.0 if tiny else (1.0 if quick else 3.0)
    if tiny:
        models, batch, warmup, steps = ("vit_micro_patch8_64",), 4, 1, 2
    compile_models = set() if tiny else compile_targets(models, device, quick)
    if device.type == "cpu":
        # --quick on a CPU measures one core, like the other CPU benchmarks: on a shared machine (CI) the
        # multi-threaded kernels' barriers make timings collapse by 10x or more when another process runs
        threads = int(os.environ.get("HEARTBEIT_BENCH_THREADS", "1" if quick else "0"))
        if threads > 0:
            torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 variants as a user would run them
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    peaks = {p: _peak(device, p) for p in ("fp32", "bf16")}
    import timm

    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "threads": torch.get_num_threads(), "profile": "paper" if paper else "ci", "img_size": img,
                 "batch_size": batch, "warmup_steps": warmup, "timed_steps_min": steps, "timed_seconds_min": min_time,
                 "peak_tflops": {p: round(v[0] / 1e12, 2) for p, v in peaks.items()},
                 "peak_source": peaks["bf16"][1], "fused_attention": timm.layers.use_fused_attn(), "models": {}}

    jobs = [(arch, None) for arch in models] + ([("mim", mim)] if not tiny or smoke() else [])
    # one-time costs (thread pools, oneDNN/cuBLAS handles, allocator) must not land on the first model timed
    time_steps(classifier_step(models[0], img, batch, device, "fp32", False, False), warmup, 0, device)
    from heartbeit.train.flops import mim_train_flops_per_image

    for arch, mim_spec in jobs:
        if mim_spec is None:
            flops = 3.0 * classifier_forward_flops(arch, img)
        else:
            flops = mim_train_flops_per_image(mim_spec[0], img, mim_spec[1], mim_spec[2])
        label = arch if mim_spec is None else f"pretrain_mim:{mim_spec[0]}"
        row: dict = {"train_gflops_per_image": round(flops / 1e9, 4), "variants": {}}
        base_s = None
        for name, precision, cl, comp in variants(arch, device, arch in compile_models, quick):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            try:
                math_attn = name.endswith("math_attention")
                if mim_spec is None:
                    step = classifier_step(arch, img, batch, device, precision, cl, comp, math_attn)
                else:
                    step = mim_step(mim_spec[0], mim_spec[1], mim_spec[2], mim_spec[3], img, batch, device,
                                    precision, comp, math_attn, name.endswith("online_tokenizer"))
                if comp:  # the first call compiles; time it apart from the warm-up
                    step()
                    _sync(device)
                compile_s = time.perf_counter() - t0
                times = time_steps(step, warmup, steps, device, min_time)
            except Exception as exc:  # e.g. an op without a bf16 kernel: report the variant, keep going
                row["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"{label:<42} {name:<28} failed: {type(exc).__name__}: {exc}"[:200], flush=True)
                continue
            step_s = statistics.median(times)
            ips = batch / step_s
            peak = peaks[precision][0]
            v = {"step_s": round(step_s, 5), "images_per_s": round(ips, 2),
                 "achieved_tflops": round(ips * flops / 1e12, 4),
                 "mfu": round(ips * flops / peak, 5) if peak else None}
            if comp:
                v["compile_s"] = round(compile_s, 1)
            if device.type == "cuda":
                v["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if name == "eager_fp32":
                base_s = step_s
            v["speedup_vs_eager_fp32"] = round(base_s / step_s, 3) if base_s else None
            row["variants"][name] = v
            mfu = f"{v['mfu']:.2%}" if v["mfu"] is not None else "n/a"
            ratio = f"{v['speedup_vs_eager_fp32']:5.2f}x" if base_s else "  n/a"
            extra = f"  (compile {v['compile_s']} s)" if comp else ""
            print(f"{label:<42} {name:<28} {ips:9.1f} img/s  MFU {mfu:>7}  {ratio} vs eager fp32{extra}", flush=True)
            del step
            if comp:  # a fresh start for the next compiled model (guards, recompile limits)
                torch._dynamo.reset()
        ok = {k: v for k, v in row["variants"].items() if "error" not in v}
        if ok and "eager_fp32" in ok:
            best = max(ok, key=lambda k: ok[k]["images_per_s"])
            row["best_variant"] = best
            row["best_speedup_vs_eager_fp32"] = ok[best]["speedup_vs_eager_fp32"]
        out["models"][label] = row

    pre = next((r for k, r in out["models"].items() if k.startswith("pretrain_mim")), None)
    head_row = pre or next(iter(out["models"].values()))
    head_label = next(k for k, r in out["models"].items() if r is head_row)
    if "best_variant" in head_row:  # (needs the eager fp32 baseline)
        best = head_row["variants"][head_row["best_variant"]]
        base = head_row["variants"]["eager_fp32"]
        out["headline"] = {"metric": f"{head_label} images/s ({head_row['best_variant']}, MFU "
                                     f"{best['mfu']:.1%})" if best["mfu"] is not None else
                                     f"{head_label} images/s ({head_row['best_variant']})",
                           "value": best["images_per_s"], "baseline": base["images_per_s"],
                           "baseline_name": "eager fp32, same run", "ratio": head_row["best_speedup_vs_eager_fp32"]}
    return out


def main() -> int:
    from heartbeit.benchsuite import save_figures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ci models at 64 px on a CPU (paper models on CUDA)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = run(args.quick)
    save_figures(figures, args.json)  # run() prints its own table
    return 0


if __name__ == "__main__":
    sys.exit(main())
