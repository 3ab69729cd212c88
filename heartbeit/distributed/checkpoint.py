"""Checkpoints that survive preemption: DeepSpeed's partitioned model/optimizer files plus our own per-rank
state (loader position, RNGs, schedule, step) in one tag directory that appears complete or not at all.

Layout under `ckpt_dir` (which must be on a filesystem every node sees, as Slurm clusters provide):

    latest                        the last complete tag, written last and atomically
    <tag>/                        DeepSpeed's files (mp_rank_*_model_states.pt, *optim_states.pt)
    <tag>/heartbeit_rank<r>.pt    rank r's client state (tensors and plain containers only)
    <tag>/heartbeit.json          world size, ZeRO stage, precision, time: checked on resume

All ranks write into `.<tag>.partial/<tag>/`; after a barrier rank 0 renames the tag directory into place
and then rewrites `latest`, so a job killed at any instant leaves either the previous checkpoint or the
new one. Our files load with `torch.load(weights_only=True)`: no unpickling of arbitrary objects.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from heartbeit.distributed.engine import LATEST, CheckpointError, latest_tag
from heartbeit.records import ENGINE_MANIFEST as MANIFEST, ENGINE_RANK_STATE
from heartbeit.utils.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from .deepspeed import DeepSpeedEngine

log = logging.getLogger("heartbeit.distributed")


def rank_state_path(tag_dir: Path, rank: int) -> Path:
    return Path(tag_dir) / ENGINE_RANK_STATE.format(rank)


def write_rank_state(tag_dir: Path, rank: int, state: dict) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(rank_state_path(tag_dir, rank), buf.getvalue())


def read_rank_state(tag_dir: Path, rank: int) -> dict:
    path = rank_state_path(tag_dir, rank)
    if not path.is_file():
        raise CheckpointError(f"{tag_dir}: no state for rank {rank} ({path.name} missing)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"{path}: cannot read rank state: {exc}") from None


def save(engine: "DeepSpeedEngine", ckpt_dir: Path, tag: str, client_state: dict) -> None:
    """Collective: every rank calls it with its own client_state."""
    ckpt_dir = Path(ckpt_dir)
    staging = ckpt_dir / f".{tag}.partial"
    if engine.rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # a previous attempt that died half-way
    engine.barrier()
    t0 = time.perf_counter()
    # Our state goes in our own per-rank files; DeepSpeed's client_state would pickle rank 0's only.
    engine.ds_engine.save_checkpoint(str(staging), tag=tag, client_state={}, save_latest=False)
    write_rank_state(staging / tag, engine.rank, client_state)
    engine.barrier()
    if engine.rank == 0:
        atomic_write_json(staging / tag / MANIFEST, {
            "world_size": engine.world_size, "zero_stage": engine.zero_stage,
            "precision": engine.cfg.precision, "tag": tag, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        final = ckpt_dir / tag
        if final.exists():  # re-saving a tag (a resumed run reaching the same step): replace it whole
            old = ckpt_dir / f".{tag}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging / tag, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging / tag, final)
        shutil.rmtree(staging, ignore_errors=True)
        atomic_write_text(ckpt_dir / LATEST, tag + "\n")
        prune(ckpt_dir, keep=int(getattr(engine.cfg, "keep_checkpoints", 0) or 0), latest=tag)
        log.info("checkpoint %s written in %.2f s", final, time.perf_counter() - t0)
    engine.barrier()


def prune(ckpt_dir: Path, keep: int, latest: str) -> None:
    """Keep the newest `keep` complete tags (0 = all); the one `latest` names always stays."""
    if keep <= 0:
        return
    tags = sorted((p for p in Path(ckpt_dir).iterdir() if p.is_dir() and (p / MANIFEST).is_file()),
                  key=lambda p: p.stat().st_mtime_ns)
    for old in tags[:-keep]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def load(engine: "DeepSpeedEngine", ckpt_dir: Path, tag: str | None = None) -> dict | None:
    """Collective. Returns this rank's client_state, or None when `ckpt_dir` holds no checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    tag = tag or latest_tag(ckpt_dir)
    if tag is None:
        return None
    tag_dir = ckpt_dir / tag
    manifest_path = tag_dir / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{tag_dir}: not a complete heartbeit checkpoint ({MANIFEST} missing)")
    manifest = json.loads(manifest_path.read_text())
    if manifest["world_size"] != engine.world_size:
        raise CheckpointError(
            f"{tag_dir}: saved by {manifest['world_size']} ranks, resuming with {engine.world_size}; per-rank "
            "data positions cannot be remapped exactly. Resume with the same number of ranks, or export "
            "the weights (consolidate_fp32) and start a new run from them.")
    if manifest["zero_stage"] != engine.zero_stage:
        raise CheckpointError(f"{tag_dir}: saved under ZeRO stage {manifest['zero_stage']}, "
                              f"resuming under stage {engine.zero_stage}")
    engine.ds_engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_strict=True,
                                     load_optimizer_states=True, load_lr_scheduler_states=False)
    state = read_rank_state(tag_dir, engine.rank)
    log.info("resumed from %s", tag_dir)
    return state


def consolidate_fp32(ckpt_dir: Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    """Full fp32 state dict from a ZeRO (1/2/3) checkpoint, without starting any process group: the offline
    path from a sharded checkpoint to a single exportable file."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt_dir = Path(ckpt_dir)
    tag = tag or latest_tag(ckpt_dir)
    if tag is None:
        raise CheckpointError(f"{ckpt_dir}: no checkpoint to consolidate ({LATEST} missing)")
    manifest = json.loads((ckpt_dir / tag / MANIFEST).read_text())
    if manifest["zero_stage"] == 0:
        raise CheckpointError(f"{ckpt_dir / tag}: ZeRO stage 0 checkpoints are not partitioned; "
                              "use the full state dict the run exported")
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous() for k, v in state.items()}


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> Path:
    """Atomic safetensors export of a (consolidated) state dict."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    """`python -m heartbeit.distributed.checkpoint CKPT_DIR OUT.safetensors [--tag TAG]`: consolidate a
    sharded ZeRO checkpoint into one fp32 safetensors file, offline (no GPUs, no process group)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0].strip("`"))
    p.add_argument("ckpt_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--tag", default=None, help="checkpoint tag (default: the one `latest` names)")
    args = p.parse_args(argv)
    try:
        state = consolidate_fp32(args.ckpt_dir, args.tag)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_safetensors(state, args.out, metadata={"source": str(args.ckpt_dir), "tag": args.tag or latest_tag(args.ckpt_dir)})
    print(f"wrote {args.out} ({len(state)} tensors, {sum(v.numel() for v in state.values()):,} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
