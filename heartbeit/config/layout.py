"""Where a run's files live: every path under a run folder (`workdir`) and inside a matrix cell, in one place.

    <workdir>/
      secret/deid.key           the default de-identification key (0600)      heartbeit ingest / predict
      synth/                    synthetic input files (synth.json last)       heartbeit synth
      corpus/                   de-identified corpus shards                    heartbeit ingest
      images/                   image shards, manifest.parquet, layout.json   heartbeit render
      tokenizer/tokenizer.safetensors                                          heartbeit tokenizer train
      pretrain/                 checkpoints/latest, heartbeit-<variant>.safetensors export
      matrix/plan.json, recipes.yaml (each architecture's fine-tuning recipe), config.resolved.yaml,
      matrix/cells/<cell_id>/{cell.json, predictions.parquet, model.safetensors,
                                                val_scores.parquet, complete.json (written last)}
      matrix/cells/.resume/<cell_id>/checkpoint.pt, checkpoint.json
                                a running cell's mid-cell checkpoint (deleted when the cell completes)
      report/scores/            each cell's cached metric rows                 heartbeit report
      slurm/logs/, slurm_jobs.json                                             heartbeit slurm submit
      run.json                  stage timings                                  heartbeit run

A command's own `--images/--out/...` flags still override one path; the defaults are these. The file names
themselves (and the formats of the records) are heartbeit.records. Stdlib only: imported by commands, the
matrix, training, evaluation and the Slurm chain alike.
"""
from __future__ import annotations

from pathlib import Path

from heartbeit.records import (ABLATION_DIR, CELLS_FAILED, CELLS_RESUME, CELLS_RUNNING, CHECKPOINT_LATEST,
                               CHECKPOINTS_DIR, DEID_KEY, EXPORT_PREFIX, EXPORT_RECORD_SUFFIX, EXPORT_WEIGHTS_SUFFIX,
                               MATRIX_PLAN, MATRIX_RECIPES, RENDER_PLAN, RENDER_PLAN_DIR, RUN_RECORD, RUN_SUMMARY,
                               SECRET_DIR, SLURM_RECORD, SLURM_SETUP, SYNTH_RECORD, TMP_PREFIX, TOKENIZER_FILE)


class RunLayout:
    """The paths of one run folder. `RunLayout(cfg.workdir)` or `RunLayout.of(cfg)`."""

    def __init__(self, workdir: str | Path):
        self.root = Path(workdir)

    @classmethod
    def of(cls, cfg) -> "RunLayout":
        return cls(cfg.workdir)

    @property
    def deid_key(self) -> Path:
        """The default HMAC key of de-identification (created 0600; keep it out of shared folders)."""
        return self.root / SECRET_DIR / DEID_KEY

    @property
    def synth(self) -> Path:
        return self.root / "synth"

    @property
    def synth_record(self) -> Path:
        """Written last by `heartbeit synth`: the synthetic inputs are complete."""
        return self.synth / SYNTH_RECORD

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokenizer_file(self) -> Path:
        return self.tokenizer_dir / TOKENIZER_FILE

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def pretrain_latest(self) -> Path:
        """The checkpoint pointer a resumable pretraining run leaves."""
        return checkpoint_pointer(self.pretrain)

    @property
    def matrix(self) -> Path:
        return self.root / "matrix"

    @property
    def plan(self) -> Path:
        return matrix_plan(self.matrix)

    @property
    def cells(self) -> Path:
        return matrix_cells(self.matrix)

    @property
    def score_cache(self) -> Path:
        """Each cell's metric rows, kept between report runs (and written by `report --score-only` tasks)."""
        return self.root / "report" / "scores"

    @property
    def slurm_logs(self) -> Path:
        return self.root / "slurm" / "logs"

    @property
    def slurm_setup(self) -> Path:
        return self.root / "slurm" / SLURM_SETUP

    @property
    def slurm_record(self) -> Path:
        """The submitted chain's job ids (`heartbeit slurm status` reads it)."""
        return self.root / SLURM_RECORD

    @property
    def run_record(self) -> Path:
        return self.root / RUN_RECORD


def results_run_records(results_dir: str | Path, profile: str) -> tuple[Path, Path]:
    """The committed record of a whole run beside its results: <results_dir>/<profile>_run.json and .md."""
    results = Path(results_dir)
    return results / f"{profile}_{RUN_RECORD}", results / f"{profile}_{RUN_SUMMARY}"


def checkpoints_dir(pretrain_dir: str | Path) -> Path:
    """Where a pretraining run (`--out`, default <workdir>/pretrain) keeps its resumable checkpoints."""
    return Path(pretrain_dir) / CHECKPOINTS_DIR


def checkpoint_pointer(pretrain_dir: str | Path) -> Path:
    """The engine's `latest` file (heartbeit.distributed.engine.LATEST) naming the newest checkpoint: its
    presence means the run can be resumed."""
    return checkpoints_dir(pretrain_dir) / CHECKPOINT_LATEST


def matrix_cells(matrix_dir: str | Path) -> Path:
    """The cells folder of a matrix folder (a `--matrix-dir` other than the run's)."""
    return Path(matrix_dir) / "cells"


def cell_resume_dir(cells_dir: str | Path, cell_id: str) -> Path:
    """A cell's mid-cell checkpoint folder (heartbeit.train.cell_checkpoint): outside the cell's temporary
    folder, which a rerun discards, and removed once the cell is complete."""
    return Path(cells_dir) / CELLS_RESUME / cell_id


def matrix_plan(matrix_dir: str | Path) -> Path:
    return Path(matrix_dir) / MATRIX_PLAN


def matrix_recipes(matrix_dir: str | Path) -> Path:
    """Every planned architecture's fine-tuning recipe, beside the plan and the resolved config."""
    return Path(matrix_dir) / MATRIX_RECIPES


def cell_tmp_dir(cells_dir: str | Path, cell_id: str, pid: int) -> Path:
    """The folder a cell is trained into by process `pid`, renamed to cells/<cell_id>/ once complete."""
    return Path(cells_dir) / f"{TMP_PREFIX}{cell_id}-{pid}"


def cell_tmp_dirs(cells_dir: str | Path, cell_id: str) -> list[Path]:
    """Every temporary folder of `cell_id` (a killed run's included)."""
    return sorted(Path(cells_dir).glob(f"{TMP_PREFIX}{cell_id}-*"))


def cells_running_dir(cells_dir: str | Path) -> Path:
    return Path(cells_dir) / CELLS_RUNNING


def cells_failed_dir(cells_dir: str | Path) -> Path:
    return Path(cells_dir) / CELLS_FAILED


def cell_running_record(cells_dir: str | Path, cell_id: str) -> Path:
    """{host, pid, started} while the cell trains (removed when it ends)."""
    return cells_running_dir(cells_dir) / f"{cell_id}.json"


def cell_failure_record(cells_dir: str | Path, cell_id: str) -> Path:
    """{cell, reason, traceback} of the cell's last failure (removed when it completes)."""
    return cells_failed_dir(cells_dir) / f"{cell_id}.json"


def render_plan_dir(images_dir: str | Path) -> Path:
    """The plan of a render split into tasks (heartbeit.data.render.plan)."""
    return Path(images_dir) / RENDER_PLAN_DIR


def render_plan_record(images_dir: str | Path) -> Path:
    """Written last: its presence means the render plan is whole."""
    return render_plan_dir(images_dir) / RENDER_PLAN


def variant_name(model_name: str) -> str:
    return model_name.removeprefix("heartbeit_")


def export_paths(out_dir: str | Path, model_name: str) -> tuple[Path, Path]:
    """The pretraining export of `model_name` in a pretraining folder: heartbeit-<variant>.safetensors, .json."""
    stem = f"{EXPORT_PREFIX}{variant_name(model_name)}"
    return Path(out_dir) / f"{stem}{EXPORT_WEIGHTS_SUFFIX}", Path(out_dir) / f"{stem}{EXPORT_RECORD_SUFFIX}"


def export_records(out_dir: str | Path) -> list[Path]:
    """The records of every final export in a pretraining folder (heartbeit-*.json), sorted."""
    return sorted(Path(out_dir).glob(f"{EXPORT_PREFIX}*{EXPORT_RECORD_SUFFIX}"))


def ablation_export_paths(out_dir: str | Path, model_name: str, step: int) -> tuple[Path, Path]:
    """The intermediate export (and its json) written at optimizer step `step` of the run in `out_dir`."""
    stem = f"{EXPORT_PREFIX}{variant_name(model_name)}-step{int(step)}"
    folder = Path(out_dir) / ABLATION_DIR
    return folder / f"{stem}{EXPORT_WEIGHTS_SUFFIX}", folder / f"{stem}{EXPORT_RECORD_SUFFIX}"
