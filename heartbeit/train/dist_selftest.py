"""A small, exactly-resumable distributed training job: the same code path the pretraining loop takes
(launcher discovery -> DeepSpeed ZeRO engine -> per-rank data -> checkpoints -> fp32 export), on a tiny
model and deterministic synthetic data, so every launcher and ZeRO stage can be checked in seconds.

    torchrun --nproc_per_node 2 -m heartbeit.train.dist_selftest --zero-stage 2 --steps 8 --out w.safetensors
    deepspeed --num_gpus 2 --module heartbeit.train.dist_selftest ...     (CPU: DeepSpeed picks gloo)
    mpirun -np 2 python -m heartbeit.train.dist_selftest ...
    sbatch slurm/pretrain.sh  with HEARTBEIT_ENTRY="-m heartbeit.train.dist_selftest"

Exact resume: the run's client state holds the step, the micro-step (= data position: rank r's k-th
micro-batch is global batch k * world + r), the torch RNG (dropout) and the rank's numpy Generator (input
masking), so N straight steps and N/2 + restart + N/2 produce the same weights.

It sits in train/, not distributed/, because it builds HeartBEiT models and counts their FLOPs: distributed/
imports neither models/ nor train/.
"""
from __future__ import annotations

import argparse
import logging
import math
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("heartbeit.train.dist_selftest")

IN_DIM, HIDDEN, OUT_DIM = 16, 32, 8


class TinyNet(nn.Module):
    """LayerNorm, dropout and a floating buffer: the parts of a ViT that make bf16 and resume tricky."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IN_DIM, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(HIDDEN, OUT_DIM)
        self.register_buffer("input_scale", torch.linspace(0.5, 1.5, IN_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(nn.functional.gelu(self.norm(self.fc1(x * self.input_scale)))))


def teacher(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(IN_DIM, OUT_DIM, generator=g) / math.sqrt(IN_DIM)


def batch(seed: int, micro_step: int, rank: int, world: int, batch_size: int, weights: torch.Tensor):
    """Rank r's micro-batch k is global batch k * world + r: disjoint across ranks, a pure function of
    the position, so the loader state is one integer."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + micro_step * world + rank)
    x = torch.randn(batch_size, IN_DIM, generator=g)
    return x, torch.tanh(x @ weights)


MIM_VOCAB = 64


def mim_batch(seed: int, micro_step: int, rank: int, world: int, batch_size: int, chans: int, img_size: int,
              patch: int, mask_rng: np.random.Generator):
    """uint8 images, their token grids and 40 % of each image's patches masked (index masks [B, n_masked],
    ascending, from the rank's numpy stream), as pretraining's batches carry them."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + micro_step * world + rank)
    n = (img_size // patch) ** 2
    images = torch.randint(0, 256, (batch_size, chans, img_size, img_size), generator=g, dtype=torch.uint8)
    tokens = torch.randint(0, MIM_VOCAB, (batch_size, n), generator=g)
    order = np.argsort(mask_rng.random((batch_size, n)), axis=1)[:, :max(1, int(0.4 * n))]
    return images, tokens, torch.from_numpy(np.sort(order, axis=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny",
                   help="tiny (a small MLP) or a heartbeit_* architecture trained by MIM on random images")
    p.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--engine", default="deepspeed", choices=["deepspeed", "ddp"],
                   help="deepspeed (ZeRO --zero-stage) or ddp (torch DDP, the paper's path; --zero-stage 0)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=8, help="optimizer steps in the whole run")
    p.add_argument("--stop-after", type=int, default=None, help="checkpoint and exit after this step")
    p.add_argument("--checkpoint-every", type=int, default=0, help="0 = only at stop/end")
    p.add_argument("--batch-size", type=int, default=4, help="per rank")
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="final fp32 weights (safetensors), rank 0")
    p.add_argument("--metrics", type=Path, default=None, help="run summary (JSON), rank 0")
    p.add_argument("--log-dir", type=Path, default=None, help="per-rank log files")
    p.add_argument("--step-delay", type=float, default=0.0,
                   help="sleep per step (seconds): lets tests deliver a signal mid-run")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    return p.parse_args(argv)


def make_config(args: argparse.Namespace):
    from heartbeit.config.pretrain import PretrainConfig

    cfg = PretrainConfig(zero_stage=args.zero_stage, precision=args.precision, batch_size=args.batch_size,
                         grad_accum=args.grad_accum, lr=args.lr, clip_grad=args.clip_grad, weight_decay=0.05,
                         steps=args.steps, seed=args.seed)
    cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from heartbeit.distributed.env import discover
    from heartbeit.distributed.observe import peak_memory_bytes, setup_rank_logging
    from heartbeit.distributed.preempt import StopRequest, mark_checkpointed
    from heartbeit.train.mim import MimStep
    from heartbeit.train.schedule import lr_at
    from heartbeit.train.throughput import Throughput

    denv = discover()
    setup_rank_logging(args.log_dir, denv.rank)
    stop = StopRequest()
    cfg = make_config(args)

    if args.engine == "ddp" and args.zero_stage != 0:
        raise SystemExit("--engine ddp is data parallelism without partitioning: use --zero-stage 0")
    if args.engine == "deepspeed":
        from heartbeit.distributed.deepspeed import prepare_deepspeed

        prepare_deepspeed()
    # host memory of the interpreter, torch and DeepSpeed before the model exists (GPU memory starts at 0)
    baseline_rss = 0 if torch.cuda.is_available() else peak_memory_bytes(torch.device("cpu"))
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    if args.model == "tiny":
        model = TinyNet()
    else:
        from heartbeit.models.heartbeit import create_mim_model

        model = create_mim_model(args.model, vocab_size=MIM_VOCAB)
        chans, img_size, patch = (model.patch_embed.proj.in_channels, model.patch_embed.img_size[0],
                                  model.patch_embed.patch_size[0])
    if args.engine == "ddp":
        from heartbeit.distributed.ddp import DDPEngine

        engine = DDPEngine(model, [{"params": [p for p in model.parameters() if p.requires_grad]}], cfg)
    else:
        from heartbeit.distributed.deepspeed import build_deepspeed_engine

        engine = build_deepspeed_engine(model, None, cfg)
    rank, world = engine.rank, engine.world_size
    log.info("rank %d of %d on host %s (launcher %s, local rank %d)", rank, world, socket.gethostname(),
             denv.launcher, engine.local_rank)

    step, micro_step = 0, 0
    torch.manual_seed(args.seed + 1 + rank)  # dropout stream, per rank
    mask_rng = np.random.default_rng([args.seed, rank])
    state = engine.load_checkpoint(args.ckpt_dir) if args.ckpt_dir else None
    if state is not None:
        step, micro_step = int(state["step"]), int(state["micro_step"])
        torch.set_rng_state(state["torch_rng"])
        mask_rng.bit_generator.state = state["mask_rng"]
        if rank == 0:
            log.info("resuming at step %d (micro-step %d)", step, micro_step)

    def client_state() -> dict:
        return {"step": step, "micro_step": micro_step, "torch_rng": torch.get_rng_state(),
                "mask_rng": mask_rng.bit_generator.state, "launcher": denv.launcher, "lr": engine.get_lr()}

    weights = teacher(args.seed)
    mim_step = None if args.model == "tiny" else MimStep(engine, cfg.precision, img_size)
    first_step = step
    flops_per_image = None
    if args.model != "tiny":
        from heartbeit.train.flops import mim_train_flops_per_image

        n_patches = (img_size // patch) ** 2
        flops_per_image = mim_train_flops_per_image(args.model, img_size, MIM_VOCAB, int(0.4 * n_patches))
    meter = Throughput(flops_per_sample=flops_per_image, precision=cfg.precision)
    meter.start()
    losses: list[float] = []
    stopped_early = False
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=args.steps, initial=step, desc=f"zero{cfg.zero_stage} x{world}", file=sys.stderr,
                        disable=None)
    while step < args.steps:
        engine.set_lr(lr_at(step, args.lr, max(1, args.steps // 4), args.steps, args.lr / 10))
        window_loss = 0.0
        for _ in range(cfg.grad_accum):
            if args.model == "tiny":
                x, y = batch(args.seed, micro_step, rank, world, args.batch_size, weights)
                x[torch.from_numpy(mask_rng.random(x.shape) < 0.1)] = 0.0  # "masking": a per-rank numpy stream
                loss = nn.functional.mse_loss(engine.model(x.to(engine.device)), y.to(engine.device))
                engine.backward(loss)
                stepped = engine.step()
                window_loss += float(loss.detach()) / cfg.grad_accum
            else:  # the pretraining loop's own MIM step (train/mim.py)
                stepped = mim_step(*mim_batch(args.seed, micro_step, rank, world, args.batch_size, chans,
                                              img_size, patch, mask_rng))
            micro_step += 1
            meter.add(args.batch_size)
        assert stepped, "the accumulation window must end on an optimizer step"
        if mim_step is not None:
            window_loss = mim_step.read()[0]  # the self-test reports every step's loss
        step += 1
        if step == first_step + 1 and step < args.steps:
            meter.start()  # the first step allocates buffers and partitions: time from the second on
        else:
            meter.add(0, steps=1)
        losses.append(engine.all_reduce_mean(window_loss))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        if args.step_delay:
            time.sleep(args.step_delay)
        interrupted = stop.should_stop(engine)
        at_stop = args.stop_after is not None and step == args.stop_after
        periodic = args.checkpoint_every and step % args.checkpoint_every == 0
        if args.ckpt_dir and (interrupted or at_stop or periodic or step == args.steps):
            engine.save_checkpoint(args.ckpt_dir, f"step{step:08d}", client_state())
        if (interrupted or at_stop) and step < args.steps:
            stopped_early = True
            if interrupted:
                mark_checkpointed()
            log.warning("stopping at step %d with a checkpoint (%s)", step,
                        "stop requested" if interrupted else "--stop-after")
            break
    if progress is not None:
        progress.close()

    summary = meter.summary(engine, baseline_bytes=baseline_rss)
    if not stopped_early and args.out:
        full = engine.full_state_dict()  # collective
        if rank == 0:
            from heartbeit.distributed.checkpoint import save_safetensors

            save_safetensors(full, args.out, metadata={"zero_stage": cfg.zero_stage, "steps": step})
    if rank == 0:
        summary.update(model=args.model, launcher=denv.launcher, engine=args.engine, zero_stage=cfg.zero_stage, precision=cfg.precision, step=step,
                       stopped_early=stopped_early, final_loss=losses[-1] if losses else None,
                       grad_norm=engine.grad_norm())
        log.info("done: step %d, %.1f images/s over %d ranks, peak memory per rank %s MiB", step,
                 summary["images_per_s"], world,
                 [round(b / 2**20) for b in summary["peak_memory_bytes_per_rank"]])
        if args.metrics:
            from heartbeit.utils.io import atomic_write_json

            atomic_write_json(args.metrics, summary)
    engine.barrier()
    from heartbeit.distributed.env import destroy

    destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
