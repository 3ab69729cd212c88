"""Fit a visual tokenizer on ECG images (`heartbeit tokenizer train`), reporting reconstruction error and
codebook usage on held-out images as it goes.

Both kinds read the same endless batch source (heartbeit.train.batches) for `steps` batches:
* kmeans: one MiniBatchKMeans.partial_fit per batch of images (all their patches) - the streaming form of
  mini-batch k-means, so the data never has to fit in memory and the error curve is observable;
* vqvae: one Adam step per batch on reconstruction + commitment loss; the codebook follows EMA cluster
  means and codes unused for a while restart on encoder outputs. It trains on `device` (the GPU when the
  job has one) and, with a `checkpoint` file, saves its whole state (weights, optimizer, the restart
  generator, every RNG, step, curves) at each evaluation point and when a stop is requested (Slurm's
  pre-limit signal: heartbeit/distributed/preempt.py), and a rerun continues from there to the same bytes.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from heartbeit.config import TokenizerConfig
from heartbeit.models.tokenizer import KMeansTokenizer, Tokenizer, VQVAETokenizer, build_tokenizer, codebook_usage
from heartbeit.records import IMAGES_INDEX, IMAGES_TOKENS
from heartbeit.train.batches import ImageBatch
from heartbeit.train.rng import rng_state

log = logging.getLogger("heartbeit.tokenizer")


def evaluate_tokenizer(tokenizer: Tokenizer, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Held-out reconstruction error (mean over images) and codebook usage."""
    errors, weights, tokens = [], [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        errors.append(tokenizer.reconstruction_error(chunk))
        weights.append(len(chunk))
        tokens.append(tokenizer.encode(chunk))
    usage = codebook_usage(torch.cat(tokens), tokenizer.vocab_size)
    return {"recon_mse": float(np.average(errors, weights=weights)), **usage}


def _kmeans_step(tok: KMeansTokenizer, km, images: torch.Tensor, pending: list[np.ndarray]) -> bool:
    """Feed one batch to MiniBatchKMeans; the first call waits until there are enough patches to seed
    k-means++ (several per code). Returns whether the model was updated."""
    pending.append(tok.patches(images).reshape(-1, tok.patch_size ** 2).numpy().astype(np.float64))
    if not hasattr(km, "cluster_centers_") and sum(len(p) for p in pending) < 4 * tok.vocab_size:
        return False
    km.partial_fit(np.concatenate(pending))
    pending.clear()
    tok.centroids = torch.from_numpy(km.cluster_centers_).to(torch.float32)
    return True


def _save_state(path, state: dict, loop: dict) -> None:
    """Tensors and torch's own state dicts as they are; the loop's curves as plain containers."""
    from heartbeit.train.cell_checkpoint import encode
    from heartbeit.utils.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({**state, "loop": encode(loop)}, tmp)


def train_tokenizer(cfg: TokenizerConfig, batches: Iterable[ImageBatch], eval_images: torch.Tensor,
                    progress: bool = True, device: torch.device | str = "cpu",
                    checkpoint=None) -> tuple[Tokenizer, dict[str, Any]]:
    """Fit a `cfg.kind` tokenizer on `cfg.steps` (vqvae) / `cfg.kmeans_steps` (kmeans) batches. vqvae:
    on `device`, resumable from `checkpoint` (a file path; kmeans refits in minutes and does not resume)."""
    torch.manual_seed(cfg.seed)
    extra = dict(hidden=cfg.vq_hidden, code_dim=cfg.vq_code_dim) if cfg.kind == "vqvae" else {}
    tok = build_tokenizer(cfg.kind, cfg.vocab_size, cfg.input_size, cfg.patch_size, **extra)
    if isinstance(tok, VQVAETokenizer):
        tok.to(device)
    steps = cfg.kmeans_steps if cfg.kind == "kmeans" else cfg.steps
    eval_every = max(1, steps // cfg.eval_points)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    seen = 0
    if isinstance(tok, KMeansTokenizer):
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=cfg.vocab_size, random_state=cfg.seed, n_init=1,
                             reassignment_ratio=0.01, init="k-means++")
        pending: list[np.ndarray] = []
    else:
        assert isinstance(tok, VQVAETokenizer)
        optimizer = torch.optim.Adam(tok.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        tok.train()
    restarts: list[int] = []  # vqvae: codes restarted at each step
    stream = iter(batches)
    start, stop = 1, None
    if isinstance(tok, VQVAETokenizer) and checkpoint is not None:
        from heartbeit.distributed.preempt import StopRequest

        stop = StopRequest()
        if checkpoint.is_file():
            from heartbeit.train.cell_checkpoint import decode
            from heartbeit.train.rng import set_rng_state

            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state.update(decode(state.pop("loop")))
            if state.get("config") == dict(vars(cfg)) and state["step"] < steps:
                tok.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                generator.set_state(state["generator"])
                set_rng_state(state["rng"])
                history, restarts, seen = state["history"], state["restarts"], state["seen"]
                for _ in range(state["step"]):  # the batch stream is a fixed cycle: skip what was trained
                    next(stream)
                start = state["step"] + 1
                log.info("tokenizer: resumed at step %d of %d", state["step"], steps)

    def save(at_step: int) -> None:
        _save_state(checkpoint, {"model": tok.state_dict(), "optimizer": optimizer.state_dict(),
                                 "generator": generator.get_state(), "rng": rng_state()},
                    {"config": dict(vars(cfg)), "step": at_step, "history": history, "restarts": restarts,
                     "seen": seen})

    bar = tqdm(range(start, steps + 1), desc=f"tokenizer {cfg.kind}", disable=not progress, leave=False,
               initial=start - 1, total=steps)
    for step in bar:
        images = next(stream).images
        seen += len(images)
        stats: dict[str, Any] = {}
        if isinstance(tok, KMeansTokenizer):
            if not _kmeans_step(tok, km, images, pending):
                continue
        else:
            loss, stats = tok.training_step(images, generator, cfg.vq_restart_below)
            restarts.append(int(stats["restarted_codes"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if step % eval_every == 0 or step == steps or not history:
            if isinstance(tok, VQVAETokenizer):
                tok.eval()
            point = {"step": step, "images_seen": seen, **evaluate_tokenizer(tok, eval_images), **stats}
            if restarts:  # since the previous point
                since = restarts[history[-1]["step"]:] if history else restarts
                point["restarts_since_last"] = int(sum(since))
                point["max_restarts_per_step"] = int(max(since))
            if isinstance(tok, VQVAETokenizer):
                tok.train()
            history.append(point)
            if stop is not None and step < steps:
                save(step)  # every evaluation point is a resume point
            bar.set_postfix(mse=f"{point['recon_mse']:.4f}", ppl=f"{point['perplexity']:.1f}")
            log.info("tokenizer step %d: held-out recon MSE %.5f, perplexity %.1f, dead codes %d%s",
                     step, point["recon_mse"], point["perplexity"], point["dead_codes"],
                     f"; batch perplexity {point['batch_perplexity']:.1f}, {point['batch_used_codes']} codes used, "
                     f"{point['restarts_since_last']} restarts (at most {point['max_restarts_per_step']} in a step)"
                     if "restarts_since_last" in point else "")
        if stop is not None and stop.local and step < steps:
            from heartbeit.distributed.preempt import Stopped, mark_checkpointed

            save(step)
            mark_checkpointed()
            stop.close()
            raise Stopped(f"tokenizer: stopped at step {step} of {steps} with a checkpoint")
    if stop is not None:
        stop.close()
    if isinstance(tok, VQVAETokenizer):
        tok.eval()
        tok.to("cpu")
    if not history:
        raise RuntimeError(f"tokenizer saw {seen} images: too few patches to seed {cfg.vocab_size} codes")
    final = history[-1]
    metrics = {
        "kind": cfg.kind, "config": tok.config(), "steps": steps, "images_seen": seen,
        "eval_images": int(len(eval_images)), "seconds": round(time.perf_counter() - t0, 3),
        "recon_error_space": "patch" if cfg.kind == "kmeans" else "image",
        "first": history[0], "final": final, "history": history,
    }
    if restarts:
        metrics["restarts_per_step"] = restarts
    return tok, metrics


# ------------------------------------------------------------------------------ precomputed token grids
def _tokens_bytes(grid: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(grid.astype(np.int16 if grid.max(initial=0) < 2 ** 15 else np.int32)),
            allow_pickle=False)
    return buf.getvalue()


def encode_shards(images_dir, tokenizer_file, batch_size: int = 256, progress: bool = True,
                  task: tuple[int, int] | None = None) -> dict[str, Any]:
    """Add `<key>.tokens.npy` (int16 [g, g]) to every sample of every shard listed in IMAGES/index.json.

    Each tar is rewritten with deterministic bytes (heartbeit.data.corpus.write_shard: sorted members,
    mtime 0) and renamed into place; its sidecar records the new sha256 and the tokenizer's (the render
    plan digest is unchanged, so `heartbeit render` still sees the shard as complete). A shard whose sidecar
    already names this tokenizer is skipped, so an interrupted run resumes.

    `task` = (i, n): encode only shards i, i + n, ... (one task of a Slurm array, `heartbeit tokenizer encode
    --task-index i --num-tasks n`) and leave the index alone; `gather_tokens` then writes index.json and
    IMAGES/tokens.json once. Without `task`, every shard, then the gather."""
    from pathlib import Path

    from heartbeit.data.corpus import write_shard
    from heartbeit.data.members import read_samples, write_member_index
    from heartbeit.data.shard_format import decode_image
    from heartbeit.utils.io import atomic_write_json, sha256_file

    images_dir, tokenizer_file = Path(images_dir), Path(tokenizer_file)
    index = _read_index(images_dir)
    ext = index.get("image_ext", "png")
    tok = Tokenizer.load(tokenizer_file)
    if torch.cuda.is_available() and hasattr(tok, "to"):
        tok.to("cuda")  # the job's GPU, when it has one
    tok_sha = sha256_file(tokenizer_file)
    shards = [entry for info in index["splits"].values() for entry in info["shards"]]
    if task is not None:
        i, n = task
        if not 0 <= i < n:
            raise ValueError(f"task index {i} is not in 0..{n - 1}")
        shards = shards[i::n]
    done = skipped = 0
    for entry in tqdm(shards, desc="encode shards", disable=not progress):
        tar_path = images_dir / entry["name"]
        side_path = tar_path.with_suffix(".json")
        side = json.loads(side_path.read_text()) if side_path.is_file() else {}
        if side.get("tokenizer_sha256") == tok_sha and side.get("sha256") == sha256_file(tar_path):
            skipped += 1
            continue
        try:  # the shards' own reader (heartbeit.data.members); samples back to their member names
            members = {f"{s['__key__']}.{name}": data for s in read_samples(tar_path)
                       for name, data in s.items() if not name.startswith("__")}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{tar_path}: unreadable shard ({exc})") from None
        members = {n: b for n, b in members.items() if not n.endswith(".tokens.npy")}
        keys = sorted(n[: -len(ext) - 1] for n in members if n.endswith(f".{ext}"))
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            try:
                images = np.stack([decode_image(members[f"{k}.{ext}"], ext) for k in chunk])
            except Exception as exc:
                raise ValueError(f"{tar_path}: cannot decode images ({exc})") from None
            grids = tok.encode(torch.from_numpy(images)[:, None]).cpu().numpy()
            for k, grid in zip(chunk, grids):
                members[f"{k}.tokens.npy"] = _tokens_bytes(grid)
        write_shard(tar_path, members.items())
        write_member_index(tar_path)  # the rewritten tar's sample byte ranges (heartbeit.data.members)
        sha, size = sha256_file(tar_path), tar_path.stat().st_size
        atomic_write_json(side_path, {**side, "sha256": sha, "bytes": size, "tokenizer_sha256": tok_sha})
        done += 1
    log.info("token grids written: %d shards encoded, %d already current%s", done, skipped,
             f" (task {task[0]} of {task[1]})" if task else "")
    if task is not None:
        return {"encoded": done, "skipped": skipped, "shards": len(shards)}
    return {"encoded": done, "skipped": skipped, **gather_tokens(images_dir, tokenizer_file)}


def _read_index(images_dir) -> dict:
    index_path = images_dir / IMAGES_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{images_dir}: no index.json (run `heartbeit render` to completion first)")
    return json.loads(index_path.read_text())


def gather_tokens(images_dir, tokenizer_file) -> dict[str, Any]:
    """After every encoding task: each shard's new sha256 and size from its sidecar into index.json, then
    IMAGES/tokens.json (which tells pretraining the grids are there), each written once. Refuses, naming
    them, while any shard's sidecar does not name this tokenizer (a task not finished)."""
    from pathlib import Path

    from heartbeit.utils.io import atomic_write_json, sha256_file

    images_dir, tokenizer_file = Path(images_dir), Path(tokenizer_file)
    index = _read_index(images_dir)
    tok = Tokenizer.load(tokenizer_file)
    tok_sha = sha256_file(tokenizer_file)
    shards = [entry for info in index["splits"].values() for entry in info["shards"]]
    missing = []
    for entry in shards:
        side_path = (images_dir / entry["name"]).with_suffix(".json")
        side = json.loads(side_path.read_text()) if side_path.is_file() else {}
        if side.get("tokenizer_sha256") != tok_sha:
            missing.append(entry["name"])
            continue
        entry.update(sha256=side["sha256"], bytes=side["bytes"])
    if missing:
        raise ValueError(f"{len(missing)} shard(s) not encoded with this tokenizer yet (first: {missing[0]}): run "
                         "the remaining `heartbeit tokenizer encode` tasks first")
    atomic_write_json(images_dir / IMAGES_INDEX, index)
    record = {"tokenizer_sha256": tok_sha, "tokenizer": tok.config(), "grid": tok.grid_size,
              "vocab_size": tok.vocab_size, "shards": {e["name"]: e["sha256"] for e in shards}}
    atomic_write_json(images_dir / IMAGES_TOKENS, record)
    return record
