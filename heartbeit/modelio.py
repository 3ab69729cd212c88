"""A trained cell as a self-contained model folder (`heartbeit export`), and loading one back (`predict`).

    MODEL_DIR/
      model.safetensors   the cell's selected weights (safetensors: loading never unpickles)
      config.json         architecture and its timm arguments, the input pipeline (ingest gates, corpus
                          rate, render layout/filters/size), normalisation, the task and the meaning of
                          each output, the decision threshold (Youden's J on the validation split), versions
      README.md           the model card: training data, metrics with 95 % CIs, intended use, limits

Load it in Python exactly as the card shows (`timm.create_model(config["architecture"], **config["model_kwargs"])`
after `import heartbeit.models.zoo`, then `load_state_dict(safetensors.torch.load_file(...))`).
A folder written by another heartbeit version or another folder format, one without config.json, or whose
weights do not fit its declared architecture/image size is refused with a `ModelDirError` that says which."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.config.layout import CELL_RECORD, CELL_WEIGHTS, PREDICTIONS, VAL_SCORES

FORMAT = "heartbeit-model/1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"  # in an exported model folder (the same name as in a cell, by choice)


class ModelDirError(ValueError):
    """A model folder that cannot be used; the message says why."""


def _run_config(cell_dir: Path, config_file: str | Path | None):
    from heartbeit.config import load_config

    path = Path(config_file) if config_file else cell_dir.parent.parent / "config.resolved.yaml"
    if not path.is_file():
        raise ModelDirError(f"{cell_dir}: no run config at {path} (the matrix plan writes it; or pass --config)")
    return load_config(None, config_file=path)


def _task_definition(cfg, task: str) -> dict:
    spec = cfg.render.tasks.get(task)
    return {"column": spec.column, "positive": spec.positive} if spec else {"column": task, "positive": "== 1"}


def _metrics_with_ci(pred: pd.DataFrame, threshold: float) -> dict:
    from heartbeit.eval.threshold import threshold_metrics

    out = {}
    for split, part in pred.groupby("split", sort=True):
        out[str(split)] = threshold_metrics(part["label"].to_numpy(), part["score"].to_numpy(), threshold)
    return out


def export_cell(cell_dir: str | Path, out: str | Path, config_file: str | Path | None = None) -> dict:
    """Write the model folder of a finished cell; returns its config.json content."""
    from heartbeit import __version__
    from heartbeit.data.render_stage import RENDER_FIELDS
    from heartbeit.eval.threshold import youden_threshold
    from heartbeit.models import zoo
    from heartbeit.utils.io import atomic_write_json, atomic_write_text, code_version

    cell_dir, out = Path(cell_dir), Path(out)
    for name in (CELL_RECORD, CELL_WEIGHTS, PREDICTIONS):
        if not (cell_dir / name).is_file():
            raise ModelDirError(f"{cell_dir}: no {name} - not a finished matrix cell (run it to completion)")
    if not (cell_dir / VAL_SCORES).is_file():
        raise ModelDirError(f"{cell_dir}: no val_scores.parquet (the cell predates export: re-run it to choose "
                            "a threshold on its validation scores)")
    cell = json.loads((cell_dir / CELL_RECORD).read_text())
    cfg = _run_config(cell_dir, config_file)
    arch, task = cell["arch"], cell["task"]
    val = pd.read_parquet(cell_dir / VAL_SCORES)
    threshold = youden_threshold(val["label"].to_numpy(), val["score"].to_numpy())
    pred = pd.read_parquet(cell_dir / PREDICTIONS)
    mean, std = zoo.normalization(arch)
    config = {
        "format": FORMAT, "heartbeit_version": __version__, "code_version": code_version(),
        "architecture": arch, "model_kwargs": zoo.classifier_kwargs(arch, 2, cfg.matrix.image_size, finetune=False),
        "modality": zoo.input_modality(arch), "image_size": int(cfg.render.image_size), "layout": cfg.render.layout,
        "render": {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                   ((k, getattr(cfg.render, k)) for k in RENDER_FIELDS)},
        "ingest": asdict(cfg.ingest) | {"key_file": ""},  # the quality gates and corpus rate; never a key path
        "normalization": {"mean": mean, "std": std,
                          "input": "uint8 image / 255" if zoo.input_modality(arch) == "image" else "waveform in mV"},
        "tasks": [task], "task_definitions": {task: _task_definition(cfg, task)},
        "outputs": [{"index": 0, "meaning": f"not {task} (softmax probability)"},
                    {"index": 1, "name": f"p_{task}", "meaning": f"probability of {task} (softmax)"}],
        "threshold": {"value": threshold, "method": "Youden's J on the validation split of the selected epoch",
                      "n_val": int(len(val)), "n_val_pos": int(val["label"].sum()),
                      "decision": f"{task}_pred = 1 when p_{task} >= value"},
        "cell": {k: cell.get(k) for k in ("cell_id", "fraction", "seed", "draw", "selected_epoch", "n_train",
                                          "n_train_pos", "init", "epochs", "profile")},
        "metrics": _metrics_with_ci(pred, threshold),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHTS).write_bytes((cell_dir / CELL_WEIGHTS).read_bytes())
    atomic_write_json(out / CONFIG, config)
    atomic_write_text(out / "README.md", model_card(config))
    load_model_dir(out)  # what was written loads (weights fit the declared architecture and size)
    return config


def _fmt(m: dict) -> str:
    if not math.isfinite(m["value"]):
        return f"n/a ({m['reason']})"
    ci = f" ({m['low']:.3f}-{m['high']:.3f})" if math.isfinite(m["low"]) else f" ({m['reason']})"
    return f"{m['value']:.3f}{ci}"


def model_card(config: dict) -> str:
    task, cell, thr = config["tasks"][0], config["cell"], config["threshold"]
    td = config["task_definitions"][task]
    lines = [f"# {config['architecture']} — {task}", "",
             f"A binary ECG-image classifier for **{task}** (label column `{td['column']}`, positive when "
             f"`{td['column']} {td['positive']}`), trained with HeartBEiT Bench {config['heartbeit_version']} "
             f"({config['code_version']}).", "",
             "## Load", "", "```python", "import json, safetensors.torch, timm",
             "import heartbeit.models.zoo  # registers heartbeit_* / vit_* sizes and signal models with timm",
             "cfg = json.load(open('MODEL_DIR/config.json'))",
             "model = timm.create_model(cfg['architecture'], pretrained=False, **cfg['model_kwargs'])",
             "model.load_state_dict(safetensors.torch.load_file('MODEL_DIR/model.safetensors'))",
             "model.eval()  # input: (image/255 - mean) / std, 1 channel; output 1 after softmax = p", "```", "",
             "Or score files directly: `heartbeit predict INPUT... --model MODEL_DIR --out PRED.csv [--labels CSV]`.", "",
             "## Input", "",
             f"12-lead ECGs through heartbeit's ingest gates, resampled to {config['ingest']['corpus_fs']} Hz, "
             f"{config['ingest']['duration_s']:g} s, filtered {config['render']['bandpass_hz']} Hz, drawn in the "
             f"`{config['layout']}` layout at {config['image_size']} px; normalisation mean "
             f"{config['normalization']['mean']:.3f}, std {config['normalization']['std']:.3f}.", "",
             "## Outputs", ""]
    lines += [f"- output {o['index']}: {o['meaning']}" for o in config["outputs"]]
    lines += ["", f"Decision threshold {thr['value']:.4f} ({thr['method']}; {thr['n_val']} ECGs, "
              f"{thr['n_val_pos']} positive).", "",
              "## Training data", "",
              f"{cell.get('n_train')} training ECGs ({cell.get('n_train_pos')} positive) at training fraction "
              f"{cell.get('fraction')}, seed {cell.get('seed')}, draw {cell.get('draw')}, initialisation "
              f"{cell.get('init')}, epoch {cell.get('selected_epoch')} of {cell.get('epochs')} selected on "
              f"validation (profile {cell.get('profile')}).", "",
              "## Metrics (95 % CIs: AUROC DeLong, AUPRC bootstrap, rates Wilson)", "",
              "| set | n | AUROC | AUPRC | sensitivity | specificity | PPV | NPV |", "|---|---|---|---|---|---|---|---|"]
    for split, m in config["metrics"].items():
        lines.append(f"| {split} | {m['counts']['n']} | " + " | ".join(
            _fmt(m[k]) for k in ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")) + " |")
    lines += ["", "## Intended use", "",
              "Research: benchmarking and external validation on your own labelled ECGs inside your secure "
              "environment. Not a medical device; not for diagnosis or treatment decisions.", "",
              "## Limits", "",
              "- Scores are calibrated only to the training population; the threshold was chosen on its "
              "validation split and shifts with prevalence, device and site.",
              "- Inputs that fail the ingest gates are refused, not scored; other acquisition settings, paced "
              "or paediatric ECGs may be out of distribution.",
              "- Small validation/test sets give wide intervals (see the table); re-validate before any use.", ""]
    return "\n".join(lines)


def load_model_dir(model_dir: str | Path, device: str = "cpu"):
    """(model in eval mode, config dict); ModelDirError for another version, a missing config or weights
    that do not fit the declared architecture / image size."""
    import timm
    import torch
    from safetensors.torch import load_file

    from heartbeit import __version__
    from heartbeit.models import zoo  # noqa: F401 - registers the suite's architectures with timm

    model_dir = Path(model_dir)
    cfg_path = model_dir / CONFIG
    if not cfg_path.is_file():
        raise ModelDirError(f"{model_dir}: no {CONFIG} - not a model folder (make one with `heartbeit export`)")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{cfg_path}: not readable JSON ({type(exc).__name__})") from None
    if config.get("format") != FORMAT:
        raise ModelDirError(f"{model_dir}: folder format {config.get('format')!r}, this heartbeit reads {FORMAT!r}")
    if config.get("heartbeit_version") != __version__:
        raise ModelDirError(f"{model_dir}: exported by heartbeit {config.get('heartbeit_version')!r}, this is "
                            f"{__version__}; re-export the cell with this version")
    kwargs = dict(config.get("model_kwargs") or {})
    if "img_size" in kwargs and kwargs["img_size"] != config.get("image_size"):
        raise ModelDirError(f"{model_dir}: image size mismatch: the model takes {kwargs['img_size']} px, the "
                            f"input pipeline renders {config.get('image_size')} px")
    if not (model_dir / WEIGHTS).is_file():
        raise ModelDirError(f"{model_dir}: no {WEIGHTS}")
    arch = config.get("architecture", "")
    if not timm.is_model(arch):
        raise ModelDirError(f"{model_dir}: unknown architecture {arch!r}")
    model = timm.create_model(arch, pretrained=False, **kwargs)
    state = load_file(str(model_dir / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        shapes = "size mismatch" in str(exc)
        raise ModelDirError(f"{model_dir}: the weights do not fit {arch} as declared"
                            + (f" (tensor shapes differ: image size mismatch? declared {kwargs.get('img_size', config.get('image_size'))} px)"
                               if shapes else " (missing or unexpected tensors)")) from None
    model.eval()
    return model.to(torch.device(device)), config


def positive_labels(values: pd.Series, definition: dict) -> np.ndarray:
    """0/1/NaN for a task from its label column (config.tasks.TaskSpec: one home for the rule)."""
    from heartbeit.config.tasks import TaskSpec

    return TaskSpec(definition["column"], definition["positive"]).apply(values)
