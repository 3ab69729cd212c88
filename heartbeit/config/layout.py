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

A command's own `--images/--out/...` flags still override one path; the defaults are these. Stdlib only:
imported by commands, the matrix, training, evaluation and the Slurm chain alike.
"""
from __future__ import annotations

from pathlib import Path

# the files of a matrix cell folder (cells/<cell_id>/)
CELL_RECORD = "cell.json"  # the cell's plan entry + its training summary
PREDICTIONS = "predictions.parquet"  # one row per scored ECG
CELL_WEIGHTS = "model.safetensors"  # the selected epoch's weights
VAL_SCORES = "val_scores.parquet"  # the selected epoch's validation scores (an export's threshold)
COMPLETE = "complete.json"  # written last: its presence means the cell is finished
# the files of a running cell's mid-cell checkpoint folder (cells/.resume/<cell_id>/, `cell_resume_dir`)
CELL_CHECKPOINT = "checkpoint.pt"  # model, optimizer, scheduler, RNGs, loader position, loop and selection state
CELL_CHECKPOINT_PROGRESS = "checkpoint.json"  # {step, saved}: for status, without loading the checkpoint


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
        return self.root / "secret" / "deid.key"

    @property
    def synth(self) -> Path:
        return self.root / "synth"

    @property
    def synth_record(self) -> Path:
        """Written last by `heartbeit synth`: the synthetic inputs are complete."""
        return self.synth / "synth.json"

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
        return self.tokenizer_dir / "tokenizer.safetensors"

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
        return self.root / "slurm" / "site-setup.sh"

    @property
    def slurm_record(self) -> Path:
        """The submitted chain's job ids (`heartbeit slurm status` reads it)."""
        return self.root / "slurm_jobs.json"

    @property
    def run_record(self) -> Path:
        return self.root / "run.json"


def results_run_records(results_dir: str | Path, profile: str) -> tuple[Path, Path]:
    """The committed record of a whole run beside its results: <results_dir>/<profile>_run.json and .md."""
    results = Path(results_dir)
    return results / f"{profile}_run.json", results / f"{profile}_run.md"


def checkpoints_dir(pretrain_dir: str | Path) -> Path:
    """Where a pretraining run (`--out`, default <workdir>/pretrain) keeps its resumable checkpoints."""
    return Path(pretrain_dir) / "checkpoints"


def checkpoint_pointer(pretrain_dir: str | Path) -> Path:
    """The engine's `latest` file (heartbeit.distributed.engine.LATEST) naming the newest checkpoint: its
    presence means the run can be resumed."""
    return checkpoints_dir(pretrain_dir) / "latest"


def matrix_cells(matrix_dir: str | Path) -> Path:
    """The cells folder of a matrix folder (a `--matrix-dir` other than the run's)."""
    return Path(matrix_dir) / "cells"


def cell_resume_dir(cells_dir: str | Path, cell_id: str) -> Path:
    """A cell's mid-cell checkpoint folder (heartbeit.train.cell_checkpoint): outside the cell's temporary
    folder, which a rerun discards, and removed once the cell is complete."""
    return Path(cells_dir) / ".resume" / cell_id


def matrix_plan(matrix_dir: str | Path) -> Path:
    return Path(matrix_dir) / "plan.json"


def matrix_recipes(matrix_dir: str | Path) -> Path:
    """Every planned architecture's fine-tuning recipe, beside the plan and the resolved config."""
    return Path(matrix_dir) / "recipes.yaml"
