"""Fine-tune one matrix cell, readable top to bottom.

As in the paper: a 2-class head, cross-entropy, AdamW for HeartBEiT (and for its same-size random-init twin,
so that only the weights differ) and Adam for the baselines, a OneCycle schedule, a fixed seed; drop path
0.1 for BEiT-family models. Models with BatchNorm get their running statistics re-estimated on the cell's
training images before every validation and before the final scoring (sanity.py: with few optimizer steps
the running averages lag the weights, and eval-mode predictions collapse). Every cell gets sanity verdicts
(collapsed, non-finite loss, not better than chance) in cell.json. Unlike the paper's public code, the epoch is selected on the
*validation* split only; the internal test set and the external sites are scored once, with the selected
weights. The data arrive through `CellData`, which hands out batches and keeps the test and external
labels out of reach until selection is over. With a `resume_dir` the cell checkpoints mid-training and
resumes exactly (train/cell_checkpoint.py: the hooks marked "checkpoint" below)."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from heartbeit.config import MatrixConfig
from heartbeit.models import zoo
from heartbeit.models.families import ADAMW_WEIGHT_DECAY, FINETUNE_RECIPE_VERSION, arch_family, head_init, needs_mim_export, uses_heartbeit_recipe
from heartbeit.records import CELL_WEIGHTS, CURVES, PREDICTION_META, PREDICTIONS, VAL_SCORES
from heartbeit.train.cell_checkpoint import CellCheckpoint
from heartbeit.train.param_groups import describe_groups, group_peak_lrs, param_groups
from heartbeit.models.precision import Numerics, device_type_of, numerics_for
from heartbeit.utils.machine import machine_record
from heartbeit.train.sanity import has_batchnorm, recalibrate_batchnorm, sanity_verdicts

log = logging.getLogger("heartbeit.finetune")


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [B, 1, H, W] images, or float32 [B, 12, L] waveforms in mV (signal models)
    labels: torch.Tensor  # int64 [B]
    meta: list[dict]  # per-sample metadata (ecg_uid, patient_hash, site, split, sex, age_band)


@dataclass
class CellData:
    """Batches for one cell. `train(epoch)` yields the cell's training fraction (shuffled per epoch);
    `val()` the whole validation split (the selected weights' scores: export threshold, sanity verdicts);
    `evaluation()` (test, then external) is only called after selection. Optional: `val_rounds()` the
    validation rounds during training (a fixed stratified subsample; default `val`), `recalibration(epoch)`
    the BatchNorm recalibration batches (default `train`), `close()` stops the loaders' worker processes."""

    train: Callable[[int], Iterable[Batch]]
    val: Callable[[], Iterable[Batch]]
    evaluation: Callable[[], Iterable[Batch]]
    n_train: int
    n_train_pos: int
    val_rounds: Callable[[], Iterable[Batch]] | None = None
    recalibration: Callable[[int], Iterable[Batch]] | None = None
    close: Callable[[], None] = lambda: None
    validation: dict = field(default_factory=dict)  # what the rounds score (cell.json)


def resolve_device(spec: str) -> torch.device:
    """matrix.device -> a torch device: "auto" is the current GPU when CUDA is available, else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"matrix.device={spec}, but this torch build or machine has no CUDA GPU "
                               "(use auto or cpu)")
        index = torch.device(spec).index
        if index is not None and index >= torch.cuda.device_count():
            raise RuntimeError(f"matrix.device={spec}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return torch.device("cuda", torch.cuda.current_device() if index is None else index)
    return torch.device(spec)


def _normalize(inputs: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images are scaled to [0, 1] first; waveforms (float mV) are used as they are."""
    x = inputs.float() / 255.0 if inputs.dtype == torch.uint8 else inputs.float()
    return (x - mean) / std


@torch.no_grad()
def _score(model, batches: Iterable[Batch], inputs, autocast,
           device: torch.device) -> tuple[np.ndarray, np.ndarray, list[dict], float]:
    """Scores, labels, metadata and mean cross-entropy of every batch. The logits stay on the device until the
    last batch is queued: one read for the whole pass, not one per batch (a GPU never waits on the host)."""
    model.eval()
    logits, targets, labels, metas = [], [], [], []
    for b in batches:
        with autocast():
            logits.append(model(inputs(b)).float())
        targets.append(b.labels.to(device, non_blocking=True))
        labels.append(b.labels)
        metas.extend(b.meta)
    if not logits:
        return np.zeros(0), np.zeros(0, dtype=np.int64), [], float("nan")
    all_logits = torch.cat(logits)
    loss = F.cross_entropy(all_logits.double(), torch.cat(targets), reduction="sum") / len(all_logits)
    scores = torch.softmax(all_logits, dim=1)[:, 1].cpu().numpy()  # the pass's reads: scores, then the loss
    return scores, torch.cat(labels).numpy(), metas, loss.item()


def _val_criterion(rule: str, scores: np.ndarray, labels: np.ndarray, loss: float) -> float:
    """Higher is better (matrix.selection): minus the validation loss ("val_loss"); the validation AUROC, or
    minus the loss when it is undefined ("val_auroc"); for "last" every round beats the one before."""
    if rule == "val_auroc" and len(np.unique(labels)) == 2 and np.isfinite(scores).all():
        return float(roc_auc_score(labels, scores))
    if rule == "last":
        return 0.0
    return -loss if math.isfinite(loss) else -math.inf


def _better(rule: str, crit: float, best: float) -> bool:
    return crit >= best if rule == "last" else crit > best


def cell_numerics(cell, mcfg: MatrixConfig) -> Numerics:
    """Precision and memory format of a cell: the plan's (part of its id), else the table's for this device."""
    if getattr(cell, "precision", ""):
        return Numerics(cell.precision, bool(cell.channels_last))
    return numerics_for(cell.arch, device_type_of(mcfg.device), mcfg.precision)


def optimizer_groups(arch: str, model: torch.nn.Module, layer_decay: float = 1.0) -> list[dict]:
    """The parameter groups of a cell's optimizer (families.py): the AdamW recipe (HeartBEiT and its
    same-size random twin) groups as BEiT does -- no weight decay on biases, norms, position tables, layer
    scale and tokens, layer-wise lr decay -- the paper's baselines (Adam) have one group without decay."""
    if uses_heartbeit_recipe(arch):
        return param_groups(model, ADAMW_WEIGHT_DECAY, layer_decay)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]


def make_optimizer(arch: str, groups: list[dict], max_lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW for HeartBEiT and its same-size random twin, Adam for the paper's baselines, over
    `optimizer_groups`. The starting lr is OneCycle's (max_lr / 25); one fused kernel on a GPU."""
    opt_cls = torch.optim.AdamW if uses_heartbeit_recipe(arch) else torch.optim.Adam
    return opt_cls(groups, lr=max_lr, **({"fused": True} if device.type == "cuda" else {}))


def finetune_cell(cell, mcfg: MatrixConfig, data: CellData, out_dir: Path,
                  pretrained_file: str | None = None, resume_dir: str | Path | None = None,
                  round_hook: Callable | None = None) -> dict:
    """Train, select and score one cell into `out_dir`. `resume_dir`: where mid-cell checkpoints live (every
    matrix.checkpoint_minutes and on a stop request, which raises preempt.Stopped); None = none. `round_hook`:
    offline diagnostics only (bench/selection.py), called after every validation."""
    out_dir = Path(out_dir)
    torch.manual_seed(cell.seed)
    np.random.seed(cell.seed)  # timm/torch init code may read numpy's global RNG
    # the new head starts at the training prevalence's log-odds (Family.head_init)
    model, loaded = zoo.create_classifier(
        cell.arch, num_classes=2, img_size=mcfg.image_size, in_chans=1,
        pretrained_file=pretrained_file if needs_mim_export(cell.arch) else None,
        imagenet_weights_dir=mcfg.imagenet_weights_dir or None,
        # preflight stops a run whose weights folder is unset; here a set folder missing this file stops the cell
        allow_random_init=mcfg.allow_random_init or not mcfg.imagenet_weights_dir,
        prevalence=data.n_train_pos / data.n_train, n_train=data.n_train)
    rule, std = head_init(cell.arch)
    head = {"rule": rule, "std": std, "prevalence": round(data.n_train_pos / data.n_train, 6),
            "prior_logit": round(zoo.prior_logit(data.n_train_pos / data.n_train, data.n_train), 6),
            **zoo.head_statistics(model)}
    mean, std = zoo.normalization(cell.arch)
    device = resolve_device(mcfg.device)
    numerics = cell_numerics(cell, mcfg)
    model = model.to(device)
    memory_format = torch.channels_last if numerics.channels_last else torch.contiguous_format
    if numerics.channels_last:
        model = model.to(memory_format=torch.channels_last)
    use_bf16 = numerics.precision == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    def inputs(b: Batch) -> torch.Tensor:
        x = _normalize(b.images.to(device, non_blocking=True), mean, std)
        return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x

    def recalibrate(epoch: int) -> int:
        batches = (data.recalibration or data.train)(epoch)
        return recalibrate_batchnorm(model, (inputs(b) for b in batches), mcfg.bn_recalib_batches, autocast)

    groups = optimizer_groups(cell.arch, model, mcfg.layer_decay)
    optimizer = make_optimizer(cell.arch, groups, mcfg.max_lr, device)
    # Fixed epochs as in the paper; `min_steps` (0 in the paper profile) lets a 1 % cell of a small CPU
    # profile take enough optimizer steps to learn at all. Validation runs `epochs` times, evenly spaced
    # over the schedule, so a "round" is an epoch whenever min_steps does not apply.
    steps_per_epoch = max(1, math.ceil(data.n_train / mcfg.batch_size))
    total_steps = max(mcfg.epochs * steps_per_epoch, mcfg.min_steps)
    validate_at = {round(total_steps * (r + 1) / mcfg.epochs): r for r in range(mcfg.epochs)}
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=group_peak_lrs(groups, mcfg.max_lr),
                                                    total_steps=total_steps)

    best = (-math.inf, -1, None, None)  # (criterion, round, state_dict, None: the slot of older checkpoints)
    curves = []
    t_start = t0 = time.time()
    # The training loss is summed on the device (float64, as a Python float sum would be) and read at
    # validation only, so a GPU step never waits for its loss.
    step, epoch, seen, nonfinite_steps = 0, 0, 0, 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    checkpoint = CellCheckpoint(resume_dir, cell.cell_id, mcfg.checkpoint_minutes)
    resumed = checkpoint.restore(model, optimizer, scheduler)  # checkpoint: a resumed cell continues exactly
    if resumed is not None:
        step, epoch, seen, nonfinite_steps, best, curves = (resumed[k] for k in (
            "step", "epoch", "seen", "nonfinite_steps", "best", "curves"))
        loss_sum.copy_(resumed["loss_sum"])

    def loop_state() -> dict:  # checkpoint: the loop's own variables, the selection state as it is
        return {"step": step, "epoch": epoch, "seen": seen, "nonfinite_steps": nonfinite_steps, "best": best,
                "curves": curves, "loss_sum": loss_sum}

    try:
        while step < total_steps:
            model.train()
            batches = checkpoint.batches(data.train(epoch), epoch)
            for b in batches:
                with autocast():
                    logits = model(inputs(b))
                loss = F.cross_entropy(logits.float(), b.labels.to(device, non_blocking=True))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += loss.detach().double() * len(b.labels)
                seen += len(b.labels)
                if step in validate_at:
                    train_loss = loss_sum.item() / max(1, seen)
                    nonfinite_steps += 0 if math.isfinite(train_loss) else 1
                    recalibrated = recalibrate(epoch)
                    rounds = (data.val_rounds or data.val)()
                    v_scores, v_labels, _, v_loss = _score(model, rounds, inputs, autocast, device)
                    crit = _val_criterion(mcfg.selection, v_scores, v_labels, v_loss)
                    v_auroc = _val_criterion("val_auroc", v_scores, v_labels, v_loss)
                    curves.append({"round": validate_at[step], "epoch": epoch, "step": step,
                                   "train_loss": train_loss, "val_loss": v_loss, "val_criterion": crit,
                                   "val_auroc": v_auroc if 0 <= v_auroc <= 1 else None,
                                   "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 3),
                                   "images": seen, "bn_recalibration_batches": recalibrated})
                    if round_hook is not None:  # offline diagnostics only (bench/selection.py); never in the matrix
                        round_hook(validate_at[step], lambda batches: _score(model, batches, inputs, autocast, device))
                    if _better(mcfg.selection, crit, best[0]) or best[2] is None:  # kept in host memory: a GPU holds one copy of the weights
                        best = (crit, validate_at[step], {k: v.detach().to("cpu", copy=True)
                                                          for k, v in model.state_dict().items()}, None)
                    t0, seen = time.time(), 0
                    loss_sum.zero_()
                    model.train()
                if step >= total_steps:
                    break
                checkpoint.after_step(batches, epoch, loop_state, model, optimizer, scheduler)  # checkpoint
            epoch += 1
    finally:
        checkpoint.close()
        data.close()  # the cell's loaders keep worker processes between epochs and rounds
    if best[2] is not None:
        # the selected weights with the BatchNorm statistics re-estimated for them at that validation
        model.load_state_dict(best[2])
    # The selected weights, for saliency and reuse (safetensors: loading them never unpickles).
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(out_dir / CELL_WEIGHTS))

    # The selected weights' scores on the WHOLE validation split (the rounds may have scored a subsample), labels
    # and scores only: `heartbeit export` picks the model's decision threshold on them (Youden's J), never on
    # the held-out sets; the sanity verdicts read them too.
    v_scores, v_labels, v_metas, _ = _score(model, data.val(), inputs, autocast, device)
    v_patients = [m.get("patient_hash") for m in v_metas] if v_metas else None
    # Selection is over: score the held-out sets once with the selected weights.
    scores, labels, metas, _ = _score(model, data.evaluation(), inputs, autocast, device)
    pred = pd.DataFrame(metas)
    pred["label"] = labels.astype(np.int64)
    pred["score"] = scores.astype(np.float64)
    pred.to_parquet(out_dir / PREDICTIONS, index=False)
    with open(out_dir / CURVES, "w") as fh:
        for row in curves:
            fh.write(json.dumps(row) + "\n")
    pd.DataFrame({"label": np.asarray(v_labels, dtype=np.int64), "score": np.asarray(v_scores, dtype=np.float64)}
                 ).to_parquet(out_dir / VAL_SCORES, index=False)
    return {
        "arch_family": arch_family(cell.arch), "init": loaded.kind, "weights": loaded.to_json(),
        "n_train": data.n_train, "n_train_pos": data.n_train_pos, "selected_epoch": best[1],
        "val_criterion": best[0], "validation": data.validation, "recipe": FINETUNE_RECIPE_VERSION, "selection": mcfg.selection, "head_init": head,
        "optimizer": {"name": type(optimizer).__name__, "layer_decay": mcfg.layer_decay if uses_heartbeit_recipe(cell.arch) else None,
                      "groups": describe_groups(groups)},
        "train_seconds": round(time.time() - t_start, 2), "epochs": mcfg.epochs,
        "steps": total_steps, "precision": numerics.precision, "channels_last": numerics.channels_last,
        "bn_recalibration_batches": mcfg.bn_recalib_batches if has_batchnorm(model) else 0,
        "sanity": sanity_verdicts(v_scores, v_labels, nonfinite_steps=nonfinite_steps, patients=v_patients),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": {k: v for k, v in machine_record().items() if k in ("cpu_model", "isa_flags", "torch_cpu_capability",
                                                                        "isa_pins")},
    }


def iterate_in_batches(samples: list, batch_size: int) -> Iterator[list]:
    for i in range(0, len(samples), batch_size):
        yield samples[i:i + batch_size]


# ------------------------------------------------------------------------------ data from image shards

def _batches(loader, modality: str) -> Iterator[Batch]:
    for b in loader:
        meta = [{k: m.get(k) for k in PREDICTION_META} for m in b["meta"]] if "meta" in b else []
        yield Batch(images=b[modality], labels=b["label"], meta=meta)


class _Epoch:
    """One epoch of a cell's training batches, with the loader's exact-resume position (a mid-cell checkpoint
    continues there without decoding the consumed samples again)."""

    def __init__(self, loader, modality: str):
        self.loader, self.modality = loader, modality

    def __iter__(self) -> Iterator[Batch]:
        return _batches(self.loader, self.modality)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


def cell_data_from_shards(images_dir: str | Path, cell, mcfg: MatrixConfig) -> CellData:
    """The cell's training subset (draw 0: the render stage's nested, stratified fraction; draw d > 0: an
    independent draw of the same design, `training_draw`) restricted to ECGs labelled for the task, the
    validation split, then internal test and external sites, all streamed by the one loader of
    heartbeit.data.loading.loader -- images for image models, the stored waveforms for signal models.

    Three loaders live as long as the cell, each made once with its filter resolved against the manifest once
    and its worker processes kept between iterations: training (one epoch per iteration), BatchNorm
    recalibration (a replica of the training stream: the first batches of the epoch, as a fresh loader would
    give them) and the validation rounds (a fixed stratified subsample at matrix.val_batch_size,
    `validation_subsample`). The whole validation split and the held-out sets are read once, at the end."""
    from heartbeit.data.loading.epoch_loader import ImageLoader
    from heartbeit.data.loading.loader import make_image_dataset, make_loader
    from heartbeit.data.members import read_manifest
    from heartbeit.data.splits import training_draw, validation_subsample

    images_dir = Path(images_dir)
    man = read_manifest(images_dir)  # the loader's plans reuse this one read (cached per process)
    try:
        in_draw = training_draw(man, cell.task, cell.fraction, cell.draw, mcfg.draw_seed)
    except ValueError as exc:
        raise ValueError(f"{images_dir}: {exc}") from None
    train_rows = man[(man["split"] == "train") & in_draw & man[cell.task].notna()]
    n_train, n_pos = len(train_rows), int((train_rows[cell.task] == 1).sum())
    if n_train == 0:
        raise ValueError(f"no labelled training ECGs for task {cell.task} at fraction {cell.fraction:g}")
    splits = set(man["split"])
    modality = zoo.input_modality(cell.arch)
    subset = frozenset(train_rows["ecg_uid"].astype(str))  # every draw, draw 0 included, as an explicit id set
    pin = mcfg.device != "cpu"  # page-locked batches for non-blocking copies (the loader pins only with CUDA)
    loaders = {"num_workers": mcfg.num_workers, "pin_memory": pin, "persistent": True}
    # Partial batches kept: at 1 % a fraction can be smaller than one batch.
    stream = make_image_dataset(images_dir, "train", task=cell.task, seed=cell.seed, shuffle=True,
                                batch_size=mcfg.batch_size, drop_last=False, modality=modality, subset=subset,
                                decode_threads=mcfg.decode_threads, with_meta=False)
    training = ImageLoader(stream, **loaders)
    recalibration = ImageLoader(stream.replica(), **loaders)
    val_subset = validation_subsample(man, cell.task, mcfg.val_negatives_cap, mcfg.draw_seed)
    rounds = ImageLoader(make_image_dataset(images_dir, "val", task=cell.task, shuffle=False,
                                            batch_size=mcfg.val_batch_size, modality=modality, subset=val_subset,
                                            decode_threads=mcfg.decode_threads, with_meta=False), **loaders)
    labels = man.loc[(man["split"] == "val") & man[cell.task].notna(), cell.task]
    negatives = int((labels == 0).sum())  # the subsample keeps every positive and val_negatives_cap negatives
    validation = {"rounds": "whole split" if val_subset is None else "stratified subsample",
                  "positives": int((labels == 1).sum()),
                  "negatives": negatives if val_subset is None else mcfg.val_negatives_cap,
                  "split_negatives": negatives, "batch_size": mcfg.val_batch_size}

    def epoch_of(loader: ImageLoader, epoch: int) -> ImageLoader:
        loader.set_epoch(epoch)
        return loader

    def evaluation_split(split: str) -> Iterator[Batch]:
        return _batches(make_loader(images_dir, split, mcfg.batch_size, mcfg.num_workers, train=False,
                                    task=cell.task, modality=modality, decode_threads=mcfg.decode_threads,
                                    pin_memory=pin), modality)

    def evaluation():
        for split in ("test", "external"):
            if split in splits and (man.loc[man["split"] == split, cell.task].notna().any()):
                yield from evaluation_split(split)

    def close() -> None:
        for loader in (training, recalibration, rounds):
            loader.close()

    return CellData(train=lambda epoch: _Epoch(epoch_of(training, epoch), modality),
                    val=lambda: evaluation_split("val"), evaluation=evaluation, n_train=n_train, n_train_pos=n_pos,
                    val_rounds=lambda: _batches(epoch_of(rounds, 0), modality),
                    recalibration=lambda epoch: _batches(epoch_of(recalibration, epoch), modality),
                    close=close, validation=validation)
