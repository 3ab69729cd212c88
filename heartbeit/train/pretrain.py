"""HeartBEiT masked image modeling, readable top to bottom (nanoGPT style).

    pretrain(cfg, images_dir_or_batches, tokenizer, out_dir, resume=False) -> summary dict

One optimizer step = `grad_accum` micro batches of `batch_size` images per rank. For each image: blockwise-
mask `mask_patches` of the patch grid (drawn in the loader's workers, seeded by the run's seed, the epoch and
the image's key: models.masking.MaskSampler), replace their embeddings with the mask token, and predict the
tokenizer's code of every masked patch (cross-entropy on the masked positions only: train/mim.py, the one
MIM step). The learning rate is a pure function of the global step (linear warmup, cosine to min_lr), so a
resumed run follows the same schedule.

The host never waits for the device between log steps: the step makes no sync, the loss and
accuracy are summed on the device and read every `log_every` steps, and the stop request (a collective
under DeepSpeed) is checked on those steps too, so a pre-limit signal is acted on within `log_every` steps.

Everything about distribution lives behind `engine` (heartbeit.distributed.engine): the same file runs on
one CPU, one GPU, or N ranks under DeepSpeed ZeRO. Outputs in `out_dir`:

    log.jsonl                      one record per log step (loss, masked-token accuracy, lr, images/s, MFU)
    checkpoints/<step>/, latest    engine checkpoints (model, optimizer, step, loader position, RNG states)
    heartbeit-<variant>.safetensors  fp32 backbone, loadable with timm.create_model(..., pretrained=True,
                                   pretrained_cfg_overlay=dict(file=...)) after `import heartbeit.models`
    heartbeit-<variant>.json       config, tokenizer, metrics of the run
    ablation/heartbeit-<variant>-step<N>.safetensors + .json
                                   the same backbone export at each `export_at` fraction of the steps (step,
                                   fraction, sha256 in the json); outside checkpoints/, so rotation keeps them
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from heartbeit.config import PretrainConfig, to_dict
from heartbeit.config.core import upgrade_section
from heartbeit.config.layout import ablation_export_paths, checkpoint_pointer, checkpoints_dir, export_paths
from heartbeit.config.pretrain import export_steps, same_run
from heartbeit.distributed.build import build_engine, world_size_from_env
from heartbeit.distributed.engine import Engine
from heartbeit.distributed.preempt import StopRequest, mark_checkpointed
from heartbeit.models.heartbeit import create_mim_model, export_backbone
from heartbeit.models.masking import MaskSampler
from heartbeit.models.tokenizer import Tokenizer
from heartbeit.records import IMAGES_TOKENS, PRETRAIN_LOG
from heartbeit.train.batches import BatchSource, ShardBatches
from heartbeit.train.flops import device_peak_flops, mfu, mim_train_flops_per_image
from heartbeit.train.mim import MEAN, STD, MimStep  # noqa: F401 (MEAN/STD: the export's normalisation)
from heartbeit.train.param_groups import param_groups
from heartbeit.train.rng import rng_state, set_rng_state
from heartbeit.train.schedule import check_resume, lr_at, resolve_schedule, train_image_count
from heartbeit.utils.io import atomic_write_bytes, atomic_write_json, code_version, sha256_file

log = logging.getLogger("heartbeit.pretrain")



def shard_tokens_match(images_dir: Path, tokenizer_file: Path | None, tokenizer: Tokenizer) -> bool:
    """Do the shards carry token grids from exactly this tokenizer (heartbeit tokenizer encode)?"""
    record = images_dir / IMAGES_TOKENS
    if tokenizer_file is None or not record.is_file():
        return False
    info = json.loads(record.read_text())
    return info.get("tokenizer_sha256") == sha256_file(tokenizer_file) and info.get("grid") == tokenizer.grid_size


@dataclass
class PretrainRun:
    """Everything the loop and the finish need, built once by `setup`: the configuration as given and as
    resolved for this job, the engine (model, optimizer, ranks), the batch source, where the run stands and
    what its exports record."""
    given: PretrainConfig  # as configured
    cfg: PretrainConfig  # resolved for this job (heartbeit.train.schedule)
    schedule: dict[str, Any]
    out_dir: Path
    engine: Engine
    model: torch.nn.Module
    tokenizer: Tokenizer
    tokenizer_file: Path | None
    source: BatchSource
    step: int
    intermediate: dict[int, float]  # {optimizer step: fraction} of the export_at exports
    mim_step: MimStep
    flops_per_image: float
    peak_flops: float | None
    peak_source: str
    meta: dict[str, Any] = field(default_factory=dict)  # the export's metadata
    run_record: dict[str, Any] = field(default_factory=dict)  # what every export's json records of the run

    @property
    def is_main(self) -> bool:
        return self.engine.rank == 0

    @property
    def log_path(self) -> Path:
        return self.out_dir / PRETRAIN_LOG

    def save(self, at_step: int) -> None:
        self.engine.save_checkpoint(checkpoints_dir(self.out_dir), f"step{at_step:08d}", {
            "step": at_step, "loader": self.source.state_dict(), "rng": rng_state(), "schedule": self.schedule})

    def write_export(self, path: Path) -> str | None:
        """The fp32 backbone as it is now into `path`; the gather is a collective (ZeRO partitions), so
        every rank calls this. Returns the file's sha256 on rank 0, None on the others."""
        full = self.engine.full_state_dict()
        if not self.is_main:
            return None
        from safetensors.torch import save_file

        from heartbeit.utils.io import atomic_path

        backbone = export_backbone(full, depth=len(self.model.blocks))
        with atomic_path(path) as tmp:
            save_file(backbone, str(tmp), metadata={"heartbeit": json.dumps(self.meta, sort_keys=True)})
        log.info("exported %s (%d tensors)", path, len(backbone))
        return sha256_file(path)

    def export_intermediate(self, at_step: int) -> None:
        file, record = ablation_export_paths(self.out_dir, self.cfg.model, at_step)
        sha = self.write_export(file)
        if self.is_main:  # the json last: an export with its json is complete
            atomic_write_json(record, {**self.meta, **self.run_record, "step": at_step,
                                       "fraction": self.intermediate[at_step], "steps": self.cfg.steps,
                                       "file": file.name, "sha256": sha, "code_version": code_version()})


def pretrain(cfg, data: str | Path | BatchSource, tokenizer: Tokenizer | str | Path, out_dir: str | Path,
             resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) masked image modeling; returns the run summary (also written beside the export).

    `cfg`: a RunConfig or a PretrainConfig. `data`: an images directory (shards) or a BatchSource.
    `stop_after`: leave after this many steps with a checkpoint, as a preempted job would (tests)."""
    run = setup(cfg, data, tokenizer, out_dir, resume)
    if isinstance(run, dict):  # complete for this config already: its summary
        return run
    # Slurm's pre-limit signal or a preemption sets a flag from the first step through the final export (a
    # signal during the export does not kill it); the handlers this run replaced go back however it ends
    stop = StopRequest()
    try:
        train_loop(run, stop, stop_after, progress)
        return finish(run)
    finally:
        stop.close()


def setup(cfg, data: str | Path | BatchSource, tokenizer: Tokenizer | str | Path, out_dir: str | Path,
          resume: bool = False) -> PretrainRun | dict[str, Any]:
    """Tokenizer, model, schedule, engine, batches and the resumed position of a run; or the summary of the
    finished run when `out_dir` already holds this config's export."""
    cfg: PretrainConfig = getattr(cfg, "pretrain", cfg)
    given = cfg  # as configured; `cfg` below is resolved for this job (heartbeit.train.schedule)
    out_dir = Path(out_dir)
    ckpt_dir = checkpoints_dir(out_dir)
    export_json = export_paths(out_dir, cfg.model)[1]
    if export_json.is_file():  # complete for this config: nothing to do, with or without --resume
        done = json.loads(export_json.read_text())
        if upgrade_section("pretrain", done.get("pretrain_config") or {}, warn=False) == to_dict(given):
            log.info("pretraining already complete in %s (same config); skipping", out_dir)
            return done["summary"]
    if not resume and ckpt_dir.is_dir() and checkpoint_pointer(out_dir).is_file():
        raise FileExistsError(f"{ckpt_dir} holds a checkpoint: pass --resume to continue it, or use a new --out")

    # ---- tokenizer, model, engine
    tokenizer_file = None
    if not isinstance(tokenizer, Tokenizer):
        tokenizer_file = Path(tokenizer)
        tokenizer = Tokenizer.load(tokenizer_file)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_mim_model(cfg.model, tokenizer.vocab_size, drop_path_rate=cfg.drop_path,
                             layer_scale_init=cfg.layer_scale_init, img_size=cfg.image_size)
    grid = model.grid_size
    if grid != (tokenizer.grid_size, tokenizer.grid_size):
        raise ValueError(f"{cfg.model} at {cfg.image_size} px has a {grid[0]}x{grid[1]} patch grid but the tokenizer "
                         f"gives {tokenizer.grid_size}x{tokenizer.grid_size} tokens (input_size / patch_size)")
    # steps / accumulation / lr / warmup for this corpus and world size (ci, demo: their explicit values);
    # resolved before the engine exists because DeepSpeed fixes its accumulation at initialisation
    world_size = world_size_from_env()
    if isinstance(data, (str, Path)):
        train_images = train_image_count(data)
    else:  # a BatchSource: its own count if it has one (InMemoryBatches holds every rank's images)
        train_images = getattr(data, "num_images", None) or (len(data.images) if hasattr(data, "images") else None)
    cfg, schedule = resolve_schedule(cfg, train_images, world_size)
    intermediate = export_steps(cfg.export_at, cfg.steps)  # from the resolved length; checked before any work
    if cfg.compile:
        model.compile()  # in place: state-dict keys (checkpoints, export) stay those of the plain module
    engine: Engine = build_engine(model, param_groups(model, cfg.weight_decay), cfg)
    if engine.world_size != world_size:
        raise RuntimeError(f"the launcher reported {world_size} ranks but the engine has {engine.world_size}")
    if engine.rank == 0:
        log.info("schedule (%s): %d steps of %d images (%d x %d accum x %d ranks)%s, peak lr %.3g, warmup %d "
                 "steps", schedule["mode"], cfg.steps, schedule["global_batch"], cfg.batch_size, cfg.grad_accum,
                 engine.world_size, f" = {schedule['epochs']:.1f} epochs of {train_images} images"
                 if schedule["epochs"] else "", cfg.lr, cfg.warmup_steps)
        if "note" in schedule:
            log.warning("%s", schedule["note"])
    device = engine.device
    if hasattr(tokenizer, "to"):
        tokenizer = tokenizer.to(device)
    torch.manual_seed(cfg.seed * 1000 + 17 + engine.rank)  # drop path: a different stream per rank
    random.seed(cfg.seed + engine.rank)
    np.random.seed(cfg.seed + engine.rank)

    # ---- data: shards (through heartbeit.data.loading.loader) or any BatchSource; the masks come with the batches
    masks = MaskSampler(grid, cfg.mask_patches, min_block=cfg.min_mask_block, seed=cfg.seed)
    if isinstance(data, (str, Path)):
        images_dir = Path(data)
        use_shard_tokens = cfg.tokens == "shards" or (
            cfg.tokens == "auto" and shard_tokens_match(images_dir, tokenizer_file, tokenizer))
        source: BatchSource = ShardBatches(images_dir, cfg.batch_size, seed=cfg.seed, with_tokens=use_shard_tokens,
                                           rank=engine.rank, world_size=engine.world_size,
                                           num_workers=cfg.num_workers, decode_threads=cfg.decode_threads,
                                           pin_memory=device.type == "cuda",  # non-blocking copies need it
                                           masks=masks)
        log.info("token grids: %s", "precomputed in the shards" if use_shard_tokens else "computed on the fly")
    else:
        source = data
        if not hasattr(source, "masks"):
            raise TypeError(f"{type(source).__name__}: pretraining needs a BatchSource that draws the masks "
                            "(a `masks` attribute, as InMemoryBatches and ShardBatches have)")
        source.masks = masks

    # ---- resume
    step = 0
    if resume:
        state = engine.load_checkpoint(ckpt_dir)
        if state is None:
            log.info("no checkpoint in %s: starting from step 0", ckpt_dir)
        else:
            check_resume(state.get("schedule"), schedule)
            step = int(state["step"])
            source.load_state_dict(state["loader"])
            set_rng_state(state["rng"])
            log.info("resumed at step %d (loader %s)", step, state["loader"])

    # ---- FLOPs for MFU (model only, counted once per configuration)
    flops_per_image = mim_train_flops_per_image(cfg.model, cfg.image_size, tokenizer.vocab_size, cfg.mask_patches)
    peak_flops, peak_source = device_peak_flops(device, cfg.precision, cfg.peak_tflops)
    run = PretrainRun(
        given=given, cfg=cfg, schedule=schedule, out_dir=out_dir, engine=engine, model=model, tokenizer=tokenizer,
        tokenizer_file=tokenizer_file, source=source, step=step, intermediate=intermediate,
        mim_step=MimStep(engine, cfg.precision, cfg.image_size, tokenizer), flops_per_image=flops_per_image,
        peak_flops=peak_flops, peak_source=peak_source,
        # "img_size" stays the key in the export's metadata (timm's argument name): the export's bytes, whose
        # sha256 enters HeartBEiT cell ids, must not change with the config's key name
        meta={"model": cfg.model, "img_size": cfg.image_size, "in_chans": 1, "mean": MEAN, "std": STD},
        run_record={"vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.config(),
                    "tokenizer_file": str(tokenizer_file) if tokenizer_file else None,
                    "pretrain_config": to_dict(given), "resolved_pretrain_config": to_dict(cfg)})
    if run.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = run.log_path
        records = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
        kept = "".join(json.dumps(r) + "\n" for r in records if r["step"] <= step)  # drop steps we redo
        atomic_write_bytes(log_path, kept.encode())
        # exports of steps this run has already passed cannot be made again: say so now
        for passed in (s for s in intermediate if s <= step):
            record = ablation_export_paths(out_dir, cfg.model, passed)[1]
            info = json.loads(record.read_text()) if record.is_file() else None
            if info is None or not same_run(info.get("pretrain_config", {}), to_dict(given)):
                log.warning("pretrain.export_at %g: no export of this run at step %d, which the resumed run has "
                            "passed; the matrix's pretraining ablation needs it (rerun pretraining from step 0 in "
                            "a new --out)", intermediate[passed], passed)
    return run


def train_loop(run: PretrainRun, stop: StopRequest, stop_after: int | None = None, progress: bool = True) -> None:
    """Optimizer steps from `run.step` to the end of the schedule (or `stop_after`, or `stop`'s request), with
    the log, the export_at exports and the checkpoints on their steps; leaves `run.step` where it stopped."""
    cfg, engine, source, mim_step = run.cfg, run.engine, run.source, run.mim_step
    step, is_main = run.step, run.is_main
    images_per_step = cfg.batch_size * cfg.grad_accum * engine.world_size
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    stream = iter(source)
    engine.model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain", disable=not (progress and is_main),
               dynamic_ncols=True)
    window = {"steps": 0, "t0": time.perf_counter()}
    try:
        while step < end:
            lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr)
            engine.set_lr(lr)
            for _ in range(cfg.grad_accum):
                batch = next(stream)
                mim_step(batch.images, batch.tokens, batch.mask_index)
            step += 1
            run.step = step
            window["steps"] += 1
            bar.update(1)

            log_step = step % cfg.log_every == 0 or step == 1 or step == end
            if log_step:  # the only place the loop reads the device
                elapsed = time.perf_counter() - window["t0"]
                ips = window["steps"] * images_per_step / max(elapsed, 1e-9)
                loss, acc, _ = mim_step.read()
                record = {
                    "step": step, "epoch": source.state_dict().get("epoch"),
                    "loss": engine.all_reduce_mean(loss), "mlm_acc": engine.all_reduce_mean(acc),
                    "lr": lr, "grad_norm": engine.grad_norm(), "images_per_s": ips,
                    "mfu": mfu(ips, run.flops_per_image, run.peak_flops, engine.world_size),
                }
                if is_main:
                    with open(run.log_path, "a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['mlm_acc']:.3f}",
                                    ips=f"{ips:.1f}")
                    log.info("step %d/%d loss %.4f acc %.3f lr %.2e %.1f img/s MFU %s", step, cfg.steps,
                             record["loss"], record["mlm_acc"], lr, ips,
                             f"{record['mfu']:.2%}" if record["mfu"] is not None else "n/a")
                window = {"steps": 0, "t0": time.perf_counter()}
            if step in run.intermediate:  # before any checkpoint of this step: a resume never skips past it unwritten
                run.export_intermediate(step)
            if step % cfg.checkpoint_every == 0 or step == end:
                run.save(step)
            elif step < end and log_step and stop.should_stop(engine):
                run.save(step)
                mark_checkpointed()
                log.warning("stopped at step %d with a checkpoint; rerun with --resume to continue", step)
                break
    finally:
        bar.close()


def finish(run: PretrainRun) -> dict[str, Any]:
    """The run's summary (from its log); after the last step also the final export and its json, which
    mark the run complete. A run stopped early returns the summary only: its checkpoint is the result."""
    cfg, engine, step = run.cfg, run.engine, run.step
    summary: dict[str, Any] = {"steps_done": step, "steps": cfg.steps, "complete": step >= cfg.steps,
                               "schedule": run.schedule,
                               "flops_per_image": run.flops_per_image, "peak_flops": run.peak_flops,
                               "peak_source": run.peak_source, "device": str(engine.device),
                               "world_size": engine.world_size}
    if run.is_main and run.log_path.is_file():
        records = [json.loads(line) for line in run.log_path.read_text().splitlines()]
        if records:
            summary.update(first_loss=records[0]["loss"], first_mlm_acc=records[0]["mlm_acc"],
                           final_loss=records[-1]["loss"], final_mlm_acc=records[-1]["mlm_acc"],
                           chance_acc=1.0 / run.tokenizer.vocab_size, images_per_s=records[-1]["images_per_s"],
                           mfu=records[-1]["mfu"])
    if step < cfg.steps:  # stopped early: the checkpoint is the result
        return summary

    # ---- export: fp32 backbone for fine-tuning (the collective gather runs on every rank)
    export_file, export_json = export_paths(run.out_dir, cfg.model)
    sha = run.write_export(export_file)
    if run.is_main:
        summary["export"] = str(export_file)
        summary["export_sha256"] = sha
        records = [ablation_export_paths(run.out_dir, cfg.model, s)[1] for s in sorted(run.intermediate)]
        records = [json.loads(r.read_text()) for r in records if r.is_file()]
        summary["intermediate_exports"] = {str(r["step"]): r["sha256"] for r in records
                                           if same_run(r["pretrain_config"], to_dict(run.given))}
        atomic_write_json(export_json, {
            **run.meta, **run.run_record, "code_version": code_version(), "summary": summary,
            "load_with": f"timm.create_model({cfg.model!r}, pretrained=True, "
                         f"pretrained_cfg_overlay=dict(file={export_file.name!r}), num_classes=2)",
        })
    engine.barrier()
    return summary
