"""The names of every file a stage writes and the formats of the records other stages read back, in one place.

Writers and readers import these names; no other library module spells one of them
(tests/unit/test_layout.py::test_file_names_have_one_home). Where each file sits in a run folder is
heartbeit.config.layout (`RunLayout`), which builds its paths from these names. Stdlib only and importing
nothing of the package: the bottom layer (docs/architecture-layers.md), so every layer can read it.

Changing a value here changes what is written: the names below are those every existing run folder, corpus
and image set already carries, and no name is part of a hash (cell ids, shard digests) except through the
bytes it labels.
"""
from __future__ import annotations

# --------------------------------------------------------------------------------------- any stage folder
RESOLVED_CONFIG = "config.resolved.yaml"  # the stage's resolved config, beside its output
TMP_PREFIX = ".tmp-"  # a folder being written; renamed into place once whole (`.tmp-<name>-<pid>`)

# ------------------------------------------------------------------------------------- a run folder's root
SECRET_DIR = "secret"  # 0700
DEID_KEY = "deid.key"  # in secret/: the default de-identification HMAC key (0600)
RUN_RECORD = "run.json"  # `heartbeit run`'s stage timings
RUN_SUMMARY = "run.md"  # beside RUN_RECORD in a results folder: <profile>_run.json / <profile>_run.md
SLURM_RECORD = "slurm_jobs.json"  # the submitted chain's job ids
SLURM_SETUP = "site-setup.sh"  # in slurm/: the site's environment setup, sourced by every job
MATRIX_PLAN = "plan.json"  # in matrix/: every cell of the study
MATRIX_RECIPES = "recipes.yaml"  # in matrix/: each planned architecture's fine-tuning recipe

# -------------------------------------------------------------------- synthetic inputs (heartbeit synth)
SYNTH_RECORD = "synth.json"  # written last: the synthetic inputs are complete (ingest's listing skips it)
SYNTH_LABELS = "labels.csv"  # the labels CSV beside the files (ingest's default for that folder)
SYNTH_GROUND_TRUTH = "ground_truth.csv"  # every ECG's injected ground truth (the realism check reads it)

# --------------------------------------------------------------------------------- corpus (heartbeit ingest)
CORPUS_METADATA = "metadata.parquet"  # one row per accepted ECG (columns: CORPUS_RESERVED_COLUMNS, labels)
CORPUS_SUMMARY = "summary.json"  # counts, reasons, label coverage
CORPUS_MANIFEST = "manifest.json"  # written last: the shards and their hashes (its presence: complete)
CORPUS_PRIVATE = "private"  # 0700: never copied out of the site
CORPUS_REJECTS = "rejects.parquet"  # in private/: (file, reason) of every rejected input
CORPUS_SOURCES = "sources.parquet"  # in private/: ecg_uid -> source path
CORPUS_SITE_CODES = "site_codes.json"  # in private/: site text -> pseudonym
CORPUS_SHARD_DIR = "shards"
CORPUS_SHARD_PATTERN = "corpus-{:06d}.tar"  # in shards/: the de-identified waveforms (heartbeit.data.corpus)
CORPUS_SHARD_GLOB = "corpus-*.tar"

# ------------------------------------------------------------------------------ image set (heartbeit render)
IMAGES_INDEX = "index.json"  # written last: the shards per split with their hashes (and token grids)
IMAGES_MANIFEST = "manifest.parquet"  # one row per ECG: split, fractions, shard
IMAGES_LAYOUT = "layout.json"  # the drawing's geometry (lead boxes, px per mV / s)
IMAGES_TOKENS = "tokens.json"  # which tokenizer encoded the shards' token grids
IMAGE_SHARD_PATTERN = "{split}/{split}-{index:06d}.tar"  # the image shards of a split (heartbeit.data.shard_format)
IMAGE_SHARD_GLOB = "{split}-*.tar"  # in <split>/: image shards, their waveform siblings included
SHARD_SUFFIX = ".tar"
WAVE_SHARD_SUFFIX = ".wave.tar"  # <shard>.wave.tar: the same samples' filtered waveforms (render.wave_hz > 0)
MEMBER_INDEX_SUFFIX = ".idx.json"  # <shard>.idx.json: each sample's byte range (heartbeit.data.members)
SHARD_SIDECAR_SUFFIX = ".json"  # <shard>.json: the render stage's record of one finished shard
RENDER_PLAN_DIR = "plan"  # a render split into tasks: plan.json (written last) and one parquet per task
RENDER_PLAN = "plan.json"
RENDER_TASK_PATTERN = "task-{:05d}.parquet"  # in plan/: the planned rows of one task's shards

# ---------------------------------------------------------------------------- tokenizer (heartbeit tokenizer)
TOKENIZER_FILE = "tokenizer.safetensors"
TOKENIZER_METRICS = "tokenizer_metrics.json"
TOKENIZER_CHECKPOINT = ".tokenizer_checkpoint.pt"  # a stopped or killed fit resumes from it

# -------------------------------------------------------------------------- pretraining (heartbeit pretrain)
PRETRAIN_LOG = "log.jsonl"  # one record per log step
EXPORT_PREFIX = "heartbeit-"  # heartbeit-<variant>.safetensors (+ .json), the pretraining export
EXPORT_WEIGHTS_SUFFIX = ".safetensors"
EXPORT_RECORD_SUFFIX = ".json"  # the export's record: config, tokenizer, metrics, sha256
ABLATION_DIR = "ablation"  # intermediate exports, beside the final one and outside checkpoints/ (rotation)
CHECKPOINTS_DIR = "checkpoints"  # the engine's resumable checkpoints, one folder per tag
CHECKPOINT_LATEST = "latest"  # in checkpoints/: names the newest tag; its presence means the run can resume
# one tag folder of the local and DDP engines (heartbeit.distributed.local / ddp)
ENGINE_WEIGHTS = "model.safetensors"  # weights, loadable without pickle
ENGINE_STATE = "state.pt"  # optimizer and client state (tensors and plain containers)
ENGINE_META = "meta.json"  # engine, world size, tag: checked on resume
# one tag folder of the DeepSpeed engine (heartbeit.distributed.checkpoint), beside DeepSpeed's own files
ENGINE_MANIFEST = "heartbeit.json"  # world size, ZeRO stage, precision, time: checked on resume
ENGINE_RANK_STATE = "heartbeit_rank{}.pt"  # rank r's client state

# ------------------------------------------------------------------------- a matrix cell (heartbeit matrix)
CELL_RECORD = "cell.json"  # the cell's plan entry + its training summary (`cell_record`)
PREDICTIONS = "predictions.parquet"  # one row per scored ECG (PREDICTION_COLUMNS, PREDICTION_META)
CELL_WEIGHTS = "model.safetensors"  # the selected epoch's weights
VAL_SCORES = "val_scores.parquet"  # the selected epoch's validation scores (an export's threshold)
CURVES = "curves.jsonl"  # one record per validation round
COMPLETE = "complete.json"  # written last: its presence means the cell is finished
# the files of a running cell's mid-cell checkpoint folder (cells/.resume/<cell_id>/, layout.cell_resume_dir)
CELL_CHECKPOINT = "checkpoint.pt"  # model, optimizer, scheduler, RNGs, loader position, loop and selection state
CELL_CHECKPOINT_PROGRESS = "checkpoint.json"  # {step, saved}: for status, without loading the checkpoint
# beside the cells: cells/.running/<id>.json while a cell trains, cells/.failed/<id>.json after a failure
CELLS_RUNNING = ".running"
CELLS_FAILED = ".failed"
CELLS_RESUME = ".resume"

# ------------------------------------------------------------------------ a model package (heartbeit export)
MODEL_CONFIG = "config.json"  # the package's schema-checked config (heartbeit.modelschema)
MODEL_WEIGHTS = "model.safetensors"
MODEL_CARD = "README.md"

# ------------------------------------------------- downloaded ImageNet weights (matrix.imagenet_weights_dir)
# <dir>/<arch>/ as the Hugging Face hub lays a timm model out (a <dir>/<arch>.<suffix> file is read too)
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# ============================================================================================ record formats

# The corpus' label columns of the paper's tasks (metadata.parquet, labels CSVs).
TASK_COLUMNS = ("lvef", "lvef_le40", "hcm", "stemi")
AMPLITUDE_FLAG_COLUMN = "amplitude_normalised"  # the corpus / predictions column of an accepted, flagged record
# Corpus metadata columns no label may be named after (heartbeit.data.ingest.publish writes them).
CORPUS_RESERVED_COLUMNS = {"ecg_uid", "patient_hash", "site", "format", "device", "fs", "source_fs", "n_samples",
                           "sex", "age", "age_band", "year", "shard", "acquisition_date", "strat_fold", "split",
                           "record", "patient_id", "mrn", "accession", "ecg_id", "source", "labels",
                           AMPLITUDE_FLAG_COLUMN}

# predictions.parquet: one row per scored ECG. Scoring needs PREDICTION_COLUMNS; the trainer carries
# PREDICTION_META from each sample's shard metadata into it (the report's subgroup tables read sex and age band).
PREDICTION_KEYS = ("ecg_uid", "patient_hash", "site", "split")
PREDICTION_COLUMNS = (*PREDICTION_KEYS, "label", "score")
PREDICTION_META = (*PREDICTION_KEYS, "sex", "age_band")


def cell_record(plan_entry: dict, summary: dict) -> dict:
    """cell.json: the cell's plan entry (heartbeit.matrix.Cell as a dict) with the trainer's summary over it
    (metrics, timings, "sanity": the verdict record below, ...)."""
    return {**plan_entry, **summary}


# The sanity verdict record (cell.json "sanity"; heartbeit.train.sanity judges, the report and
# `heartbeit matrix status` read): {"verdicts": [a subset of VERDICTS, in this order], "val_auroc",
# "val_auroc_low", "val_auroc_high", "val_score_std", "val_positive_calls", "val_n"}.
COLLAPSE_STD = 1e-3  # a prediction std below this is a constant prediction ("collapsed")
VERDICTS = ("collapsed", "one_class", "non_finite_loss", "not_better_than_chance")


def current_verdicts(sanity: dict) -> list[str]:
    """A cell's verdicts under today's rules. Cells trained before "one_class" existed recorded such a cell as
    "collapsed"; their recorded score std tells the two apart exactly, so old cells read the same as new ones."""
    verdicts = list(sanity.get("verdicts", []))
    std = sanity.get("val_score_std")
    if "collapsed" in verdicts and isinstance(std, (int, float)) and std >= COLLAPSE_STD:
        verdicts[verdicts.index("collapsed")] = "one_class"
    return verdicts


def cell_verdicts(record: dict) -> list[str]:
    """The current verdicts of a cell.json record (a cell without a sanity record has none)."""
    return current_verdicts(record.get("sanity") or {})
