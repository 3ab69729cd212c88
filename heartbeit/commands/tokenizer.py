"""`heartbeit tokenizer train|encode`: the discrete visual tokenizer for masked image modeling."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from heartbeit.config.layout import RunLayout
from heartbeit.records import TOKENIZER_CHECKPOINT, TOKENIZER_FILE, TOKENIZER_METRICS

HELP = """Train the visual tokenizer on the train split's ECG images (or adopt a local tokenizer file), and
optionally precompute every image's token grid into the shards.

  train   fit tokenizer.kind (kmeans: MiniBatchKMeans codebook on blurred 8x8 patches, the ci/demo default;
          vqvae: VQ-VAE with an EMA codebook and dead-code restarts, the paper default) on up to
          tokenizer.max_images train images. Writes OUT/tokenizer.safetensors (config in its metadata),
          OUT/tokenizer_metrics.json (held-out reconstruction error over training, perplexity, dead codes;
          held-out = the first tokenizer.eval_images images of the val split) and config.resolved.yaml.
          --local-file FILE (or tokenizer.local_file) adopts an existing tokenizer instead of training.
  encode  add <key>.tokens.npy (int16 [g, g]) to every sample of IMAGES' shards (deterministic tar bytes,
          atomic per shard, resumable) and write IMAGES/tokens.json; pretraining then reads the grids.
          --task-index I --num-tasks N: only shards I, I+N, ... (a Slurm array task; slurm/encode.sh), then
  gather  once every task is done: index.json and tokens.json, written once

Examples:
  heartbeit tokenizer train --profile ci --images runs/ci/images --out runs/ci/tokenizer
  heartbeit tokenizer encode --profile ci --images runs/ci/images --tokenizer runs/ci/tokenizer/tokenizer.safetensors"""

log = logging.getLogger("heartbeit.tokenizer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from heartbeit.config.cli_args import add_common_config_args

    parser.add_argument("action", choices=("train", "encode", "gather"))
    parser.add_argument("--task-index", type=int, default=None, help="encode: this array task's shards")
    parser.add_argument("--num-tasks", type=int, default=None, help="encode: the array's size")
    parser.add_argument("--images", default=None, help="image shard folder (default: <workdir>/images)")
    parser.add_argument("--out", default=None, help="train: output folder (default: <workdir>/tokenizer)")
    parser.add_argument("--tokenizer", default=None,
                        help="encode: tokenizer file (default: <workdir>/tokenizer/tokenizer.safetensors)")
    parser.add_argument("--local-file", default=None, help="train: adopt this tokenizer (.safetensors) instead")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_config_args(parser)


def _train(cfg, images: Path, out: Path, local_file: str, progress: bool) -> int:
    from heartbeit.config import to_dict, write_resolved
    from heartbeit.models.tokenizer import Tokenizer
    from heartbeit.train.batches import ShardBatches, shard_eval_images
    from heartbeit.train.tokenizer_train import evaluate_tokenizer, train_tokenizer
    from heartbeit.utils.io import atomic_write_json, atomic_path, sha256_file

    tcfg = cfg.tokenizer
    target, metrics_path = out / TOKENIZER_FILE, out / TOKENIZER_METRICS
    if target.is_file() and metrics_path.is_file():
        done = json.loads(metrics_path.read_text())
        if done.get("tokenizer_config") == to_dict(tcfg) and done.get("sha256") == sha256_file(target):
            log.info("tokenizer already complete in %s (same config); skipping", out)
            return 0
    eval_images = shard_eval_images(images, tcfg.eval_images, split="val")
    if local_file:
        tok = Tokenizer.load(local_file)
        with atomic_path(target) as tmp:
            shutil.copyfile(local_file, tmp)
        metrics = {"kind": tok.kind, "config": tok.config(), "source": "local_file",
                   "eval_images": len(eval_images), "final": evaluate_tokenizer(tok, eval_images)}
    else:
        import torch

        from heartbeit.distributed.preempt import STOPPED_EXIT, Stopped

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cpu":  # every CPU the job was given (slurm/prepare.sh sets OMP_NUM_THREADS=1 for
            torch.set_num_threads(allotted_cpus())  # the loader processes of the other stages)
        log.info("tokenizer: training on %s%s", device, f" with {torch.get_num_threads()} threads"
                 if device.type == "cpu" else "")
        source = ShardBatches(images, tcfg.batch_size, seed=tcfg.seed)
        checkpoint = out / TOKENIZER_CHECKPOINT  # a stopped or killed run resumes from it
        try:
            tok, metrics = train_tokenizer(tcfg, _capped(source, tcfg.max_images, tcfg.batch_size), eval_images,
                                           progress, device=device, checkpoint=checkpoint)
        except Stopped as exc:
            print(f"heartbeit tokenizer: {exc}; rerun to resume")
            return STOPPED_EXIT
        tok.save(target)
        checkpoint.unlink(missing_ok=True)
        metrics.update(source="trained", device=str(device))
    metrics.update(tokenizer_config=to_dict(tcfg), sha256=sha256_file(target), file=str(target))
    atomic_write_json(metrics_path, metrics)
    write_resolved(cfg, out)
    final = metrics["final"]
    print(f"tokenizer ({tok.kind}, {tok.vocab_size} codes, {tok.grid_size}x{tok.grid_size} grid) -> {target}\n"
          f"held-out reconstruction MSE {final['recon_mse']:.5f}, perplexity {final['perplexity']:.1f}, "
          f"dead codes {final['dead_codes']}/{tok.vocab_size}")
    return 0


def allotted_cpus() -> int:
    """The CPUs this process may use: Slurm's allotment, else its affinity mask."""
    import os

    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _capped(source, max_images: int, batch_size: int):
    """Cycle over at most `max_images` distinct train images: the first epoch's first batches, repeated."""
    keep: list = []
    for batch in source:
        keep.append(batch)
        if len(keep) * batch_size >= max_images:
            break
    while True:
        yield from keep


def run(args: argparse.Namespace) -> int:
    from heartbeit.config.cli_args import resolve_config

    cfg = resolve_config(args)
    images = Path(args.images) if args.images else RunLayout.of(cfg).images
    if args.action == "train":
        out = Path(args.out) if args.out else RunLayout.of(cfg).tokenizer_dir
        return _train(cfg, images, out, args.local_file or cfg.tokenizer.local_file, not args.no_progress)
    from heartbeit.train.tokenizer_train import encode_shards, gather_tokens

    tok_file = Path(args.tokenizer) if args.tokenizer else RunLayout.of(cfg).tokenizer_file
    if args.action == "gather":
        record = gather_tokens(images, tok_file)
        print(f"token grids of {len(record['shards'])} shards recorded in {images}/index.json and tokens.json")
        return 0
    if (args.task_index is None) != (args.num_tasks is None):
        print("heartbeit tokenizer encode: --task-index and --num-tasks go together", file=sys.stderr)
        return 2
    if args.task_index is not None:
        result = encode_shards(images, tok_file, progress=not args.no_progress, task=(args.task_index, args.num_tasks))
        print(f"task {args.task_index} of {args.num_tasks}: {result['encoded']} shards encoded, {result['skipped']} "
              "already current (then `heartbeit tokenizer gather`)")
        return 0
    result = encode_shards(images, tok_file, progress=not args.no_progress)
    print(f"token grids ({result['grid']}x{result['grid']}) in {len(result['shards'])} shards of {images}: "
          f"{result['encoded']} encoded, {result['skipped']} already current")
    return 0
