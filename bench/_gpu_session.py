"""The Python half of bench/gpu_session.sh; not a suite benchmark (no `run(quick)`).

    python bench/_gpu_session.py env   --out results/bench/gpu_env.json
    python bench/_gpu_session.py steps --engine local --out results/bench/gpu_steps_local.json
    torchrun --nproc_per_node 1 bench/_gpu_session.py steps --engine dp --out results/bench/gpu_steps_dp.json

`steps` runs `heartbeit.train.pretrain.pretrain` itself for `--steps` steps of the paper profile's model and
precision (BEiT-B/16, bf16, batch 64) on random images with precomputed tokens (no tokenizer in the step),
on one engine: `local` (one process) or `dp` (the paper profile's data-parallel engine, here at world size
1). Then a short second run under `torch.profiler` counts the CUDA synchronisations per step (and
heartbeit.utils.host_sync counts the syncs our code makes). Figures: images/s and MFU of the last log
window, the MFU peak and its source, syncs per step. `--dry-run` shrinks everything to the ci micro model
on whatever device there is (the suite runs it on a CPU so the script cannot rot).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def _write(path: str, record: dict) -> None:
    from heartbeit.benchsuite import jsonable
    from heartbeit.utils.io import atomic_write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, jsonable(record))
    print(json.dumps(jsonable(record), indent=1)[:3000], flush=True)


def env(args: argparse.Namespace) -> int:
    import torch

    from heartbeit.benchsuite import git_revision, machine_info, versions
    from heartbeit.train.flops import device_peak_flops

    rec: dict = {"kind": "heartbeit-gpu-session-env", "dry_run": args.dry_run, "versions": versions(),
                 "machine": machine_info(), "git_revision": git_revision(), "cuda_available": torch.cuda.is_available(),
                 "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        rec["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rec["driver"] = None
    if torch.cuda.is_available():
        dev = torch.device("cuda", 0)
        props = torch.cuda.get_device_properties(dev)
        peak, source = device_peak_flops(dev, "bf16")
        rec["device"] = {"name": props.name, "sms": props.multi_processor_count,
                         "memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
                         "peak_tflops_bf16": peak / 1e12, "peak_source": source}
    _write(args.out, rec)
    return 0


def _config(args: argparse.Namespace, steps: int):
    from heartbeit.config import load_config

    cfg = load_config("ci" if args.dry_run else "paper").pretrain
    keep = dict(steps=steps, epochs=0.0, warmup_epochs=0.0, global_batch=0, lr_batch=0, grad_accum=1,
                warmup_steps=1, log_every=max(1, min(10, steps // 2)), checkpoint_every=10 * steps,
                num_workers=0, export_at=[], batch_size=args.batch_size or cfg.batch_size)
    # local: one process, no data-parallel engine; dp: the paper profile's data-parallel setting (also dry)
    keep["zero_stage"] = 0 if args.engine == "local" else load_config("paper").pretrain.zero_stage
    import dataclasses

    return dataclasses.replace(cfg, **keep)


def _batches(cfg, vocab: int, grid: int, n: int):
    import numpy as np

    from heartbeit.train.batches import InMemoryBatches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, cfg.image_size, cfg.image_size), dtype=np.uint8)
    tokens = rng.integers(0, vocab, (n, grid, grid))
    return InMemoryBatches(images, cfg.batch_size, seed=0, tokens=tokens)


def steps(args: argparse.Namespace) -> int:
    import torch

    from heartbeit.config import load_config
    from heartbeit.models.tokenizer import KMeansTokenizer
    from heartbeit.train.pretrain import pretrain
    from heartbeit.utils.host_sync import HostSyncProbe

    tok_cfg = load_config("ci" if args.dry_run else "paper")
    cfg = _config(args, args.steps)
    patch = 16 if not args.dry_run else 8
    grid = cfg.image_size // patch
    vocab = tok_cfg.tokenizer.vocab_size
    tokenizer = KMeansTokenizer(vocab, cfg.image_size, patch, centroids=torch.zeros(vocab, patch * patch))
    rec: dict = {"kind": "heartbeit-gpu-session-steps", "engine": args.engine, "dry_run": args.dry_run,
                 "model": cfg.model, "precision": cfg.precision, "zero_stage": cfg.zero_stage,
                 "batch_size": cfg.batch_size, "steps": cfg.steps}
    from heartbeit.train import pretrain as pretrain_module

    build = pretrain_module.build_engine
    if args.engine == "dp" and cfg.zero_stage == 0:
        # the paper's data-parallel engine even at world size 1 (build_engine gives one process the local one)
        from heartbeit.distributed.ddp import DDPEngine as build

    def recording(*a):
        engine = build(*a)
        rec["engine_class"] = type(engine).__name__
        rec["deepspeed_optimizer_path"] = getattr(engine, "optimizer_path", None)
        return engine

    pretrain_module.build_engine = recording
    with tempfile.TemporaryDirectory(prefix="gpu-session-") as tmp:
        t0 = time.perf_counter()
        summary = pretrain(cfg, _batches(cfg, vocab, grid, 4 * cfg.batch_size), tokenizer, Path(tmp) / "run",
                           progress=False, stop_after=cfg.steps)
        rec["wall_s"] = time.perf_counter() - t0
        rec.update({k: summary.get(k) for k in ("images_per_s", "mfu", "peak_flops", "peak_source", "device",
                                                 "world_size", "flops_per_image", "final_loss")})
        # a short profiled run: CUDA synchronisations the runtime saw, and the syncs our own code made
        pcfg = _config(args, args.profile_steps)
        activities = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with torch.profiler.profile(activities=activities) as prof, HostSyncProbe() as probe:
            pretrain(pcfg, _batches(pcfg, vocab, grid, 4 * pcfg.batch_size), tokenizer, Path(tmp) / "profiled",
                     progress=False, stop_after=pcfg.steps)
        events = {e.key: e.count for e in prof.key_averages() if e.key in SYNC_EVENTS}
        rec["profiled_steps"] = pcfg.steps
        rec["cuda_syncs_per_step"] = {k: v / pcfg.steps for k, v in events.items()}
        rec["host_syncs_in_our_code_per_step"] = {k: v / pcfg.steps for k, v in probe.counts.items()}
        rec["host_sync_sites"] = dict(probe.sites.most_common(12))
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        _write(args.out, rec)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("env", "steps"))
    p.add_argument("--out", required=True)
    p.add_argument("--engine", choices=("local", "dp"), default="local")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=0, help="per rank; 0 = the profile's")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    from heartbeit.utils.logging import setup_logging

    setup_logging("INFO")
    return env(args) if args.action == "env" else steps(args)


if __name__ == "__main__":
    sys.exit(main())
