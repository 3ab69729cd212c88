"""`heartbeit pretrain`: HeartBEiT masked image modeling."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from heartbeit.config.layout import RunLayout

HELP = """HeartBEiT masked image modeling on the train split's ECG images (BEiT recipe: blockwise masking,
cross-entropy on masked tokens, AdamW + warmup/cosine, layer scale, drop path, gradient clipping).

Single process when pretrain.zero_stage is 0 and the job has one rank; DeepSpeed ZeRO otherwise (the same
loop; launch with torchrun / deepspeed / mpirun / srun). Writes OUT/log.jsonl (loss, masked-token accuracy,
lr, images/s, MFU), checkpoints under OUT/checkpoints (atomic; --resume continues exactly) and the export
OUT/heartbeit-<variant>.safetensors + .json, which fine-tuning loads with
  import heartbeit.models, timm
  timm.create_model("heartbeit_<variant>", pretrained=True, pretrained_cfg_overlay=dict(file=EXPORT), num_classes=2)

Length: pretrain.steps, or (paper) pretrain.epochs over the train split at pretrain.global_batch with the lr
given for pretrain.lr_batch: steps, gradient accumulation, warmup and the scaled lr are derived at start from
the shards' count and the world size, logged, and written to OUT/config.resolved.yaml.

Token grids come from the shards when `heartbeit tokenizer encode` wrote them with the same tokenizer
(pretrain.tokens=auto), else the tokenizer runs on the fly.

Example: heartbeit pretrain --profile ci --images runs/ci/images --tokenizer runs/ci/tokenizer/tokenizer.safetensors --out runs/ci/pretrain"""

log = logging.getLogger("heartbeit.pretrain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("--images", default=None, help="image shard folder (default: <workdir>/images)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer file (default: <workdir>/tokenizer/tokenizer.safetensors)")
    parser.add_argument("--out", default=None, help="output folder (default: <workdir>/pretrain)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow-fewer-gpus", action="store_true",
                        help="train on fewer GPUs than the profile's world_size (refused otherwise)")
    parser.add_argument("--check-allocation", nargs=2, type=int, metavar=("NODES", "GPUS_PER_NODE"), default=None,
                        help="only check that this allocation has the GPUs the profile's pretraining is designed "
                             "for (slurm/pretrain.sh runs it before starting any rank); exit 2 if not")
    # the deepspeed launcher appends --local_rank=N; rank discovery reads the environment instead
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_common_config_args(parser)


def allocation_problem_here(cfg, allocation: list[int] | None) -> str | None:
    """Too few GPUs for the profile's world_size: the given allocation (--check-allocation), else this
    job's ranks (torchrun/srun/mpirun environment) -- nodes x ranks per node."""
    if cfg.allow_cpu or not cfg.world_size:
        return None
    from heartbeit.config.slurm import SiteConfig
    from heartbeit.cost import allocation_problem
    from heartbeit.distributed.env import discover

    if allocation is not None:
        nodes, per_node = allocation
    else:
        denv = discover()
        per_node = max(1, denv.local_world_size)
        nodes = max(1, denv.world_size // per_node)
    return allocation_problem(cfg, SiteConfig(), nodes, per_node)


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config
    from heartbeit.config import write_resolved
    from heartbeit.train.pretrain import pretrain

    from heartbeit.config import ConfigError
    from heartbeit.config.preflight import check_run

    cfg = resolve_config(args)
    problem = None if args.allow_fewer_gpus else allocation_problem_here(cfg, args.check_allocation)
    if args.check_allocation is not None:
        if problem:
            print(f"heartbeit pretrain: {problem}", file=sys.stderr)
            return 2
        print(f"heartbeit pretrain: {args.check_allocation[0]} node(s) x {args.check_allocation[1]} GPU(s): "
              "allocation accepted")
        return 0
    if problem:
        raise ConfigError(problem)
    check_run(cfg, ["pretrain"])
    layout = RunLayout.of(cfg)
    images = Path(args.images) if args.images else layout.images
    tokenizer = Path(args.tokenizer) if args.tokenizer else layout.tokenizer_file
    out = Path(args.out) if args.out else layout.pretrain
    summary = pretrain(cfg, images, tokenizer, out, resume=args.resume, progress=not args.no_progress)
    schedule = summary.get("schedule") or {}
    if schedule:  # the steps, accumulation, lr and warmup this job derived (heartbeit.train.schedule)
        cfg.pretrain = dataclasses.replace(cfg.pretrain, **{k: schedule[k] for k in (
            "steps", "grad_accum", "lr", "min_lr", "warmup_steps")})
    if summary.get("world_size", 1) == 1 or summary.get("export"):
        write_resolved(cfg, out)
    if "final_loss" in summary:
        print(f"pretrain: {summary['steps_done']}/{summary['steps']} steps; masked-token loss "
              f"{summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, accuracy {summary['final_mlm_acc']:.3f} "
              f"(chance {summary['chance_acc']:.4f}); {summary['images_per_s']:.1f} img/s"
              + (f", MFU {summary['mfu']:.1%}" if summary.get("mfu") is not None else ""))
    if summary.get("export"):
        print(f"export: {summary['export']}")
    log.debug("summary %s", json.dumps(summary, default=str))
    return 0
