"""Frozen-backbone features and the linear probe, the standard foundation-model evaluation.

- `backbone_features`: the pooled features a classifier's head reads (timm `forward_head(..., pre_logits=True)`),
  from the backbone frozen in eval mode; `heartbeit embed` writes them per ECG to Parquet.
- `linear_probe_cell`: a matrix cell of kind "probe": the same backbone and initialisation as the
  fine-tuning cell of its architecture (HeartBEiT from its pretraining export, baselines from their ImageNet
  file or random), features of the cell's training subset (the same nested, stratified fractions), an
  L2 logistic regression on standardised features whose strength is chosen on the validation split (AUROC,
  from PROBE_C), then the internal test set and external sites scored once. The fitted regression is
  folded into the classifier's own 2-class head (logit_1 - logit_0 = w.x + b), so a probe cell's
  model.safetensors is an ordinary classifier: the report's saliency, `heartbeit export` and `predict`
  treat it like any other cell."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from heartbeit.records import CELL_WEIGHTS, CURVES, PREDICTIONS, VAL_SCORES

PROBE_C = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strengths tried on validation (scikit-learn's C)


@torch.no_grad()
def backbone_features(model, batches: Iterable, mean: float, std: float, device: torch.device):
    """(features float32 [N, D], labels [N] or None, metas) over `batches` (finetune.Batch)."""
    model.eval()
    feats, labels, metas = [], [], []
    for b in batches:
        x = b.images.to(device)
        x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float())
        f = model.forward_head(model.forward_features((x - mean) / std), pre_logits=True)
        feats.append(f.float().cpu().numpy())
        if b.labels is not None:
            labels.append(np.asarray(b.labels))
        metas.extend(b.meta)
    d = getattr(model, "num_features", 0)
    f = np.concatenate(feats) if feats else np.zeros((0, d), np.float32)
    return f, (np.concatenate(labels) if labels else None), metas


def fold_into_head(model, arch: str, coef: np.ndarray, intercept: float, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Set the 2-class head so that softmax(head(f))[1] = sigmoid(coef . (f - mu) / sigma + intercept)."""
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear) or head.out_features != 2:
        raise ValueError(f"{arch}: the linear probe needs a 2-output linear head, got {type(head).__name__}")
    w = coef / sigma
    b = intercept - float(np.sum(coef * mu / sigma))
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1] = torch.as_tensor(w, dtype=head.weight.dtype)
        head.bias[1] = float(b)


def linear_probe_cell(cell, mcfg, data, out_dir: Path, pretrained_file: str | None = None) -> dict:
    """Fit and score one probe cell (see the module docstring); writes what a fine-tuning cell writes."""
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression

    from heartbeit.models import zoo
    from heartbeit.models.families import arch_family
    from heartbeit.train.finetune import _val_criterion, resolve_device
    from heartbeit.train.sanity import sanity_verdicts

    if zoo.is_signal_arch(cell.arch):
        raise ValueError(f"{cell.arch}: linear probes are for image backbones")
    torch.manual_seed(cell.seed)
    device = resolve_device(mcfg.device)
    model, loaded = zoo.create_classifier(cell.arch, num_classes=2, img_size=mcfg.image_size,
                                          pretrained_file=pretrained_file,
                                          imagenet_weights_dir=mcfg.imagenet_weights_dir or None)
    model.to(device)
    mean, std = zoo.normalization(cell.arch)
    t0 = time.time()
    xtr, ytr, _ = backbone_features(model, data.train(0), mean, std, device)
    xva, yva, vmeta = backbone_features(model, data.val(), mean, std, device)
    mu, sigma = xtr.mean(0), xtr.std(0) + 1e-6
    best = (-math.inf, None, None)
    for c in PROBE_C:
        if len(np.unique(ytr)) < 2:
            raise ValueError(f"task {cell.task}: the probe's training subset holds one class only")
        clf = LogisticRegression(C=c, max_iter=2000).fit((xtr - mu) / sigma, ytr)
        s = clf.predict_proba((xva - mu) / sigma)[:, 1] if len(xva) else np.zeros(0)
        # the probe picks its regularisation C on validation AUROC (matrix.selection picks training rounds)
        crit = _val_criterion("val_auroc", s, yva if yva is not None else np.zeros(0), 0.0) if len(xva) else 0.0
        if crit > best[0]:
            best = (crit, c, clf, s)
    crit, c, clf, v_scores = best
    fold_into_head(model, cell.arch, clf.coef_[0], float(clf.intercept_[0]), mu, sigma)
    out_dir = Path(out_dir)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out_dir / CELL_WEIGHTS))
    pd.DataFrame({"label": np.asarray(yva if yva is not None else [], dtype=np.int64),
                  "score": np.asarray(v_scores, dtype=np.float64)}).to_parquet(out_dir / VAL_SCORES, index=False)
    model.eval()
    scores, labels, metas = [], [], []
    with torch.no_grad():
        for b in data.evaluation():
            x = b.images.to(device)
            x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float())
            scores.append(torch.softmax(model((x - mean) / std).float(), dim=1)[:, 1].cpu().numpy())
            labels.append(np.asarray(b.labels))
            metas.extend(b.meta)
    pred = pd.DataFrame(metas)
    pred["label"] = (np.concatenate(labels) if labels else np.zeros(0)).astype(np.int64)
    pred["score"] = (np.concatenate(scores) if scores else np.zeros(0)).astype(np.float64)
    pred.to_parquet(out_dir / PREDICTIONS, index=False)
    (out_dir / CURVES).write_text("")
    return {
        "arch_family": arch_family(cell.arch), "init": f"{loaded.kind}, linear probe", "kind": "probe",
        "weights": loaded.to_json(), "n_train": int(len(ytr)), "n_train_pos": int(ytr.sum()), "selected_epoch": 0,
        "val_criterion": crit, "probe_C": c, "train_seconds": round(time.time() - t0, 2), "epochs": 0, "steps": 0,
        "precision": "fp32", "channels_last": False, "bn_recalibration_batches": 0,
        "sanity": sanity_verdicts(v_scores, yva if yva is not None else np.zeros(0, np.int64),
                                  patients=[m.get("patient_hash") for m in vmeta]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def embed_images(images_dir: str | Path, out: str | Path, arch: str, *, pretrained_file: str | None = None,
                 model_dir: str | None = None, img_size: int = 224, splits=None, batch_size: int = 64,
                 device: str = "auto") -> dict:
    """Backbone features of every ECG of the rendered image shards -> Parquet (ecg_uid, split, site, f0..)."""
    from heartbeit.data.loading.dealing import read_index
    from heartbeit.data.loading.loader import make_loader
    from heartbeit.models import zoo
    from heartbeit.train.finetune import Batch, resolve_device

    dev = resolve_device(device)
    if model_dir:
        from heartbeit.modelio import load_model_dir

        model, config = load_model_dir(model_dir, str(dev))
        arch = config["architecture"]
        mean, std = config["normalization"]["mean"], config["normalization"]["std"]
    else:
        model, _ = zoo.create_classifier(arch, num_classes=2, img_size=img_size, pretrained_file=pretrained_file)
        model.to(dev)
        mean, std = zoo.normalization(arch)
    if zoo.is_signal_arch(arch):
        raise ValueError(f"{arch}: embed takes image backbones")
    index = read_index(images_dir)
    if model_dir and (config["image_size"], config["layout"]) != (index.get("image_size"), index.get("layout")):
        raise ValueError(f"{model_dir}: the model reads {config['layout']} images at {config['image_size']} px, "
                         f"{images_dir} holds {index.get('layout')} at {index.get('image_size')} px")
    unknown = sorted(set(splits or []) - set(index["splits"]))
    if unknown:
        raise ValueError(f"{images_dir}: no split {unknown[0]!r} (splits: {', '.join(sorted(index['splits']))})")
    frames = []
    for split in (splits or sorted(index["splits"])):
        loader = make_loader(images_dir, split, batch_size, 0, train=False)
        batches = (Batch(images=b["image"], labels=None, meta=b["meta"]) for b in loader)
        f, _, metas = backbone_features(model, batches, mean, std, dev)
        df = pd.DataFrame(f, columns=[f"f{i}" for i in range(f.shape[1])])
        df.insert(0, "ecg_uid", [m["ecg_uid"] for m in metas])
        df.insert(1, "split", split)
        df.insert(2, "site", [m.get("site") for m in metas])
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    from heartbeit.utils.io import atomic_path

    with atomic_path(out) as tmp:  # never a half-written file at `out`
        table.to_parquet(tmp, index=False)
    return {"ecgs": int(len(table)), "features": int(table.shape[1] - 3), "arch": arch}
