"""How long each job of the study takes: the basis of every Slurm time limit, of the matrix array's split by
expected duration, of CPUs per task, of the dry-run's GPU-hour table and of the world-size refusal.

    GPU time  = training FLOPs / (GPUs x sustained FLOP/s per GPU)
      FLOPs     per image from the model itself (train/flops.py, counted on the meta device): MIM pretraining,
                BEiT/ViT, ResNet, EfficientNet and the signal model; training = 3 x forward
      FLOP/s    site `gpu_tflops` (measured), else ASSUMED: the bf16 peak of site `gpu_type` (train/flops.py's
                table; "" = A100) x an ASSUMED model FLOPs utilisation per family (ASSUMED_MFU)
    CPU time  = items / (per-core rate x cores): ingest and render rates measured by `heartbeit bench` on one
                AMD EPYC core (README), decoding at site `decode_images_per_s` (ASSUMED 4,000/s per core)
    counts    the render stage's manifest once it exists (exact: the plan job and every job after it);
              before it, from the config: synthetic input = n_patients x mean ECGs per patient; real input =
              site `corpus_ecgs`, else ASSUMED 8.5 M (the README's hospital scale); ASSUMED 10 % external,
              60 % of ECGs labelled per task (5 M of 8.5 M)
    limit     estimate x site `time_margin` (1.5) + 10 min of start-up, rounded up to 15 min, never above
              site `max_time` (a cell past it checkpoints and requeues itself; pretraining likewise)

Every number that is not measured is labelled ASSUMED where it is printed (`assumptions`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from heartbeit.config.slurm import SiteConfig, format_time, parse_time
from heartbeit.records import IMAGES_MANIFEST

ASSUMED_GPU = "A100"
# model FLOPs utilisation in bf16 training, per workload (ASSUMED until a measurement sets site gpu_tflops):
# ViT-B class transformers reach 35-40 %; ResNets ~12 % (ResNet-50 trains at ~2,700 images/s on an A100 =
# 33 TFLOP/s of 312); depthwise-convolution EfficientNets and the small 1-D signal model ~5 %
ASSUMED_MFU = {"mim": 0.40, "transformer": 0.35, "resnet": 0.12, "efficientnet": 0.05, "signal": 0.05,
               "tokenizer": 0.10}
ASSUMED_CPU_CORE_FLOPS = 24e9  # fp32: AVX2 FMA (32 FLOP/cycle) x 2.5 GHz x 30 % utilisation, per core
ASSUMED_DECODE_PER_CORE = 4000.0  # 224 px PNG images/s one loader core streams and decodes (a margin under
#                                   bench/loader.py's 9,130/s on an idle AMD EPYC core: a busy node decodes less)
ASSUMED_CORPUS = 8_500_000
ASSUMED_EXTERNAL = 0.10
ASSUMED_LABELLED = 0.60
ASSUMED_VAL_POSITIVE = 0.10  # share of a task's labelled validation ECGs that are positive, before rendering
INGEST_PER_CORE = 561.0  # MUSE XML files/s on one core (README bench, measured)
RENDER_PER_CORE = 10_517.0  # 224 px images/s on one core (README bench, measured)
REPORT_S_PER_CELL = 10.0  # ASSUMED: metrics with CIs of one cell at hospital scale
PLAN_S = 900.0  # ASSUMED: hashing the weights and the manifest
STARTUP_S = 600.0
ROUND_S = 900.0
SCRIPT_CPUS = {"prepare": 16, "encode": 8, "pretrain": 11, "plan": 1, "matrix": 8, "report": 4}  # #SBATCH lines


@dataclass
class Counts:
    total: float
    train: float
    labelled: dict[str, float]  # labelled training ECGs per task
    evaluated: dict[str, tuple[float, float]]  # per task: labelled (val, test + external) ECGs
    val_positive: dict[str, float]  # per task: positive validation ECGs (kept whole by the validation rounds)
    source: str


def cost_family(arch: str) -> str:
    from heartbeit.models.families import arch_family, is_signal_arch, is_transformer

    if is_signal_arch(arch):
        return "signal"
    if is_transformer(arch):
        return "transformer"
    return "efficientnet" if arch_family(arch) == "efficientnet" else "resnet"


def corpus_counts(cfg, site: SiteConfig) -> Counts:
    from heartbeit.config.layout import RunLayout

    manifest = RunLayout.of(cfg).images / IMAGES_MANIFEST
    tasks = list(cfg.matrix.tasks)
    if manifest.is_file():
        import pandas as pd

        man = pd.read_parquet(manifest, columns=["split", *tasks])
        labelled = {t: float(((man["split"] == "train") & man[t].notna()).sum()) for t in tasks}
        evaluated = {t: (float(((man["split"] == "val") & man[t].notna()).sum()),
                         float((man["split"].isin(["test", "external"]) & man[t].notna()).sum())) for t in tasks}
        positive = {t: float(((man["split"] == "val") & (man[t] == 1)).sum()) for t in tasks}
        return Counts(float(len(man)), float((man["split"] == "train").sum()), labelled, evaluated, positive,
                      f"measured: the rendered manifest ({len(man):,} ECGs)")
    if not cfg.input_dirs:
        n = cfg.synth.n_patients * (1 + cfg.synth.ecgs_per_patient_max) / 2
        source, coverage = "synthetic: synth.n_patients x mean ECGs per patient", 1.0
    elif site.corpus_ecgs:
        n, source, coverage = float(site.corpus_ecgs), "site file corpus_ecgs", ASSUMED_LABELLED
    else:
        n, source, coverage = float(ASSUMED_CORPUS), "ASSUMED: 8.5 M ECGs (README hospital scale)", ASSUMED_LABELLED
    internal = n * (1 - (ASSUMED_EXTERNAL if cfg.render.external_sites else 0.0))
    val, test = internal * cfg.render.val_fraction, internal * cfg.render.test_fraction
    train = internal - val - test
    return Counts(n, train, {t: train * coverage for t in tasks},
                  {t: (val * coverage, (n - internal + test) * coverage) for t in tasks},
                  {t: val * coverage * ASSUMED_VAL_POSITIVE for t in tasks},
                  f"{source}; ASSUMED {ASSUMED_EXTERNAL:.0%} external, {coverage:.0%} labelled per task, "
                  f"{ASSUMED_VAL_POSITIVE:.0%} of validation positive")


def device_flops(cfg, site: SiteConfig, workload: str, cpus: int = 1) -> tuple[float, str]:
    """(sustained FLOP/s of one training device, where the number comes from)."""
    if cfg.allow_cpu:
        return cpus * ASSUMED_CPU_CORE_FLOPS, f"ASSUMED CPU: {ASSUMED_CPU_CORE_FLOPS / 1e9:g} GFLOP/s per core"
    if site.gpu_tflops:
        return site.gpu_tflops * 1e12, f"measured: site gpu_tflops {site.gpu_tflops:g}"
    from heartbeit.config.core import ConfigError
    from heartbeit.train.flops import GPU_SKUS

    gpu = (site.gpu_type or ASSUMED_GPU).upper()
    # the one peak table (train/flops.py GPU_SKUS): an exact SKU ("H100 PCIe") or its family's first row
    # ("H100" = H100 SXM, "A100" = A100 40GB)
    row = next((r for r in GPU_SKUS if r.sku.upper() == gpu), None) or \
        next((r for r in GPU_SKUS if r.sku.upper().split()[0] == gpu), None)
    if row is None:
        names = ", ".join(dict.fromkeys([r.sku.split()[0] for r in GPU_SKUS] + [r.sku for r in GPU_SKUS]))
        raise ConfigError(f"site gpu_type {site.gpu_type!r} has no peak in the table ({names}); set gpu_tflops "
                          "(measured) as well")
    mfu = ASSUMED_MFU[workload]
    label = f"{row.sku}" if site.gpu_type else f"ASSUMED {row.sku}"
    return row.bf16_tflops * 1e12 * mfu, f"{label} bf16 peak x ASSUMED {mfu:.0%} MFU ({workload})"


def pretrain_estimate(cfg, site: SiteConfig, world: int, counts: Counts) -> dict:
    """Seconds, steps x accumulation and GPU-hours of pretraining at `world` ranks."""
    from heartbeit.train.flops import mim_train_flops_per_image
    from heartbeit.train.schedule import resolve_schedule

    p = cfg.pretrain
    _, rec = resolve_schedule(p, int(counts.train) or None, world)
    grid = (p.image_size // _patch(p.model)) ** 2
    flops = mim_train_flops_per_image(p.model, p.image_size, cfg.tokenizer.vocab_size, min(p.mask_patches, grid))
    per_device, source = device_flops(cfg, site, "mim", _stage_cpus(site, "pretrain"))
    seconds = rec["steps"] * rec["global_batch"] * flops / (world * per_device)
    return {"seconds": seconds, "steps": rec["steps"], "grad_accum": rec["grad_accum"], "world": world,
            "global_batch": rec["global_batch"], "gpu_hours": seconds * world / 3600, "throughput": source,
            "images_per_s_per_device": per_device / flops}


def _patch(model: str) -> int:
    from heartbeit.config.preflight import patch_size

    return patch_size(model) or 16


def _stage_cpus(site: SiteConfig, stage: str) -> int:
    return site.stage(stage).cpus_per_task or SCRIPT_CPUS.get(stage, 1)


def cell_seconds(cfg, site: SiteConfig, spec: tuple[str, str, float, str], counts: Counts) -> float:
    """One matrix cell: its training steps (epochs x batches, or min_steps), a validation round per epoch (every
    positive + at most matrix.val_negatives_cap negatives), BatchNorm re-estimation, and one pass over the whole
    validation split, the test and the external sets with the selected weights; probes: one forward pass each."""
    from heartbeit.train.flops import classifier_forward_flops

    arch, task, fraction, kind = spec
    m = cfg.matrix
    wave_len = int(round(cfg.render.wave_hz * cfg.render.duration_s)) or 1000
    fwd = classifier_forward_flops(arch, m.image_size, wave_len)
    n = max(1.0, round(fraction * counts.labelled.get(task, counts.train)))
    val, held_out = counts.evaluated.get(task, (0.0, 0.0))
    per_device, _ = device_flops(cfg, site, cost_family(arch), _stage_cpus(site, "matrix"))
    if kind == "probe":
        return fwd * (n + val + held_out) / per_device
    steps = max(m.epochs * math.ceil(n / m.batch_size), m.min_steps)
    images = steps * min(n, m.batch_size)
    positive = counts.val_positive.get(task, 0.0)
    rounds = val if m.val_negatives_cap <= 0 else min(val, positive + m.val_negatives_cap)
    flops = 3 * fwd * images + fwd * (m.epochs * (rounds + m.bn_recalib_batches * m.batch_size) + val + held_out)
    return flops / per_device


def time_limit(seconds: float, site: SiteConfig) -> tuple[str, bool]:
    """(--time, capped): margin, start-up, rounded up to 15 min, at most site max_time."""
    limit = math.ceil((STARTUP_S + seconds * site.time_margin) / ROUND_S) * ROUND_S
    cap = parse_time(site.max_time) if site.max_time else None
    if cap is not None and limit > cap:
        return format_time(cap), True
    return format_time(limit), False


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (an sbatch --array list)."""
    out, run = [], []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def split_by_duration(seconds: list[float], site: SiteConfig) -> list[tuple[list[int], float]]:
    """Cells grouped by expected duration (limits of 1 h, 2 h, 4 h, ... doubling), so short cells do not
    queue with the limit of the longest: [(cell indices, longest estimate)], shortest group first."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seconds):
        limit = STARTUP_S + s * site.time_margin
        groups.setdefault(max(0, math.ceil(math.log2(max(limit, 1.0) / 3600.0))), []).append(i)
    return [(idx, max(seconds[i] for i in idx)) for _, idx in sorted(groups.items())]


@dataclass
class StudyEstimate:
    counts: Counts
    jobs: dict[str, float] = field(default_factory=dict)  # seconds per single job (prepare, pretrain, ...)
    pretrain: dict = field(default_factory=dict)
    cells: list[float] = field(default_factory=list)  # seconds per planned cell, plan order
    gpu_hours: float = 0.0
    encode_tasks: int = 1  # the token-encoding array's size
    assumptions: list[str] = field(default_factory=list)


def estimate_study(cfg, site: SiteConfig, world: int) -> StudyEstimate:
    from heartbeit.matrix import cell_specs
    from heartbeit.train.flops import tokenizer_forward_flops

    counts = corpus_counts(cfg, site)
    est = StudyEstimate(counts)
    cores = _stage_cpus(site, "prepare")
    tok = cfg.tokenizer
    tok_fwd = tokenizer_forward_flops(tok.kind, tok.vocab_size, tok.input_size, tok.patch_size, tok.vq_hidden,
                                      tok.vq_code_dim)
    tok_flops = (3 * tok.steps if tok.kind == "vqvae" else tok.kmeans_steps) * tok.batch_size * tok_fwd
    cpu = cores * ASSUMED_CPU_CORE_FLOPS
    decode = site.decode_images_per_s or ASSUMED_DECODE_PER_CORE
    tok_device = device_flops(cfg, site, "tokenizer")[0] if site.stage("prepare").gpus_per_node else cpu
    est.jobs["prepare"] = (counts.total / (INGEST_PER_CORE * cores) + counts.total / (RENDER_PER_CORE * cores)
                           + tok_flops / tok_device)
    # token encoding: decode + the tokenizer's forward pass over every image, as an array over the shards
    enc_cores = _stage_cpus(site, "encode")
    enc_device = device_flops(cfg, site, "tokenizer")[0] if site.stage("encode").gpus_per_node else \
        enc_cores * ASSUMED_CPU_CORE_FLOPS
    encode_total = counts.total * tok_fwd / enc_device + counts.total / (decode * enc_cores)
    shards = max(1, math.ceil(counts.total / cfg.render.shard_size))
    est.encode_tasks = site.encode_tasks or max(1, min(shards, math.ceil(encode_total / 3600)))
    est.jobs["encode"] = encode_total / est.encode_tasks
    est.jobs["gather"] = 300.0  # ASSUMED: reading one sidecar per shard
    est.pretrain = pretrain_estimate(cfg, site, world, counts)
    est.jobs["pretrain"] = est.pretrain["seconds"]
    est.jobs["plan"] = PLAN_S
    specs = cell_specs(cfg.matrix, len(cfg.pretrain.export_at))
    est.cells = [cell_seconds(cfg, site, spec, counts) for spec in specs]
    est.jobs["report"] = STARTUP_S + REPORT_S_PER_CELL * len(specs)
    gpus = 0.0 if cfg.allow_cpu else 1.0
    est.gpu_hours = gpus * (est.pretrain["gpu_hours"] + sum(est.cells) / 3600)
    est.assumptions = [
        f"corpus: {counts.source}",
        f"pretraining throughput: {est.pretrain['throughput']}",
        *sorted({f"matrix throughput ({cost_family(a)}): {device_flops(cfg, site, cost_family(a))[1]}"
                 for a in {s[0] for s in specs}}),
        f"CPU stages: ingest {INGEST_PER_CORE:g} files/s and render {RENDER_PER_CORE:,g} images/s per core "
        f"(measured, README bench), decode {decode:,g} images/s per core"
        + ("" if site.decode_images_per_s else " (ASSUMED)") + f", {cores} cores",
        f"time limits: estimate x {site.time_margin:g} + {STARTUP_S / 60:g} min, rounded up to "
        f"{ROUND_S / 60:g} min" + (f", at most {site.max_time}" if site.max_time else ""),
    ]
    return est


def cpus_per_rank(cfg, site: SiteConfig, stage: str) -> tuple[int, float]:
    """(CPUs one rank needs: 1 for the rank + enough loader cores for its GPU's image rate at the decode rate,
    never more than its loader processes and threads can use; that image rate)."""
    from heartbeit.train.flops import classifier_train_flops_per_image, mim_train_flops_per_image

    decode = site.decode_images_per_s or ASSUMED_DECODE_PER_CORE
    if stage == "pretrain":
        p = cfg.pretrain
        grid = (p.image_size // _patch(p.model)) ** 2
        rate = device_flops(cfg, site, "mim")[0] / mim_train_flops_per_image(
            p.model, p.image_size, cfg.tokenizer.vocab_size, min(p.mask_patches, grid))
        usable = max(1, p.num_workers) * p.decode_threads
    else:
        m = cfg.matrix
        images = [a for a in [*m.architectures, *m.probe_architectures] if cost_family(a) != "signal"]
        rate = max((device_flops(cfg, site, cost_family(a))[0] / classifier_train_flops_per_image(a, m.image_size)
                    for a in images), default=0.0)
        usable = max(1, m.num_workers) * m.decode_threads
    return 1 + min(usable, max(1, math.ceil(rate / decode))), rate


def allocation_problem(cfg, site: SiteConfig, nodes: int, gpus_per_node: int) -> str | None:
    """Why `nodes` x `gpus_per_node` GPUs are too few for the profile's pretraining (RunConfig.world_size),
    in the numbers that matter: world size, steps x accumulation, GPU-hours and wall time; None if enough
    (or a CPU profile, or a profile without a designed world size)."""
    if cfg.allow_cpu or not cfg.world_size or nodes * gpus_per_node >= cfg.world_size:
        return None
    world = nodes * gpus_per_node
    counts = corpus_counts(cfg, site)
    designed = pretrain_estimate(cfg, site, cfg.world_size, counts)
    if world < 1:
        return (f"world_size: the {cfg.profile} profile's pretraining needs GPUs (designed for {cfg.world_size}: "
                f"{designed['steps']:,} steps x {designed['grad_accum']} accumulated micro-batches, about "
                f"{designed['gpu_hours']:,.0f} GPU-hours) and this allocation has none: ask for them (sbatch "
                "--gpus-per-node, the site file's pretrain.gpus_per_node)")
    have = pretrain_estimate(cfg, site, world, counts)
    return (f"world_size: the {cfg.profile} profile's pretraining is designed for {cfg.world_size} GPUs "
            f"({designed['steps']:,} steps x {designed['grad_accum']} accumulated micro-batches of "
            f"{cfg.pretrain.batch_size}, about {designed['seconds'] / 3600:,.0f} h); this allocation has {world} "
            f"({nodes} node(s) x {gpus_per_node} GPU(s)): {have['steps']:,} steps x {have['grad_accum']}, about "
            f"{have['gpu_hours']:,.0f} GPU-hours in {have['seconds'] / 3600:,.0f} h of wall time (estimate: "
            f"{have['throughput']}; corpus: {counts.source}). Ask for {cfg.world_size} GPUs (the site file's "
            "nodes x pretrain.gpus_per_node, or sbatch --nodes/--gpus-per-node), or pass --allow-fewer-gpus")


def estimate_table(jobs, est: StudyEstimate) -> str:
    """The dry-run's table: every job's estimate, its --time and GPU-hours, the study's total, assumptions."""
    lines = ["# cost model (heartbeit/cost.py; ASSUMED = not measured):",
             f"#   {'job':<10} {'tasks':>6} {'GPUs':>5} {'estimate (longest task)':>24} {'--time':>12} {'GPU-hours':>10}"]
    total = 0.0
    for job in jobs:
        time_arg = next((a.split("=", 1)[1] for a in job.sbatch_args if a.startswith("--time=")), "(script)")
        tasks = len(job.task_indices) if job.array else 1
        if job.stage == "matrix":
            hours = sum(est.cells[i] for i in job.task_indices) / 3600 * job.gpus
        elif job.array:
            hours = job.estimate_s * tasks / 3600 * job.gpus
        else:
            hours = job.estimate_s / 3600 * job.gpus
        total += hours
        lines.append(f"#   {job.name:<10} {tasks:>6} {job.gpus:>5} {job.estimate_s / 3600:>22.2f} h {time_arg:>12} "
                     f"{hours:>10,.1f}")
    lines.append(f"#   study: {total:,.1f} GPU-hours for these jobs (all cells and pretraining: "
                 f"{est.gpu_hours:,.1f})")
    lines += [f"#   {a}" for a in est.assumptions]
    return "\n".join(lines)
