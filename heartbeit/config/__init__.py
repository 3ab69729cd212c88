"""Typed configuration: one dataclass per stage, composed into `RunConfig`; profiles are YAML files in
`configs/` that override the dataclass defaults. Profiles change sizes, never logic."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from heartbeit.records import RESOLVED_CONFIG

from .core import ConfigError, deep_merge, dump_yaml, from_dict, load_yaml, parse_override, to_dict, upgrade_renamed
from .ingest import IngestConfig
from .matrix import TASKS, MatrixConfig
from .pretrain import PretrainConfig
from .render import RenderConfig
from .report import ReportConfig
from .synth import SiteSpec, SynthConfig
from .tasks import PAPER_TASKS, TaskSpec, all_tasks, check_matrix_tasks
from .tokenizer import TokenizerConfig

PROFILES = ("ci", "demo", "workstation", "paper")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class RunConfig:
    profile: str = "ci"
    workdir: str = "runs/ci"  # every stage writes under here
    results_dir: str = "results"  # tables, figures, REPORT.md ("${workdir}" = the run's workdir)
    # The committed results a whole run is compared with at its end (`heartbeit results compare`: per model,
    # max |ΔAUROC| against the measured seed spread); `heartbeit results promote` copies the run's results
    # there. Empty = no comparison. Must differ from results_dir, so a run never overwrites what it checks.
    reference_results: str = ""
    input_dirs: list[str] = field(default_factory=list)  # real data; empty = synthetic default
    labels_csv: str = ""
    # false (paper, workstation): the GPU stages (pretrain, matrix run) refuse to start on a machine without
    # a GPU instead of silently training on the CPU; CPU stages (prepare, plan, report) run anywhere
    allow_cpu: bool = True
    # The pretraining world size (GPUs) the profile's recipe is designed for (paper: 32 = 4 nodes x 8, so
    # pretrain.global_batch 2048 = 32 x 64 with no accumulation). A GPU profile refuses fewer GPUs -- in
    # `heartbeit run`, `heartbeit pretrain`, `heartbeit slurm submit` and slurm/pretrain.sh -- with the world
    # size, steps x accumulation and GPU-hours it would take, unless --allow-fewer-gpus. 0 = any.
    world_size: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# The image size is one fact, stated once as render.image_size: pretraining and the matrix train on the
# rendered images as they are (no resize), so their sections carry a copy that load_config fills in. A source
# may restate it there only with the render's value (a resolved config read back holds every copy); the
# sections' old key img_size is not read.
IMAGE_SIZE_COPIES = ("pretrain", "matrix")


def _take_render_image_size(data: dict) -> dict:
    """`data` with pretrain.image_size and matrix.image_size set to render.image_size; a different value or
    the old key in those sections is an error naming the key."""
    render = data.get("render")
    size = render.get("image_size", RenderConfig.image_size) if isinstance(render, dict) else RenderConfig.image_size
    out = dict(data)
    for section in IMAGE_SIZE_COPIES:
        values = data.get(section, {})
        if not isinstance(values, dict):
            continue  # from_dict names the section's type error
        if "img_size" in values:
            raise ConfigError(f"{section}.img_size: not a config key; the image size is set once, as "
                              "render.image_size (pretraining and the matrix take the render's)")
        if "image_size" in values and values["image_size"] != size:
            raise ConfigError(f"{section}.image_size ({values['image_size']!r}) differs from render.image_size "
                              f"({size!r}): the image size is set once, as render.image_size (pretraining and the "
                              f"matrix take the render's); remove {section}.image_size")
        out[section] = {**values, "image_size": size}
    return out


def profile_path(profile: str) -> Path:
    return CONFIG_DIR / f"{profile}.yaml"


def load_config(profile: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Resolve a RunConfig: dataclass defaults <- profile YAML <- --config file <- --set overrides."""
    data: dict = {}
    if profile is not None:
        path = profile_path(profile)
        if not path.is_file():
            raise ConfigError(f"unknown profile {profile!r}: no {path} (profiles: {', '.join(PROFILES)})")
        data = deep_merge(data, upgrade_renamed(load_yaml(path), str(path)))
        data.setdefault("profile", profile)
    if config_file:
        data = deep_merge(data, upgrade_renamed(load_yaml(Path(config_file)), str(config_file)))
    for text in overrides or []:
        data = deep_merge(data, upgrade_renamed(parse_override(text), f"--set {text}"))
    cfg = from_dict(RunConfig, _take_render_image_size(data))
    check_matrix_tasks(cfg)
    # "${workdir}" in a path setting is the run's workdir, so a profile can keep its weights inside the run
    cfg.matrix.imagenet_weights_dir = cfg.matrix.imagenet_weights_dir.replace("${workdir}", cfg.workdir)
    cfg.results_dir = cfg.results_dir.replace("${workdir}", cfg.workdir)
    if cfg.reference_results and Path(cfg.reference_results).resolve() == Path(cfg.results_dir).resolve():
        raise ConfigError(f"reference_results: {cfg.reference_results} is results_dir itself; a run would "
                          "overwrite the results it is compared with")
    return cfg


def write_resolved(cfg, out_dir: str | Path, name: str = RESOLVED_CONFIG) -> Path:
    """Write the resolved config next to a stage's output (atomically)."""
    from heartbeit.utils.io import atomic_write_text

    path = Path(out_dir) / name
    atomic_write_text(path, dump_yaml(cfg))
    return path


__all__ = [
    "ConfigError", "RunConfig", "SynthConfig", "SiteSpec", "IngestConfig", "RenderConfig",
    "TokenizerConfig", "PretrainConfig", "MatrixConfig", "ReportConfig", "TASKS", "PROFILES",
    "PAPER_TASKS", "TaskSpec", "all_tasks", "check_matrix_tasks",
    "load_config", "write_resolved", "from_dict", "to_dict", "dump_yaml",
]
