"""The benchmark matrix: cells = (architecture, task, fraction, seed, draw), stable ids, completion records.

A cell's id hashes its resolved fine-tuning config, the image manifest's hash, the pretrained export's
hash (HeartBEiT cells), the package version and the fine-tuning recipe version
(models.families.FINETUNE_RECIPE_VERSION) — not the git revision, so an unrelated commit does not
invalidate finished cells; a change that alters what a cell computes bumps the recipe version.

A cell runs in `cells/.tmp-<id>-<pid>/`, which is renamed to `cells/<id>/`; `complete.json` is written
last. A directory without `complete.json` is partial and is redone; a failure leaves
`cells/.failed/<id>.json` with the reason and is retried on the next run. A cell stopped by a stop request
(heartbeit/distributed/preempt.py) leaves its mid-cell checkpoint in `cells/.resume/<id>/` and resumes
from it on the next run; the checkpoint is deleted once the cell is complete."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from heartbeit import __version__
from heartbeit.models.families import FINETUNE_RECIPE_VERSION, needs_mim_export
from heartbeit.config import MatrixConfig, to_dict
from heartbeit.config.layout import (ablation_export_paths, cell_failure_record, cell_resume_dir, cell_running_record,
                                     cell_tmp_dir, cell_tmp_dirs, cells_failed_dir, cells_running_dir, export_paths)
from heartbeit.config.pretrain import export_steps, same_run
from heartbeit.data.lock import pid_alive
from heartbeit.distributed.preempt import Stopped, mark_checkpointed, release_all, stop_file_present
from heartbeit.models.precision import device_type_of, numerics_for
from heartbeit.records import (CELL_CHECKPOINT_PROGRESS, CELL_RECORD, COMPLETE, IMAGES_INDEX, IMAGES_MANIFEST,
                               cell_record, cell_verdicts)
from heartbeit.utils.io import atomic_write_json, sha256_file

log = logging.getLogger("heartbeit.matrix")


@dataclass(frozen=True)
class Cell:
    index: int
    cell_id: str
    arch: str
    task: str
    fraction: float
    seed: int
    draw: int = 0
    # effective numerics (heartbeit.models.precision), decided at planning and part of the id
    precision: str = ""
    channels_last: bool = False
    kind: str = "finetune"  # finetune | probe (frozen backbone + logistic regression: heartbeit/train/probe.py)
    # Pretraining-ablation cells (matrix.ablation_label_fraction) fine-tune an intermediate HeartBEiT export:
    # its optimizer step, fraction of the pretraining steps and sha256. None / "" for every other cell.
    pretrain_step: int | None = None
    pretrain_fraction: float | None = None
    pretrain_sha256: str = ""

    @property
    def label(self) -> str:
        return f"{self.arch} {self.task} {self.fraction:g} seed{self.seed} draw{self.draw}" + \
            (f" {self.precision}" if self.precision else "") + (" probe" if self.kind == "probe" else "") + \
            (f" pretrain-step{self.pretrain_step}" if self.pretrain_step is not None else "")


@dataclass(frozen=True)
class AblationExport:
    """An intermediate pretraining export (heartbeit.train.pretrain.export_intermediate's json)."""
    step: int
    fraction: float
    sha256: str


# Matrix settings hashed into cell ids under another name than their config key: {config key: name in the
# id}. Private to the ids (nothing reads a config by these names): image_size was matrix.img_size when the
# first cells were planned, and every id since hashes "img_size". Add an entry when a matrix key is renamed.
_ID_KEYS = {"image_size": "img_size"}


def _finetune_fingerprint(mcfg: MatrixConfig) -> dict:
    # Settings that change a cell's result; the list of architectures/fractions/tasks/seeds does not.
    d = to_dict(mcfg)
    # The weights folder is a location: the weights file's own hash enters the id instead (plan_cells);
    # allow_random_init decides whether a cell may start at all, not what it computes; nor does when a cell
    # saves its mid-cell checkpoints (checkpoint_minutes: a resumed cell computes the same bits).
    for key in ("architectures", "probe_architectures", "fractions", "tasks", "seeds", "draws", "draws_below",
                "num_workers", "decode_threads", "jobs", "device", "imagenet_weights_dir", "allow_random_init",
                "ablation_label_fraction", "checkpoint_minutes"):
        d.pop(key, None)
    # Under selection "last" the validation rounds select nothing: their subsample and batch size change the
    # curves, never the selected weights, scores or threshold (finetune.py), so they leave such ids unchanged.
    if d["selection"] == "last":
        d.pop("val_negatives_cap")
        d.pop("val_batch_size")
    # Settings enter the id under the names they had when ids were first built (_ID_KEYS), so renaming a
    # config key never changes a finished cell's id.
    for name, id_name in _ID_KEYS.items():
        if name in d:
            d[id_name] = d.pop(name)
    return d


def data_fingerprint(images_dir: str | Path) -> str:
    images_dir = Path(images_dir)
    for name in (IMAGES_INDEX, IMAGES_MANIFEST):
        if (images_dir / name).is_file():
            return sha256_file(images_dir / name)
    raise FileNotFoundError(f"{images_dir}: no {IMAGES_INDEX} or {IMAGES_MANIFEST} (run `heartbeit render` first)")


def imagenet_weights_sha(arch: str, weights_dir: str) -> str:
    """sha256 of the ImageNet weights file a cell of `arch` would load ("" for none): a cell's id changes
    when its weights do, not when the folder moves. Converts EfficientNet-Lite0 on first use."""
    from heartbeit.models.families import takes_imagenet_weights
    from heartbeit.models.weights import ensure_imagenet_file

    if not weights_dir or not takes_imagenet_weights(arch):
        return ""
    found = ensure_imagenet_file(arch, weights_dir)
    return sha256_file(found) if found is not None else ""


def draws_of(mcfg: MatrixConfig, fraction: float) -> range:
    """The training draws of a fraction: `mcfg.draws` below `mcfg.draws_below` (and below 100 %, which has
    only one subset), else draw 0 alone."""
    return range(mcfg.draws if float(fraction) < min(1.0, mcfg.draws_below) else 1)


def ablation_archs(mcfg: MatrixConfig) -> list[str]:
    """The pretrained architectures whose intermediate exports the pretraining ablation fine-tunes (none
    while matrix.ablation_label_fraction is null)."""
    if mcfg.ablation_label_fraction is None:
        return []
    return [a for a in mcfg.architectures if needs_mim_export(a)]


def ablation_cell_count(mcfg: MatrixConfig, n_exports: int) -> int:
    """Cells the ablation adds for `n_exports` intermediate exports: every task x seed x draw of the ablation
    fraction (the plan's own count, from the config alone, for sizing a Slurm array)."""
    if not ablation_archs(mcfg):
        return 0
    draws = len(draws_of(mcfg, mcfg.ablation_label_fraction))
    return len(mcfg.tasks) * n_exports * len(ablation_archs(mcfg)) * len(mcfg.seeds) * draws


def cell_specs(mcfg: MatrixConfig, n_exports: int = 0) -> list[tuple[str, str, float, str]]:
    """(arch, task, fraction, kind) of every cell `plan_cells` plans, in its order, from the config alone
    (with `n_exports` intermediate pretraining exports): what a Slurm chain is sized and timed by before any
    image exists (tests/integration/test_slurm_chain.py checks it against the real plan)."""
    out: list[tuple[str, str, float, str]] = []
    for task in mcfg.tasks:
        for fraction in mcfg.fractions:
            repeat = len(mcfg.seeds) * len(draws_of(mcfg, fraction))
            for arch, kind in [(a, "finetune") for a in mcfg.architectures] + \
                    [(a, "probe") for a in mcfg.probe_architectures]:
                out += [(arch, task, float(fraction), kind)] * repeat
    if ablation_archs(mcfg):
        fraction = float(mcfg.ablation_label_fraction)
        repeat = len(mcfg.seeds) * len(draws_of(mcfg, fraction))
        for task in mcfg.tasks:
            for _ in range(n_exports):
                for arch in ablation_archs(mcfg):
                    out += [(arch, task, fraction, "finetune")] * repeat
    return out


def read_ablation_exports(pretrained_file: str | Path, model: str, export_at: list[float]) -> list[AblationExport]:
    """The intermediate exports of the run that wrote `pretrained_file` (the final export), one per
    `export_at` fraction, ordered by step. Missing, foreign (another run's) or altered files raise
    FileNotFoundError / ValueError naming the file and what to do."""
    pretrained_file = Path(pretrained_file)
    final_json = export_paths(pretrained_file.parent, model)[1]
    if not final_json.is_file():
        raise FileNotFoundError(f"{final_json}: the pretraining record beside {pretrained_file.name} is missing; "
                                "the ablation needs it to find its intermediate exports")
    final = json.loads(final_json.read_text())
    out = []
    for step, fraction in export_steps(export_at, int(final["resolved_pretrain_config"]["steps"])).items():
        file, record = ablation_export_paths(pretrained_file.parent, model, step)
        if not (file.is_file() and record.is_file()):
            raise FileNotFoundError(f"{file}: no pretraining export at step {step} (pretrain.export_at {fraction:g}); "
                                    "pretraining writes it as it passes that step (rerun `heartbeit pretrain` "
                                    "from step 0 with pretrain.export_at set, in a new workdir)")
        info = json.loads(record.read_text())
        if not same_run(info.get("pretrain_config", {}), final["pretrain_config"]) or info.get("step") != step:
            raise ValueError(f"{record}: written by another pretraining run than {final_json.name}")
        sha = sha256_file(file)
        if sha != info.get("sha256"):
            raise ValueError(f"{file}: sha256 differs from its record {record.name} (altered after export)")
        out.append(AblationExport(step, float(fraction), sha))
    return out


def _key_device(key: dict, device_type: str) -> None:
    """A GPU cell's id names its device type: cuDNN autotuning (models.precision.cudnn_autotune) makes its
    result differ from a CPU cell's beyond precision. CPU cells keep the ids they always had."""
    if device_type != "cpu":
        key["device"] = device_type


def _cell_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def plan_cells(mcfg: MatrixConfig, images_dir: str | Path, pretrained_file: str | Path | None,
               ablation: Iterable[AblationExport] = ()) -> list[Cell]:
    """Every cell in a fixed order (task, fraction, arch, seed, draw) with its stable id. Fractions below
    `mcfg.draws_below` (and below 100%, which has only one subset) get `mcfg.draws` training subsets.

    Then, with matrix.ablation_label_fraction set, the pretraining ablation's cells (task, export step,
    arch, seed, draw): each HeartBEiT architecture fine-tuned from each of `ablation` (read_ablation_exports)
    at that label fraction. They come last and their ids hash their export, so the cells above keep their
    ids and indices whether the ablation is on or off."""
    data_sha = data_fingerprint(images_dir)
    index_path = Path(images_dir) / IMAGES_INDEX
    if index_path.is_file():  # the tasks the shards carry labels for (the paper's, plus render.tasks)
        rendered = json.loads(index_path.read_text()).get("tasks")
        missing = [t for t in mcfg.tasks if rendered is not None and t not in rendered]
        if missing:
            raise ValueError(f"matrix.tasks {missing}: {images_dir} is labelled for {rendered} only; declare "
                             "them in render.tasks and re-render")
    device_type = device_type_of(mcfg.device)
    pre_sha = sha256_file(pretrained_file) if pretrained_file and Path(pretrained_file).is_file() else ""
    base = _finetune_fingerprint(mcfg)
    cells: list[Cell] = []
    for task in mcfg.tasks:
        for fraction in mcfg.fractions:
            draws = draws_of(mcfg, fraction)
            for arch, kind in [(a, "finetune") for a in mcfg.architectures] + \
                    [(a, "probe") for a in mcfg.probe_architectures]:
                numerics = numerics_for(arch, device_type, mcfg.precision)
                imagenet_sha = imagenet_weights_sha(arch, mcfg.imagenet_weights_dir)
                for seed in mcfg.seeds:
                    for draw in draws:
                        key = {
                            "arch": arch, "task": task, "fraction": fraction, "seed": seed, "draw": draw,
                            "finetune": base, "data": data_sha,
                            "pretrained": pre_sha if needs_mim_export(arch) else "",
                            "version": __version__, "recipe": FINETUNE_RECIPE_VERSION,
                            "precision": numerics.precision, "channels_last": numerics.channels_last,
                            "imagenet": imagenet_sha,
                        }
                        if kind != "finetune":  # fine-tuning cells keep the ids they always had
                            key["kind"] = kind
                        _key_device(key, device_type)
                        cells.append(Cell(len(cells), _cell_id(key), arch, task, float(fraction), int(seed), draw,
                                          numerics.precision, numerics.channels_last, kind))
    exports = sorted(ablation, key=lambda e: e.step)
    fraction = mcfg.ablation_label_fraction
    for task in mcfg.tasks if exports else ():
        for export in exports:
            for arch in ablation_archs(mcfg):
                numerics = numerics_for(arch, device_type, mcfg.precision)
                for seed in mcfg.seeds:
                    for draw in draws_of(mcfg, fraction):
                        key = {"arch": arch, "task": task, "fraction": fraction, "seed": seed, "draw": draw,
                               "finetune": base, "data": data_sha, "pretrained": export.sha256,
                               "pretrain_step": export.step, "version": __version__,
                               "recipe": FINETUNE_RECIPE_VERSION,
                               "precision": numerics.precision, "channels_last": numerics.channels_last,
                               "imagenet": ""}
                        _key_device(key, device_type)
                        cells.append(Cell(len(cells), _cell_id(key), arch, task, float(fraction), int(seed), draw,
                                          numerics.precision, numerics.channels_last, "finetune", export.step,
                                          export.fraction, export.sha256))
    return cells


def write_plan(cells: list[Cell], path: str | Path) -> Path:
    return atomic_write_json(path, {"cells": [asdict(c) for c in cells]})


def read_plan(path: str | Path) -> list[Cell]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no matrix plan (run `heartbeit matrix plan` first)")
    return [Cell(**c) for c in json.loads(path.read_text())["cells"]]


def select_cells(cells: list[Cell], indices: Iterable[int] | None = None) -> list[Cell]:
    if indices is None:
        return list(cells)
    out = []
    for i in indices:
        if not 0 <= i < len(cells):
            raise IndexError(f"cell index {i} out of range 0..{len(cells) - 1}")
        out.append(cells[i])
    return out


def parse_indices(text: str) -> list[int]:
    """'3,7,10-12' -> [3, 7, 10, 11, 12]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def cell_status(cells_dir: str | Path, cell: Cell) -> tuple[str, str]:
    """(state, detail) with state in planned | running | done | failed | partial."""
    cells_dir = Path(cells_dir)
    if (cells_dir / cell.cell_id / COMPLETE).is_file():
        try:
            verdicts = cell_verdicts(json.loads((cells_dir / cell.cell_id / CELL_RECORD).read_text()))
        except (OSError, json.JSONDecodeError):
            verdicts = [f"unreadable {CELL_RECORD}"]
        return "done", ("sanity: " + ", ".join(verdicts)) if verdicts else ""
    running = cell_running_record(cells_dir, cell.cell_id)
    if running.is_file():
        info = json.loads(running.read_text())
        where = f"host {info.get('host')} pid {info.get('pid')} since {info.get('started')}"
        if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", 0))):
            return "partial", f"interrupted ({where}); rerun to redo it"
        return "running", where
    resume = resume_note(cells_dir, cell.cell_id)
    failed = cell_failure_record(cells_dir, cell.cell_id)
    if failed.is_file():
        return "failed", "; ".join(filter(None, [json.loads(failed.read_text()).get("reason", ""), resume]))
    if resume:
        return "partial", resume
    if (cells_dir / cell.cell_id).exists():
        return "partial", "no completion record"
    return "planned", ""


def resume_note(cells_dir: str | Path, cell_id: str) -> str:
    """'mid-cell checkpoint at step N (saved ...); a rerun resumes there', or '' without one."""
    progress = cell_resume_dir(cells_dir, cell_id) / CELL_CHECKPOINT_PROGRESS
    try:
        info = json.loads(progress.read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    return f"mid-cell checkpoint at step {info.get('step')} (saved {info.get('saved')}); a rerun resumes there"


def _run_one(cell: Cell, cells_dir: Path, train_fn: Callable[[Cell, Path], dict], n_cells: int) -> str:
    """Run one cell through the completion protocol; returns 'ran', 'failed' or 'stopped' (a stop was
    requested: the cell saved a mid-cell checkpoint, or had not started)."""
    if stop_file_present():  # the job is being stopped: start nothing new, and let the script requeue it
        mark_checkpointed()
        return "stopped"
    final = cells_dir / cell.cell_id
    if final.exists():  # partial from an interrupted run
        shutil.rmtree(final)
    running = cell_running_record(cells_dir, cell.cell_id)
    atomic_write_json(running, {"host": socket.gethostname(), "pid": os.getpid(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for stale in cell_tmp_dirs(cells_dir, cell.cell_id):  # left by a killed run of this same cell
        shutil.rmtree(stale, ignore_errors=True)
    tmp = cell_tmp_dir(cells_dir, cell.cell_id, os.getpid())
    tmp.mkdir(parents=True)
    t0 = time.time()
    try:
        log.info("cell %d/%d %s (%s)", cell.index, n_cells, cell.cell_id, cell.label)
        summary = train_fn(cell, tmp)
        atomic_write_json(tmp / CELL_RECORD, cell_record(asdict(cell), summary))
        os.replace(tmp, final)
        atomic_write_json(final / COMPLETE, {"cell_id": cell.cell_id, "seconds": round(time.time() - t0, 2),
                                             "version": __version__})
        cell_failure_record(cells_dir, cell.cell_id).unlink(missing_ok=True)
        shutil.rmtree(cell_resume_dir(cells_dir, cell.cell_id), ignore_errors=True)  # of no further use
        return "ran"
    except Stopped as exc:  # the checkpoint stays in cells/.resume/<id>/ for the next run
        log.warning("%s", exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return "stopped"
    except Exception as exc:  # a failed cell must not stop the others; it is retried next run
        log.error("cell %s failed: %s", cell.cell_id, exc)
        atomic_write_json(cell_failure_record(cells_dir, cell.cell_id), {
            "cell": asdict(cell), "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8)})
        shutil.rmtree(tmp, ignore_errors=True)
        return "failed"
    finally:
        running.unlink(missing_ok=True)
        release_all()  # a cell that failed mid-training gives its signal handlers back too


CELL_WORKER_ENV = "HEARTBEIT_CELL_WORKER"  # set in each cell process of `run_cells(jobs > 1)`: 0, 1, ...


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the process that started it dies, so killing `matrix run` (or
    a preempted job step) never leaves orphaned workers finishing cells behind its back."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _init_worker(threads: int, workers_started=None) -> None:
    import torch

    from heartbeit.utils.logging import setup_logging

    _die_with_parent()
    setup_logging()
    torch.set_num_threads(threads)
    if workers_started is not None:  # the n-th cell process of this run: on a multi-GPU node, GPU n mod count
        with workers_started.get_lock():
            worker, workers_started.value = workers_started.value, workers_started.value + 1
        os.environ[CELL_WORKER_ENV] = str(worker)
        if torch.cuda.is_available():
            torch.cuda.set_device(worker % torch.cuda.device_count())


def run_cells(cells: list[Cell], cells_dir: str | Path, train_fn: Callable[[Cell, Path], dict],
              jobs: int = 1, threads_per_job: int | None = None) -> dict[str, int]:
    """Run each cell not yet done. `train_fn(cell, tmp_dir)` writes the cell's outputs into tmp_dir and
    returns its summary; the directory is then renamed into place and `complete.json` written last.

    jobs > 1 runs cells in that many worker processes (spawned; `train_fn` must be picklable): small
    models on a CPU train faster as parallel single-threaded cells than as one multi-threaded cell, and on
    a multi-GPU node worker n makes GPU n mod count its current device, so `jobs` = GPUs trains one cell per
    GPU. A cell's bits depend on its thread count, so `threads_per_job` is part of the matrix config."""
    cells_dir = Path(cells_dir)
    cells_running_dir(cells_dir).mkdir(parents=True, exist_ok=True)
    cells_failed_dir(cells_dir).mkdir(parents=True, exist_ok=True)
    counts = {"done_before": 0, "ran": 0, "failed": 0, "stopped": 0}
    todo = []
    for cell in cells:
        if (cells_dir / cell.cell_id / COMPLETE).is_file():
            counts["done_before"] += 1
        else:
            todo.append(cell)
    if jobs <= 1 or len(todo) <= 1:
        if threads_per_job:
            _init_worker(threads_per_job)
        for cell in todo:
            outcome = _run_one(cell, cells_dir, train_fn, len(cells))
            counts[outcome] += 1
            if outcome == "stopped":  # a stop request holds for the whole process
                counts["stopped"] += len(todo) - sum(counts[k] for k in ("ran", "failed", "stopped"))
                break
        return counts
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=(threads_per_job or 1, context.Value("i", 0))) as pool:
        for outcome in pool.map(_run_one, todo, [cells_dir] * len(todo), [train_fn] * len(todo),
                                [len(cells)] * len(todo)):
            counts[outcome] += 1
    return counts
