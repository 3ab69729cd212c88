"""`heartbeit predict`: score new ECG files with an exported model folder (heartbeit.modelio).

Files go through the same ingest as the corpus (listing, format detection, quality and plausibility gates,
corpus rate and length: heartbeit.data.ingest.process_file under the model's own ingest settings), then
the model's own filters and layout, then batched inference (the GPU when there is one). Outputs:
- PRED.csv: one row per accepted ECG: `source` (path relative to its input root), `ecg_uid`, `p_<task>`,
  `<task>_pred` (1 when p >= the model's threshold); amplitude-normalised files (heartbeit.data.amplitude)
  are refused, or, where the model's ingest.amplitude_normalised is `accept`, scored and flagged in a column;
- PRED.rejects.csv: `source`, `reason`, `detail` per refused file;
- with --labels: PRED.metrics.json (AUROC/AUPRC and sensitivity/specificity/PPV/NPV at the threshold with
  95 % CIs on the scored ECGs that have a label);
- with --saliency DIR: per-ECG gradient maps (`<ecg_uid>.npz`: map [H, W], lead/time of the peak).
These are the user's own outputs inside their secure zone: written with mode 0600 (folders 0700), and
never copied into a corpus, images or results."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("heartbeit.predict")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT: set it


def sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def model_inputs(waves_uV: np.ndarray, config: dict) -> np.ndarray:
    """int16 uV [B, 12, n] at the corpus rate -> what the model reads: uint8 images [B, 1, H, W] or float32
    waveforms [B, 12, L] in mV, through the render stage's own code and the model's settings."""
    from heartbeit.config import RenderConfig
    from heartbeit.config.core import from_dict
    from heartbeit.data.render import render_batch, render_kwargs
    from heartbeit.data.shard_format import wave_for_storage
    from heartbeit.data.signal import preprocess

    rcfg = from_dict(RenderConfig, {k: v for k, v in config["render"].items()})
    fs = float(config["ingest"]["corpus_fs"])
    target = float(rcfg.resample_hz or fs)
    filtered = preprocess(waves_uV.astype(np.float32) / 1000.0, fs, rcfg, fs_out=target)
    if config["modality"] == "wave":
        return wave_for_storage(filtered, target, rcfg.wave_hz, rcfg.duration_s).astype(np.float32) / 1000.0
    return render_batch(filtered, target, **render_kwargs(rcfg))[:, None]


def run_predict(inputs: list[str], model_dir: str | Path, out: str | Path, key: bytes, *,
                labels_csv: str | None = None, label_key: str | None = None, saliency_dir: str | None = None,
                batch_size: int = 32, device: str = "auto", progress: bool = True, workers: int = 1) -> dict:
    import torch
    from tqdm import tqdm

    from heartbeit.config import IngestConfig
    from heartbeit.config.core import from_dict
    from heartbeit.data.amplitude import mark_predictions
    from heartbeit.data.arrays import ArrayDefaults
    from heartbeit.data.header_labels import HeaderLabelMap
    from heartbeit.data.ingest import Context, _init_worker, _worker_died, process_file
    from heartbeit.data.labels import TASK_COLUMNS, corpus_label_columns, load_labels
    from heartbeit.data.listing import list_inputs
    from heartbeit.data.pool import ordered_map
    from heartbeit.data.ptbxl import ScpTaskMap
    from heartbeit.modelio import load_model_dir

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model, config = load_model_dir(model_dir, str(dev))
    task = config["tasks"][0]
    threshold = float(config["threshold"]["value"])
    icfg = from_dict(IngestConfig, config["ingest"])
    label_key = label_key or icfg.label_key
    # the task's own source column may come from the CSV too (e.g. a header-map label checked by hand)
    column = config["task_definitions"][task]["column"]
    extra = [*icfg.label_columns, *([column] if column not in (*TASK_COLUMNS, *icfg.label_columns) else [])]
    labels = load_labels(labels_csv, label_key, extra) if labels_csv else None
    ctx = Context(icfg, key, labels, label_key, "auto",
                  ArrayDefaults(icfg.array_fs, icfg.array_units, list(icfg.array_leads)),
                  ScpTaskMap.from_config(icfg), dict(icfg.site_map), HeaderLabelMap.from_config(icfg),
                  tuple(dict.fromkeys((*corpus_label_columns(icfg), *extra))))
    listing = list_inputs(inputs)
    files = listing.files
    accepted, rejects = [], [{"source": rel, "reason": reason, "detail": detail} for rel, reason, detail in listing.rejects]
    results = ordered_map(process_file, files, max(1, workers), icfg.chunk_size, _worker_died,
                          initializer=_init_worker, initargs=(ctx,))
    bar = tqdm(total=len(files), desc="predict: read", unit="file", disable=not progress)
    for item, result in zip(files, results):
        bar.update(1)
        if result[0] == "reject":
            rejects.append({"source": result[1], "reason": result[3], "detail": result[4]})
        else:
            accepted.append((item.rel, result[1], result[2]))
    bar.close()
    mean, std = config["normalization"]["mean"], config["normalization"]["std"]
    scores = np.zeros(len(accepted), dtype=np.float64)
    sal_dir = Path(saliency_dir) if saliency_dir else None
    bar = tqdm(total=len(accepted), desc="predict: score", unit="ecg", disable=not progress)
    for start in range(0, len(accepted), batch_size):
        part = accepted[start:start + batch_size]
        groups: dict[int, list[int]] = {}
        for i, (_, _, wave) in enumerate(part):  # equal lengths batch together (the corpus crops to duration_s)
            groups.setdefault(wave.shape[1], []).append(i)
        for idx in groups.values():
            x = model_inputs(np.stack([part[i][2] for i in idx]), config)
            t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
            t = (t.float() / 255.0 if t.dtype == torch.uint8 else t.float())
            t = (t - mean) / std
            if sal_dir is not None:
                t.requires_grad_(True)
            with torch.set_grad_enabled(sal_dir is not None):
                p = torch.softmax(model(t).float(), dim=1)[:, 1]
                if sal_dir is not None:
                    p.sum().backward()
            for j, i in enumerate(idx):
                scores[start + i] = float(p[j].detach())
            if sal_dir is not None:
                _write_saliency(sal_dir, [part[i][1]["ecg_uid"] for i in idx], t.grad.abs().amax(dim=1).cpu().numpy(),
                                config)
        bar.update(len(part))
    bar.close()
    out = Path(out)
    pred = pd.DataFrame({"source": [a[0] for a in accepted], "ecg_uid": [a[1]["ecg_uid"] for a in accepted],
                         f"p_{task}": scores, f"{task}_pred": (scores >= threshold).astype(np.int64)})
    normalised = mark_predictions(pred, [a[1] for a in accepted], rejects, icfg)  # per file: column or reject
    _write_private(out, pred.to_csv(index=False))
    _write_private(sibling(out, ".rejects.csv"), pd.DataFrame(rejects, columns=["source", "reason", "detail"]).to_csv(index=False))
    summary = {"n_inputs": len(files) + len(listing.rejects), "n_scored": len(accepted), "n_rejected": len(rejects),
               "task": task, "threshold": threshold, "device": str(dev), "skipped": dict(listing.skipped)}
    summary.update(normalised)
    if labels is not None:
        summary["metrics"] = _score_labels(accepted, scores, config, task, threshold)
        _write_private(sibling(out, ".metrics.json"), json.dumps(summary["metrics"], indent=2, default=float))
    return summary


def _score_labels(accepted, scores, config, task, threshold) -> dict:
    from heartbeit.eval.threshold import threshold_metrics
    from heartbeit.modelio import positive_labels

    definition = config["task_definitions"][task]
    column = pd.Series([a[1].get(definition["column"], math.nan) for a in accepted], dtype="float64")
    y = positive_labels(column, definition)
    known = ~np.isnan(y)
    metrics = threshold_metrics(y[known].astype(np.int64), scores[known], threshold)
    metrics["counts"]["unlabelled"] = int((~known).sum())
    return metrics


def _write_saliency(folder: Path, uids: list[str], maps: np.ndarray, config: dict) -> None:
    """Per ECG: the |gradient| map over the image and the lead / time (s) of its peak (render layout boxes)."""
    from heartbeit.data.render import locate

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for uid, m in zip(uids, maps):
        m = m if m.ndim == 2 else m.reshape(m.shape[-2:]) if m.ndim > 2 else m[None]
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        lead, t = ("", math.nan)
        if config["modality"] == "image":
            found = locate(config["layout"], config["image_size"], int(x), int(y), config["render"]["duration_s"],
                           config["render"]["mm_per_mv"])
            if found is not None:
                lead, t = found[0], float(found[1])
        path = folder / f"{uid}.npz"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, map=m.astype(np.float32), peak_lead=np.array(lead), peak_time_s=np.array(t))
