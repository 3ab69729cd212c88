"""A trained cell as a self-contained model folder (`heartbeit export`), and loading one back (`predict`,
`embed --model`). What the folder may hold, and how it is read, is heartbeit.modelschema's one schema.

    MODEL_DIR/
      model.safetensors   the cell's selected weights, re-saved from the model they loaded into (the
                          architecture's tensor names; safetensors metadata {"format": "pt"} only)
      config.json         the architecture and image size, the input pipeline (ingest gates, corpus rate,
                          render layout/filters), normalisation, the task and the meaning of each output, the
                          decision threshold (Youden's J on the validation split), the cell's training facts,
                          metrics with 95 % CIs, versions - every key on modelschema's allow-list
      README.md           the model card (heartbeit.modelcard), rendered from config.json alone

Publishable by construction: config.json is built field by field from validated values (nothing of the
cell record or the run config is copied wholesale: no key path, no site map, no site names, no paths),
counts below k (`report.export_min_count`, default 10; `--min-count`) are withheld (modelschema), and the
result passes the reader's own schema before anything is written. The folder is written into a temporary
folder beside the target and renamed into place; an existing target is replaced whole only with
`overwrite` and only when it is a model folder.

Loading never trusts the folder: config.json is validated before use, the model is built by our code from
the validated architecture and image size (its tensor shapes are compared with the weights' on the meta
device first, so a crafted folder cannot make us allocate more than its weights file holds), and the
weights are read as bounded safetensors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from heartbeit.modelschema import (CARD, CONFIG, FILES, FORMAT, INPUT_NOTE, MAX_CONFIG_BYTES, SPLITS, THRESHOLD_METHOD,
                                   WEIGHTS, WEIGHTS_METADATA, ModelDirError, _Check, check_architecture, class_counts,
                                   decision_of, ingest_fields, outputs_of, parse_json, publish_metrics, read_bounded,
                                   read_safetensors, validate_config)
from heartbeit.records import CELL_RECORD, CELL_WEIGHTS, PREDICTIONS, RESOLVED_CONFIG, VAL_SCORES
from heartbeit.utils.text import safe_text

__all__ = ["FORMAT", "CONFIG", "WEIGHTS", "ModelDirError", "export_cell", "load_model_dir", "read_model_config",
           "model_from_tensors", "positive_labels"]


def _run_config(cell_dir: Path, config_file: str | Path | None):
    from heartbeit.config import load_config

    path = Path(config_file) if config_file else cell_dir.parent.parent / RESOLVED_CONFIG
    if not path.is_file():
        raise ModelDirError(f"{cell_dir}: no run config at {path} (the matrix plan writes it; or pass --config)")
    return load_config(None, config_file=path)


def _task_definition(cfg, task: str) -> dict:
    spec = cfg.render.tasks.get(task)
    return {"column": spec.column, "positive": spec.positive} if spec else {"column": task, "positive": "== 1"}


def _check_target(cell_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse a target that is a link, a file, an existing folder (without `overwrite`, or one that is not a
    model folder), inside a cell folder, or a folder holding the cell."""
    if out.is_symlink():
        raise ModelDirError(f"--out {out}: is a symbolic link; name the model folder itself")
    if out.exists():
        if not out.is_dir():
            raise ModelDirError(f"--out {out}: exists and is not a folder")
        if not overwrite:
            raise ModelDirError(f"--out {out}: exists; pass --overwrite to replace it whole")
        others = sorted(p.name for p in out.iterdir() if p.name not in FILES)
        if others:
            raise ModelDirError(f"--out {out}: holds files a model folder does not ({len(others)}, e.g. "
                                f"{safe_text(others[0], 60)!r}); --overwrite replaces model folders only")
    target, cell = out.resolve(), cell_dir.resolve()
    if target == cell or cell in target.parents or target in cell.parents:
        raise ModelDirError(f"--out {out}: inside the cell folder or holding it; write the model elsewhere")
    for folder in target.parents:
        if (folder / CELL_RECORD).is_file():
            raise ModelDirError(f"--out {out}: inside a matrix cell folder; write the model elsewhere")


def _profile(cfg) -> str:
    from heartbeit.config import PROFILES

    return cfg.profile if cfg.profile in PROFILES else "custom"


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ModelDirError(f"cell.json {name}: expected an integer")
    return int(value)


def export_cell(cell_dir: str | Path, out: str | Path, config_file: str | Path | None = None, *,
                overwrite: bool = False, min_count: int | None = None) -> dict:
    """Write the model folder of a finished cell (see the module docstring); returns its config.json."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from heartbeit import __version__
    from heartbeit.data.render.plan import RENDER_FIELDS
    from heartbeit.eval.threshold import threshold_metrics, youden_threshold
    from heartbeit.modelcard import model_card
    from heartbeit.models import zoo
    from heartbeit.utils.io import atomic_dir, atomic_write_text, code_version

    cell_dir, out = Path(cell_dir), Path(out)
    for name in (CELL_RECORD, CELL_WEIGHTS, PREDICTIONS):
        if not (cell_dir / name).is_file():
            raise ModelDirError(f"{cell_dir}: no {name} - not a finished matrix cell (run it to completion)")
    if not (cell_dir / VAL_SCORES).is_file():
        raise ModelDirError(f"{cell_dir}: no val_scores.parquet (the cell predates export: re-run it to choose "
                            "a threshold on its validation scores)")
    _check_target(cell_dir, out, overwrite)
    cell = parse_json(read_bounded(cell_dir / CELL_RECORD, MAX_CONFIG_BYTES, cell_dir), f"{cell_dir}: {CELL_RECORD}",
                      allow_nan=True)
    if not isinstance(cell, dict):
        raise ModelDirError(f"{cell_dir}: {CELL_RECORD} is not an object")
    cfg = _run_config(cell_dir, config_file)
    k = int(min_count if min_count is not None else cfg.report.export_min_count)
    arch, task = cell.get("arch"), cell.get("task")
    check_architecture(arch, zoo.input_modality(arch) if isinstance(arch, str) else None, _Check(f"{cell_dir}: cell"))
    val = pd.read_parquet(cell_dir / VAL_SCORES)
    try:
        threshold = youden_threshold(val["label"].to_numpy(), val["score"].to_numpy())
    except ValueError as exc:
        raise ModelDirError(f"{cell_dir}: {exc}") from None
    pred = pd.read_parquet(cell_dir / PREDICTIONS)
    size = int(cfg.render.image_size)
    state = model_from_tensors(arch, size, read_safetensors(cell_dir / CELL_WEIGHTS, cell_dir),
                               f"{cell_dir}: {CELL_WEIGHTS}").state_dict()
    mean, std = zoo.normalization(arch)
    modality = zoo.input_modality(arch)
    n_val, n_val_pos, _ = class_counts(len(val), int(val["label"].sum()), k)
    n_train, n_train_pos, _ = class_counts(_int(cell.get("n_train"), "n_train"),
                                           _int(cell.get("n_train_pos"), "n_train_pos"), k)
    metrics = {}
    for split, part in pred.groupby("split", sort=True):
        if split not in SPLITS:  # the split names of the image shards; never a site name
            raise ModelDirError(f"{cell_dir}: predictions hold split {safe_text(split, 40)!r}, not one of {SPLITS}")
        metrics[str(split)] = publish_metrics(
            threshold_metrics(part["label"].to_numpy(), part["score"].to_numpy(), threshold), k)
    config = {
        "format": FORMAT, "heartbeit_version": __version__, "code_version": code_version(),
        "architecture": arch, "modality": modality, "image_size": size, "layout": cfg.render.layout,
        "render": {f: (list(v) if isinstance(v, tuple) else v) for f, v in
                   ((f, getattr(cfg.render, f)) for f in RENDER_FIELDS)},
        "ingest": {f: v for f, v in asdict(cfg.ingest).items() if f in ingest_fields()},
        "normalization": {"mean": mean, "std": std, "input": INPUT_NOTE[modality]},
        "tasks": [task], "task_definitions": {task: _task_definition(cfg, task)} if isinstance(task, str) else {},
        "outputs": outputs_of(str(task)),
        "threshold": {"value": threshold, "method": THRESHOLD_METHOD, "n_val": n_val, "n_val_pos": n_val_pos,
                      "decision": decision_of(str(task))},
        "cell": {"cell_id": cell.get("cell_id"), "kind": cell.get("kind", "finetune"),
                 "fraction": cell.get("fraction"), "seed": cell.get("seed"), "draw": cell.get("draw"),
                 "selected_epoch": cell.get("selected_epoch"), "n_train": n_train, "n_train_pos": n_train_pos,
                 "init": cell.get("init"), "epochs": cell.get("epochs"), "profile": _profile(cfg)},
        "metrics": metrics,
        "suppression": {"min_count": k},
    }
    validate_config(config, f"{out} (export of {cell_dir})")  # what the reader would refuse is never written
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_file({n: t.detach().cpu().contiguous() for n, t in state.items()}, str(tmp / WEIGHTS),
                  metadata=dict(WEIGHTS_METADATA))
        atomic_write_text(tmp / CONFIG, json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n")
        atomic_write_text(tmp / CARD, model_card(config))
        os.chmod(tmp / WEIGHTS, os.stat(tmp / CONFIG).st_mode & 0o777)  # one mode for the folder's files
        load_model_dir(tmp)  # what was written loads (weights fit the declared architecture and size)
    return config


def read_model_config(model_dir: str | Path) -> dict:
    """config.json of a model folder, read with bounds and checked against the folder format."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"{safe_text(model_dir)}: not a folder (a model folder from `heartbeit export`)")
    raw = read_bounded(model_dir / CONFIG, MAX_CONFIG_BYTES, model_dir)
    return validate_config(parse_json(raw, f"{safe_text(model_dir)}: {CONFIG}"), safe_text(model_dir))


def model_from_tensors(arch: str, image_size: int, tensors: dict, where: str):
    """The classifier `arch` at `image_size` (built by our code: zoo.build_classifier) holding `tensors`,
    in eval mode. Names, shapes and kinds are compared on the meta device before anything is allocated."""
    import torch

    from heartbeit.models import zoo

    with torch.device("meta"):
        skeleton = zoo.build_classifier(arch, 2, image_size)
    expected = {n: t for n, t in skeleton.state_dict().items()}
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        example = safe_text((missing or extra)[0], 60)
        raise ModelDirError(f"{where}: the weights do not fit {arch} ({len(missing)} tensors missing, "
                            f"{len(extra)} unexpected, e.g. {example!r})")
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            hint = (f"; image size mismatch? {arch} at {image_size} px" if zoo.is_transformer(arch) else "")
            raise ModelDirError(f"{where}: tensor {safe_text(name, 60)!r} has shape {tuple(t.shape)}, {arch} "
                                f"needs {tuple(ref.shape)}{hint}")
        if t.dtype.is_floating_point != ref.dtype.is_floating_point:
            raise ModelDirError(f"{where}: tensor {safe_text(name, 60)!r} has dtype {t.dtype}, {arch} needs {ref.dtype}")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise ModelDirError(f"{where}: tensor {safe_text(name, 60)!r} holds NaN or infinite values")
    model = zoo.build_classifier(arch, 2, image_size)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def load_model_dir(model_dir: str | Path, device: str = "cpu"):
    """(model in eval mode on `device`, validated config dict); ModelDirError says what is wrong."""
    import torch

    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    tensors = read_safetensors(model_dir / WEIGHTS, model_dir)
    model = model_from_tensors(config["architecture"], config["image_size"], tensors,
                               f"{safe_text(model_dir)}: {WEIGHTS}")
    return model.to(torch.device(device)), config


def positive_labels(values: pd.Series, definition: dict):
    """0/1/NaN for a task from its label column (config.tasks.TaskSpec: one home for the rule)."""
    from heartbeit.config.tasks import TaskSpec

    return TaskSpec(definition["column"], definition["positive"]).apply(values)
