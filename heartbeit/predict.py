"""`heartbeit predict`: score new ECG files with an exported model folder (heartbeit.modelio).

Files go through the same ingest as the corpus (listing, format detection, quality and plausibility gates,
corpus rate and length: heartbeit.data.ingest.stage.process_file under the model's own ingest settings), then
the model's own filters and layout, then batched inference (the GPU when there is one). Outputs:
- PRED.csv: one row per accepted ECG: `source` (path relative to its input root), `ecg_uid`, `p_<task>`,
  `<task>_pred` (1 when p >= the model's threshold); amplitude-normalised files (heartbeit.data.ingest.amplitude)
  are refused, or, where the model's ingest.amplitude_normalised is `accept`, scored and flagged in a column;
- PRED.rejects.csv: `source`, `reason`, `detail` per refused file;
- with --labels: PRED.metrics.json (AUROC/AUPRC and sensitivity/specificity/PPV/NPV at the threshold with
  95 % CIs on the scored ECGs that have a label);
- with --saliency DIR: per-ECG gradient maps (`<ecg_uid>.npz`: map [H, W], lead/time of the peak).
These are the user's own outputs inside their secure zone: written with mode 0600 (folders 0700), and
never copied into a corpus, images or results. Where they may go, how they are written, which labels count
and which inputs are duplicates: heartbeit.predict_io. The model folder is untrusted input
(heartbeit.modelschema): its ingest bounds may only tighten the installed ones. A score that is not finite
stops the run before anything is written."""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.utils.text import safe_text

log = logging.getLogger("heartbeit.predict")


def model_inputs(waves_uV: np.ndarray, config: dict) -> np.ndarray:
    """int16 uV [B, 12, n] at the corpus rate -> what the model reads: uint8 images [B, 1, H, W] or float32
    waveforms [B, 12, L] in mV, through the render stage's own code and the model's settings."""
    from heartbeit.config import RenderConfig
    from heartbeit.config.core import from_dict
    from heartbeit.data.render.draw import render_batch, render_kwargs
    from heartbeit.data.shard_format import wave_for_storage
    from heartbeit.data.signal import preprocess

    rcfg = from_dict(RenderConfig, {k: v for k, v in config["render"].items()})
    fs = float(config["ingest"]["corpus_fs"])
    target = float(rcfg.resample_hz or fs)
    filtered = preprocess(waves_uV.astype(np.float32) / 1000.0, fs, rcfg, fs_out=target)
    if config["modality"] == "wave":
        return wave_for_storage(filtered, target, rcfg.wave_hz, rcfg.duration_s).astype(np.float32) / 1000.0
    return render_batch(filtered, target, **render_kwargs(rcfg))[:, None]


def resolve_device(device: str):
    """torch.device for --device (auto | cpu | cuda | cuda:N); PredictError for a GPU that is not there."""
    import re

    import torch

    from heartbeit.predict_io import PredictError

    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", device):
        raise PredictError(f"--device {safe_text(device, 40)!r}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise PredictError(f"--device {device}: no such CUDA GPU here ({torch.cuda.device_count()} visible); "
                               "use --device cpu or auto")
    return torch.device(device)


def run_predict(inputs: list[str], model_dir: str | Path, out: str | Path, key: bytes, *,
                labels_csv: str | None = None, label_key: str | None = None, label_column: str | None = None,
                saliency_dir: str | None = None, batch_size: int = 32, device: str = "auto", progress: bool = True,
                workers: int = 1, overwrite: bool = False, protected: tuple = ()) -> dict:
    """Score `inputs` (see the module docstring and heartbeit.predict_io); returns the run's summary.
    `protected`: further paths no output may replace (the key file)."""
    import torch
    from tqdm import tqdm

    from heartbeit.config.tasks import TASK_NAME
    from heartbeit.data.ingest.amplitude import mark_predictions
    from heartbeit.data.ingest.arrays import ArrayDefaults
    from heartbeit.data.ingest.header_labels import HeaderLabelMap
    from heartbeit.data.ingest.stage import Context, _init_worker, _worker_died, process_file
    from heartbeit.data.ingest.labels import TASK_COLUMNS, LabelError, corpus_label_columns, read_table
    from heartbeit.data.ingest.listing import list_inputs
    from heartbeit.data.ingest.pool import ordered_map
    from heartbeit.data.ingest.ptbxl import ScpTaskMap
    from heartbeit.data.reasons import Reason
    from heartbeit.modelio import load_model_dir
    from heartbeit.modelschema import effective_ingest
    from heartbeit.predict_io import (PredictError, check_outputs, label_source, read_label_column,
                                      same_file_duplicates)

    if batch_size < 1 or workers < 1:
        raise PredictError(f"--batch-size and --workers must be >= 1, got {batch_size} and {workers}")
    if label_column is not None and not TASK_NAME.fullmatch(label_column):
        raise PredictError(f"--label-column {safe_text(label_column, 40)!r}: a column name (lower-case letters, "
                           "digits, '_')")
    paths = check_outputs(out, inputs, [model_dir, labels_csv, *protected], saliency_dir, overwrite)
    dev = resolve_device(device)
    model, config = load_model_dir(model_dir, str(dev))
    task = config["tasks"][0]
    threshold = float(config["threshold"]["value"])
    icfg = effective_ingest(config)
    label_key = label_key or icfg.label_key
    source = labels = None
    refused_rows = 0
    if labels_csv:
        source = label_source(config, task, label_column, list(read_table(labels_csv, label_key).columns))
        labels, refused_rows = read_label_column(labels_csv, label_key, source)
    # The task's own column may also come from the files themselves (a header-map label checked by hand):
    # the worker fills it from WFDB/PTB-XL statements; the CSV wins where it has a value.
    column = config["task_definitions"][task]["column"]
    extra = [*icfg.label_columns, *([column] if column not in (*TASK_COLUMNS, *icfg.label_columns) else [])]
    ctx = Context(icfg, key, None, label_key, "auto",
                  ArrayDefaults(icfg.array_fs, icfg.array_units, list(icfg.array_leads)),
                  ScpTaskMap.from_config(icfg), {}, HeaderLabelMap.from_config(icfg),
                  tuple(dict.fromkeys((*corpus_label_columns(icfg), *extra))))
    listing = list_inputs(inputs, check_sites=False)
    files, duplicates = same_file_duplicates(listing.files)
    rejects = [{"source": rel, "reason": reason, "detail": detail} for rel, reason, detail in listing.rejects + duplicates]
    accepted, seen = [], set()
    results = ordered_map(process_file, files, max(1, workers), icfg.chunk_size, _worker_died,
                          initializer=_init_worker, initargs=(ctx,))
    bar = tqdm(total=len(files), desc="predict: read", unit="file", disable=not progress)
    for item, result in zip(files, results):
        bar.update(1)
        if result[0] == "reject":
            rejects.append({"source": result[1], "reason": result[3], "detail": result[4]})
        elif result[1]["ecg_uid"] in seen:
            rejects.append({"source": item.rel, "reason": Reason.DUPLICATE_RECORDING.value,
                            "detail": f"{item.rel}: same waveform as an earlier input"})
        else:
            seen.add(result[1]["ecg_uid"])
            accepted.append((item.rel, result[1], result[2], result[3].get("label_key_value")))
    bar.close()
    mean, std = config["normalization"]["mean"], config["normalization"]["std"]
    scores = np.zeros(len(accepted), dtype=np.float64)
    sal_dir = Path(saliency_dir) if saliency_dir else None
    bar = tqdm(total=len(accepted), desc="predict: score", unit="ecg", disable=not progress)
    for start in range(0, len(accepted), batch_size):
        part = accepted[start:start + batch_size]
        groups: dict[int, list[int]] = {}
        for i, (_, _, wave, _) in enumerate(part):  # equal lengths batch together (the corpus crops to duration_s)
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
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise PredictError(f"the model gave {bad} of {len(scores)} ECGs a NaN or infinite score; nothing was "
                           "written (its weights or normalisation are broken: re-export it)")
    summary = {"n_inputs": len(listing.files) + len(listing.rejects), "n_scored": len(accepted),
               "n_rejected": len(rejects), "by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
               "task": task, "threshold": threshold, "device": str(dev), "skipped": dict(listing.skipped)}
    flags = pd.DataFrame(index=range(len(accepted)))  # the amplitude-normalised column, under `accept` only
    summary.update(mark_predictions(flags, [a[1] for a in accepted], rejects, icfg))  # per file: column or reject
    if labels is not None:
        try:
            summary["metrics"] = _score_labels(accepted, scores, config, task, threshold, labels, source, refused_rows)
        except ValueError as exc:
            raise LabelError(str(exc)) from None
    _write_outputs(paths, accepted, scores, rejects, task, threshold, summary.get("metrics"), flags)
    return summary


def _write_outputs(paths: dict, accepted, scores, rejects, task, threshold, metrics,
                   extra: pd.DataFrame | None = None) -> None:
    from heartbeit.predict_io import spreadsheet_safe, write_private

    pred = pd.DataFrame({"source": [a[0] for a in accepted], "ecg_uid": [a[1]["ecg_uid"] for a in accepted],
                         f"p_{task}": scores, f"{task}_pred": (scores >= threshold).astype(np.int64)})
    for column in (extra.columns if extra is not None else ()):
        pred[column] = extra[column].to_numpy()
    rej = pd.DataFrame(rejects, columns=["source", "reason", "detail"])
    if metrics is not None:
        write_private(paths["metrics"], json.dumps(metrics, indent=2, default=float))
    write_private(paths["rejects"], spreadsheet_safe(rej, ("source", "detail")).to_csv(index=False))
    write_private(paths["pred"], spreadsheet_safe(pred, ("source",)).to_csv(index=False))


def _score_labels(accepted, scores, config, task, threshold, labels: dict, source: dict, refused_rows: int) -> dict:
    """Metrics against the labels: the CSV's value where it has one (refused values count, never score),
    else the file's own statement of the task column (when the CSV column is the task's)."""
    from heartbeit.eval.threshold import threshold_metrics
    from heartbeit.modelio import positive_labels

    definition = config["task_definitions"][task]
    from_files = positive_labels(pd.Series([a[1].get(definition["column"], math.nan) for a in accepted],
                                           dtype="float64"), definition)
    y = np.full(len(accepted), np.nan)
    for i, a in enumerate(accepted):
        value = labels.get(a[3]) if a[3] is not None else None
        if value is not None and not math.isnan(value):
            y[i] = value
        elif not source["differs_from_task"]:
            y[i] = from_files[i]
    refused = np.isinf(y)
    known = np.isfinite(y)
    metrics = threshold_metrics(y[known].astype(np.int64), scores[known], threshold)
    metrics["counts"].update(unlabelled=int((np.isnan(y)).sum()), refused_label=int(refused.sum()),
                             csv_rows_refused=int(refused_rows))
    metrics["labels"] = {
        "column": source["column"], "model_task": task, "task_column": source["task_column"],
        "rule": source["rule"] or "0/1", "differs_from_task": source["differs_from_task"],
        "note": (f"scored against labels column {source['column']!r}, which is not the model's task {task!r} "
                 f"(column {source['task_column']!r})") if source["differs_from_task"] else
                f"scored against the model's own task column {source['column']!r}"}
    if refused.any() or refused_rows:
        log.warning("labels: %d CSV rows have a value that is not %s (refused, not scored as negatives); %d scored "
                    "ECGs affected", refused_rows, "a number" if source["rule"] else "0/1", int(refused.sum()))
    return metrics


def _write_saliency(folder: Path, uids: list[str], maps: np.ndarray, config: dict) -> None:
    """Per ECG: the |gradient| map over the image and the lead / time (s) of its peak (render layout boxes)."""
    import io

    from heartbeit.data.render.draw import locate
    from heartbeit.predict_io import private_folder, write_private

    private_folder(folder)
    for uid, m in zip(uids, maps):
        m = m if m.ndim == 2 else m.reshape(m.shape[-2:]) if m.ndim > 2 else m[None]
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        lead, t = ("", math.nan)
        if config["modality"] == "image":
            found = locate(config["layout"], config["image_size"], int(x), int(y), config["render"]["duration_s"],
                           config["render"]["mm_per_mv"])
            if found is not None:
                lead, t = found[0], float(found[1])
        buf = io.BytesIO()
        np.savez_compressed(buf, map=m.astype(np.float32), peak_lead=np.array(lead), peak_time_s=np.array(t))
        write_private(folder / f"{uid}.npz", buf.getvalue())
