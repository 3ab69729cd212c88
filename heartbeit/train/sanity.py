"""Two guards of a matrix cell's numbers: BatchNorm statistics that match the trained weights, and a verdict
on whether the cell learned anything.

BatchNorm re-estimation: a from-scratch CNN fine-tuned for a few dozen steps at OneCycle's high learning rate
keeps running statistics that lag far behind its weights (momentum 0.1 averages over ~10 steps of moving
weights; EfficientNet's stacked BN + SE layers amplify the lag). In eval mode its logits then collapse to one
class: the demo's efficientnet_b0 sat at chance while resnet18 reached 0.99, and a toy model went from AUROC
0.81 with mean p(positive) 0.000 to 1.00 with mean p = prevalence after re-estimation alone, no weight
changed. So before every validation and before the final scoring the statistics are re-estimated: reset,
then a cumulative average (momentum None) over a fixed number of the cell's training batches in train mode,
under no_grad (the weights never change), in the cell's precision. The batches are the cell's own
deterministic training stream, so a rerun gives the same statistics.

Verdicts (cell.json "sanity", the report and `heartbeit matrix status`), on the selected weights' validation
predictions:
- collapsed: prediction std < 1e-3 -- a constant prediction: a training defect to fix;
- one_class: every ECG on one side of p = 0.5 while the scores vary -- a property of the threshold, common
  at low prevalence for a model that ranks but never reaches 0.5 (the demo's tasks at 10 % prevalence), not a
  defect by itself; with not_better_than_chance it is a model that did not learn;
- non_finite_loss: a training loss that is NaN or infinite at some validation;
- not_better_than_chance: the validation AUROC's 95 % DeLong CI (clustered by patient) includes 0.5 (where
  DeLong gives no interval -- a perfect ranking has zero variance -- a one-sided Mann-Whitney test at 2.5 %
  decides) -- may be the task (too few labels, a weak signal) rather than a defect; the report says which.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from heartbeit.records import COLLAPSE_STD  # the verdict record's format and reading live there


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, inputs: Iterable[torch.Tensor], n_batches: int,
                          autocast: Callable) -> int:
    """Re-estimate every BatchNorm layer's running mean/var on up to `n_batches` input batches; returns the
    number of batches used (0 for a model without BatchNorm or n_batches = 0). Weights are untouched."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers or n_batches <= 0:
        return 0
    momenta = [m.momentum for m in layers]
    state = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same, order does not matter
    model.train()
    used = 0
    try:
        for x in inputs:
            if used >= n_batches:
                break
            if x.shape[0] < 2:  # train-mode BN needs more than one value per channel after pooling
                continue
            with autocast():
                model(x)
            used += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(state)
    return used


def _mann_whitney_better(scores: np.ndarray, labels: np.ndarray, alpha: float = 0.025) -> bool:
    from scipy.stats import mannwhitneyu

    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0 or not np.isfinite(scores).all():
        return False
    return bool(mannwhitneyu(pos, neg, alternative="greater").pvalue < alpha)


def sanity_verdicts(scores: np.ndarray, labels: np.ndarray, *, nonfinite_steps: int = 0,
                    patients=None) -> dict:
    """{'verdicts': [...], 'val_auroc', 'val_auroc_low', 'val_auroc_high', 'val_score_std', 'val_positive_calls'}."""
    from heartbeit.eval.metrics import auroc

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    verdicts = []
    finite = scores[np.isfinite(scores)]
    std = float(finite.std()) if len(finite) else float("nan")
    calls = int((finite >= 0.5).sum())
    if len(finite) == 0 or not std >= COLLAPSE_STD:
        verdicts.append("collapsed")
    elif calls in (0, len(finite)):
        verdicts.append("one_class")
    if nonfinite_steps or len(finite) < len(scores):
        verdicts.append("non_finite_loss")
    result = auroc(labels, scores, clusters=patients) if len(finite) == len(scores) and len(scores) else None
    low = result.low if result is not None else float("nan")
    high = result.high if result is not None else float("nan")
    value = result.value if result is not None else float("nan")
    if np.isfinite(low):
        better = low > 0.5
    else:
        # No DeLong CI (zero variance: a perfect or constant ranking; or < 2 per class): a one-sided
        # Mann-Whitney test of "positives score higher" at the same 2.5 % level decides instead.
        better = _mann_whitney_better(scores, labels)
    if not better:
        verdicts.append("not_better_than_chance")
    return {"verdicts": verdicts, "val_auroc": value, "val_auroc_low": low, "val_auroc_high": high,
            "val_score_std": std, "val_positive_calls": calls, "val_n": int(len(scores))}

