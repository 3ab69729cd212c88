"""Scaling model for HeartBEiT pretraining on a GPU cluster: wall time and node count for the paper's
8.5 M ECGs x 300 epochs (and 10x that), network time per step under DeepSpeed ZeRO 0-3, and the CPU cores per
node that keep the GPUs fed. Every input is either measured (a record under results/bench/) or an assumption
with its value; both are written next to the figures (plan.json, plan.md).

Model, per optimizer step, n = nodes x g GPUs, per-GPU batch b (weak scaling: the global batch grows with n):

    compute   t_c = b / (images/s of one GPU)              measured (train_step on that GPU) or
                                                            MFU x peak / (train FLOPs per image)
    traffic   S = 2 bytes x params (bf16 gradients / parameters)
              ZeRO 0-2: all-reduce, or reduce-scatter + all-gather = 2 (k-1)/k x S per GPU per step
              ZeRO 3:   1.5 x that (parameters gathered again in the backward)
    network   hierarchical ring: inside a node over NVLink at B_gpu per GPU, between nodes over the node's
              NIC(s) at B_node:  t_net = f x [2 (g-1)/g x S / B_gpu + 2 (N-1)/N x S / B_node],  f = 1 or 1.5
    step      t = t_c + (1 - overlap) x t_net        (overlap = 0: no overlap of communication, conservative)
    wall      images x epochs / (n x b / t)
    loader    cores/node = ceil(g x b / t / loader images/s per core) + g (one core drives each GPU); when a
              node has fewer, the step waits for the loader: t = max(t, g x b / ((cores - g) x loader rate))

Not modelled: activation memory, stragglers, checkpoint I/O, evaluation, a per-GPU batch below what keeps the
GPU busy. Usage (or `heartbeit bench plan`):

    .venv/bin/python bench/plan.py [--ecgs 8.5e6] [--epochs 300] [--gpus-per-node 8] [--gpu h100|a100|h200]
                                   [--from results/bench] [--out results/bench]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the GPU SKU (its dense bf16 peak: heartbeit.train.flops.GPU_SKUS) and NVLink bandwidth per GPU per direction (GB/s)
GPUS = {"a100": {"name": "A100 80GB", "nvlink_gbs": 300.0},
        "h100": {"name": "H100 SXM", "nvlink_gbs": 450.0},
        "h200": {"name": "H200 SXM", "nvlink_gbs": 450.0}}
PAPER_MIM = ("heartbeit_base_patch16_224", 224, 8192, 75)  # model, px, vocabulary, masked patches
FACTS_GFLOPS_PER_IMAGE = 108.0  # BEiT-B/16 MIM training with precomputed tokens, counted by hand
FACTS_PARAMS = 91.6e6  # BEiT-B/16 backbone + 8192-way lm head
NODE_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ZERO_STAGES = (0, 1, 2, 3)


@dataclass
class PlanInputs:
    ecgs: float = 8.5e6
    epochs: int = 300
    gpus_per_node: int = 8
    cores_per_node: int = 112  # DGX H100: 2 x 56-core Xeon 8480C
    gpu: str = "h100"
    per_gpu_batch: int = 64  # configs/paper.yaml pretrain.batch_size
    mfu: float = 0.45  # used only when no measurement on this GPU exists (the MFU goal set for BEiT-B on H100)
    inter_node_gbps: float = 200.0  # Gb/s per node (one HDR InfiniBand port); a node with 8 NICs has 8x
    overlap: float = 0.0  # fraction of communication hidden behind compute
    target_days: float = 7.0
    zero_stage: int = 1  # configs/paper.yaml
    node_counts: tuple[int, ...] = NODE_COUNTS
    # filled from measurements or assumptions
    gpu_images_per_s: float = 0.0
    train_flops_per_image: float = 0.0
    params: float = 0.0
    loader_images_per_s_per_core: float = 0.0
    render_images_per_s_per_core: float = 0.0
    ingest_files_per_s_per_core: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)
    # hospital-scale report (bench/scale.py): matrix cells, predictions per cell, cores of the report node
    report_cells: int = 500
    report_test_n: float = 3e5
    report_cores: int = 32


def _records(from_dir: Path) -> dict[str, list[dict]]:
    """Benchmark records (heartbeit bench) under from_dir and its subdirectories, by benchmark name."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(from_dir).rglob("*.json")) if Path(from_dir).is_dir() else []:
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("kind") == "heartbeit-bench-record" and rec.get("status") == "ok":
            rec["_path"] = str(path)
            out.setdefault(rec["name"], []).append(rec)
    return out


def _model_counts() -> tuple[float, float, str]:
    """(train FLOPs per image, parameters) of BEiT-B/16 MIM, counted on the meta device; the hand counts if that fails."""
    try:
        import torch

        from heartbeit.models.heartbeit import create_mim_model
        from heartbeit.train.flops import mim_train_flops_per_image

        name, px, vocab, masked = PAPER_MIM
        flops = mim_train_flops_per_image(name, px, vocab, masked)
        with torch.device("meta"):
            params = sum(p.numel() for p in create_mim_model(name, vocab, img_size=px).parameters())
        return flops, float(params), f"counted: {name} MIM, vocab {vocab}, {masked} masked (FlopCounterMode, 2xMACs, train = 3x fwd)"
    except Exception as exc:  # noqa: BLE001 (a planning tool must still answer without torch/timm)
        return FACTS_GFLOPS_PER_IMAGE * 1e9, FACTS_PARAMS, f"hand counts (counting failed: {type(exc).__name__})"


def gpu_row(key: str) -> dict:
    from heartbeit.train.flops import gpu_sku

    return {**GPUS[key], "peak_tflops": gpu_sku(GPUS[key]["name"]).bf16_tflops}


def gather_inputs(inp: PlanInputs, from_dir: Path) -> PlanInputs:
    from heartbeit.train.flops import gpu_sku_of

    gpu = gpu_row(inp.gpu)
    recs = _records(from_dir)
    src = inp.sources
    if not inp.train_flops_per_image or not inp.params:
        inp.train_flops_per_image, inp.params, src["train_flops_per_image"] = _model_counts()
        src["params"] = src["train_flops_per_image"].split(":")[0]
    label = f"pretrain_mim:{PAPER_MIM[0]}"
    measured = []
    for rec in recs.get("train_step", []):
        fig = rec["figures"]
        row = fig.get("models", {}).get(label)
        sku = gpu_sku_of(str(fig.get("device", "")))  # the exact SKU: an H100 PCIe does not stand in for an SXM
        if row and sku is not None and sku.sku == gpu["name"] and row.get("best_variant"):
            best = row["variants"][row["best_variant"]]
            measured.append((best["images_per_s"], row["best_variant"], fig.get("batch_size"), rec))
    if not inp.gpu_images_per_s:
        if measured:
            ips, variant, batch, rec = max(measured, key=lambda m: m[0])
            inp.gpu_images_per_s = ips
            src["gpu_images_per_s"] = (f"measured: {rec['figures']['device']}, {variant}, batch {batch} "
                                       f"({rec['_path']}, {rec.get('date', '?')[:10]})")
        else:
            inp.gpu_images_per_s = inp.mfu * gpu["peak_tflops"] * 1e12 / inp.train_flops_per_image
            src["gpu_images_per_s"] = (f"ASSUMED: {inp.mfu:.0%} MFU of the {gpu['name']} bf16 dense peak "
                                       f"{gpu['peak_tflops']:.0f} TFLOPS / {inp.train_flops_per_image / 1e9:.1f} "
                                       f"GFLOPs per image (no train_step record from a {gpu['name']} in {from_dir})")
    else:
        src.setdefault("gpu_images_per_s", "given")

    def figure(name: str, pick, default: float, what: str) -> tuple[float, str]:
        for rec in recs.get(name, []):
            try:
                value = float(pick(rec["figures"]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                continue
            return value, f"measured: {what} ({rec['_path']}, {rec['machine'].get('cpu_model')}, {rec.get('date', '?')[:10]})"
        return default, f"ASSUMED: {default:g} ({what}; no {name} record in {from_dir})"

    def loader_per_core(f: dict) -> float:
        cores = int(f["cores"])
        return f.get("stream_best_all_cores_img_per_s", f[f"stream_{cores}_workers_img_per_s"]) / cores

    if not inp.loader_images_per_s_per_core:
        inp.loader_images_per_s_per_core, src["loader_images_per_s_per_core"] = figure(
            "loader", loader_per_core, 300.0, "PNG stream + decode + collate, images/s per core at all cores")
    if not inp.render_images_per_s_per_core:
        inp.render_images_per_s_per_core, src["render_images_per_s_per_core"] = figure(
            "render", lambda f: f["render+png1_ours_img_per_s"], 200.0, "render + PNG encode, images/s on one core")
    if not inp.ingest_files_per_s_per_core:
        inp.ingest_files_per_s_per_core, src["ingest_files_per_s_per_core"] = figure(
            "ingest", lambda f: f["files_per_s_per_core"]["muse_ours_ingest_step"], 100.0,
            "MUSE XML full ingest step, files/s on one core")
    src["cores_per_node"] = f"ASSUMED: {inp.cores_per_node} CPU cores per node"
    src["network"] = (f"ASSUMED: {inp.inter_node_gbps:g} Gb/s between nodes per node, NVLink {gpu['nvlink_gbs']:g} "
                      f"GB/s per GPU inside a node, ring all-reduce, overlap {inp.overlap:.0%}")
    src["scaling"] = (f"ASSUMED: weak scaling at {inp.per_gpu_batch} images per GPU per step (global batch grows "
                      f"with the GPU count; learning-rate scaling is the user's call); per-GPU speed independent "
                      f"of the GPU count except for communication")
    return inp


def step_traffic_bytes(params: float, zero_stage: int, ranks: int) -> float:
    """Bytes each GPU sends per optimizer step (ring collectives on bf16 gradients/parameters)."""
    if ranks <= 1:
        return 0.0
    factor = 1.5 if zero_stage == 3 else 1.0
    return factor * 2.0 * (ranks - 1) / ranks * 2.0 * params


def network_seconds(params: float, zero_stage: int, nodes: int, gpus_per_node: int, nvlink_gbs: float,
                    inter_node_gbps: float) -> float:
    """Hierarchical ring: an intra-node phase over NVLink, then the inter-node phase through the node's NIC."""
    factor = 1.5 if zero_stage == 3 else 1.0
    size = 2.0 * params
    intra = 2.0 * (gpus_per_node - 1) / gpus_per_node * size / (nvlink_gbs * 1e9) if gpus_per_node > 1 else 0.0
    inter = 2.0 * (nodes - 1) / nodes * size / (inter_node_gbps * 1e9 / 8) if nodes > 1 else 0.0
    return factor * (intra + inter)


def model_state_gib(params: float, zero_stage: int, ranks: int) -> float:
    """Mixed-precision Adam model states per GPU (16 B/param: bf16 weights 2, grads 2, fp32 master+m+v 12)."""
    p = params
    per = {0: 16 * p, 1: 4 * p + 12 * p / ranks, 2: 2 * p + 14 * p / ranks, 3: 16 * p / ranks}[zero_stage]
    return per / 2**30


def predict(inp: PlanInputs, nodes: int, zero_stage: int, ecgs: float) -> dict:
    g = inp.gpus_per_node
    ranks = nodes * g
    t_c = inp.per_gpu_batch / inp.gpu_images_per_s
    t_net = network_seconds(inp.params, zero_stage, nodes, g, GPUS[inp.gpu]["nvlink_gbs"], inp.inter_node_gbps)
    t_gpu = t_c + (1.0 - inp.overlap) * t_net
    cores = math.ceil(g * inp.per_gpu_batch / t_gpu / inp.loader_images_per_s_per_core) + g
    data_cores = max(1, inp.cores_per_node - g)
    t_loader = g * inp.per_gpu_batch / (data_cores * inp.loader_images_per_s_per_core)
    t_step = max(t_gpu, t_loader)
    bound = "loader" if t_loader > t_gpu else ("network" if (1.0 - inp.overlap) * t_net > 0.5 * t_c else "gpu")
    ips_total = ranks * inp.per_gpu_batch / t_step
    wall_s = ecgs * inp.epochs / ips_total
    return {"nodes": nodes, "gpus": ranks, "zero_stage": zero_stage, "compute_s_per_step": t_c,
            "network_s_per_step": t_net, "loader_s_per_step": t_loader, "step_s": t_step, "bound": bound, "network_share": (1 - inp.overlap) * t_net / t_step,
            "traffic_mb_per_gpu_per_step": step_traffic_bytes(inp.params, zero_stage, ranks) / 1e6,
            "images_per_s": ips_total, "scaling_efficiency": t_c / t_step, "wall_days": wall_s / 86400,
            "gpu_hours": wall_s * ranks / 3600, "loader_cores_per_node": cores,
            "model_state_gib_per_gpu": model_state_gib(inp.params, zero_stage, ranks)}


def plan(inp: PlanInputs) -> dict:
    scenarios = {}
    for scale in (1, 10):
        ecgs = inp.ecgs * scale
        rows = [predict(inp, n, z, ecgs) for n in inp.node_counts for z in ZERO_STAGES]
        need = {}
        for z in ZERO_STAGES:
            ok = [r for r in rows if r["zero_stage"] == z and r["wall_days"] <= inp.target_days]
            need[z] = min(ok, key=lambda r: r["nodes"])["nodes"] if ok else None
        scenarios[f"{scale}x"] = {"ecgs": ecgs, "images": ecgs * inp.epochs, "rows": rows,
                                  "nodes_for_target_by_zero_stage": need}
    one = predict(inp, 1, inp.zero_stage, inp.ecgs)
    offline = {
        "ingest_core_hours": inp.ecgs / inp.ingest_files_per_s_per_core / 3600,
        "render_core_hours": inp.ecgs / inp.render_images_per_s_per_core / 3600,
    }
    return {"inputs": {k: v for k, v in asdict(inp).items() if k != "sources"}, "sources": inp.sources,
            "gpu": gpu_row(inp.gpu), "scenarios": scenarios, "offline_preprocessing": offline,
            "loader_cores_per_node": one["loader_cores_per_node"],
            "hospital_scale": hospital_scale(inp, Path(inp.sources.get("_from_dir", "results/bench")))}


def hospital_scale(inp: PlanInputs, from_dir: Path) -> dict | None:
    """Paper-scale CPU stages from the newest bench/scale.py record (full mode preferred): one render array
    task's planning overhead, and the report's cell evaluation (t(n) = t(n0) (n / n0)^b per cell, fitted on
    the measured sizes; cells spread over the report node's cores by `report.workers`)."""
    recs = _records(from_dir).get("scale", [])
    if not recs:
        return None
    rec = sorted(recs, key=lambda r: (not r.get("quick"), r.get("date", "")))[-1]
    f = rec["figures"]

    def per_cell(key: str) -> float:
        fit = f["cell_eval_fit"][key]
        return fit["s_at_largest"] * (inp.report_test_n / fit["n_largest"]) ** fit["exponent"]

    old_cell, new_cell = per_cell("cell_eval_old"), per_cell("cell_eval_new")
    render = f["render_per_task_at_8.5M"]
    return {
        "source": f"{rec['_path']} ({'quick' if rec.get('quick') else 'full'} mode, {rec.get('date', '?')[:10]}, "
                  f"{rec['machine'].get('cpu_model')})",
        "cells": inp.report_cells, "test_n": inp.report_test_n, "cores": inp.report_cores,
        "resamples": f["resamples"],
        "cell_eval_s_old": old_cell, "cell_eval_s_new": new_cell,
        "report_hours_old_serial": inp.report_cells * old_cell / 3600,
        "report_hours_new": math.ceil(inp.report_cells / inp.report_cores) * new_cell / 3600,
        "render_task_s_old": render["old"]["s"], "render_task_s_new": render["new"]["s"],
        "render_task_rss_mb_old": render["old"]["rss_mb"], "render_task_rss_mb_new": render["new"]["rss_mb"],
        "render_plan_once_s": render["plan_once"]["s"], "render_how": render["new"]["how"],
        "idle_rss_mb": f.get("idle_rss_mb"),
    }


def markdown(result: dict) -> str:
    inp, gpu = result["inputs"], result["gpu"]
    lines = [f"# Scaling plan: HeartBEiT (BEiT-B/16) pretraining on {gpu['name']} nodes", "",
             f"{inp['ecgs']:.3g} ECGs x {inp['epochs']} epochs, {inp['gpus_per_node']} GPUs per node, "
             f"{inp['per_gpu_batch']} images per GPU per step, target {inp['target_days']:g} days.", "",
             "## Inputs and assumptions (ASSUMED = not measured)", ""]
    lines.append(f"- per-GPU images/s: {inp['gpu_images_per_s']:.0f} — {result['sources']['gpu_images_per_s']}")
    lines.append(f"- train FLOPs per image: {inp['train_flops_per_image'] / 1e9:.1f} G — "
                 f"{result['sources']['train_flops_per_image']}")
    lines.append(f"- parameters: {inp['params'] / 1e6:.1f} M — {result['sources']['params']}")
    for key in ("loader_images_per_s_per_core", "render_images_per_s_per_core", "ingest_files_per_s_per_core"):
        lines.append(f"- {key.replace('_', ' ')}: {inp[key]:.1f} — {result['sources'][key]}")
    lines.append(f"- CPU: {result['sources']['cores_per_node']}")
    lines.append(f"- network: {result['sources']['network']}")
    lines.append(f"- scaling: {result['sources']['scaling']}")
    lines.append("- ZeRO traffic per GPU per step: stages 0-2 = 2 (k-1)/k x 2 B x params, stage 3 = 1.5x that; "
                 "model states 16 B/param (stage 1: 4 + 12/k, 2: 2 + 14/k, 3: 16/k); activations not included")
    for name, sc in result["scenarios"].items():
        need = ", ".join(f"ZeRO-{z}: {n if n else '> ' + str(inp['node_counts'][-1])}"
                         for z, n in sc["nodes_for_target_by_zero_stage"].items())
        lines += ["", f"## {name}: {sc['ecgs']:.3g} ECGs ({sc['images']:.3g} images)", "",
                  f"Nodes needed for <= {inp['target_days']:g} days: {need}", "",
                  "| nodes | GPUs | ZeRO-0 days | ZeRO-1 days | ZeRO-2 days | ZeRO-3 days | net s/step 0-2 | "
                  "net s/step 3 | efficiency 1 / 3 | bound (ZeRO-1) | GPU-hours (ZeRO-1) | loader cores/node needed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        by = {(r["nodes"], r["zero_stage"]): r for r in sc["rows"]}
        for n in inp["node_counts"]:
            r = [by[(n, z)] for z in ZERO_STAGES]
            lines.append(f"| {n} | {r[0]['gpus']} | " + " | ".join(f"{x['wall_days']:.3g}" for x in r)
                         + f" | {r[1]['network_s_per_step']:.4f} | {r[3]['network_s_per_step']:.4f} | "
                         f"{r[1]['scaling_efficiency']:.2f} / {r[3]['scaling_efficiency']:.2f} | {r[1]['bound']} | "
                         f"{r[1]['gpu_hours']:,.0f} | {r[1]['loader_cores_per_node']} |")
    off = result["offline_preprocessing"]
    lines += ["", "## One-off preprocessing (CPU)", "",
              f"- ingest: {off['ingest_core_hours']:,.0f} core-hours; render + encode: {off['render_core_hours']:,.0f} "
              f"core-hours (tokenizer encode not modelled)", "",
              f"CPU cores per node to feed {inp['gpus_per_node']} GPUs: {result['loader_cores_per_node']} "
              f"(decode + collate at the per-core rate above, plus one core per GPU process); the plan assumes "
              f"{inp['cores_per_node']} cores per node"
              + (" -- too few: the loader bounds the step (add cores, or store pre-decoded uint8 shards)."
                 if result["loader_cores_per_node"] > inp["cores_per_node"] else "."), ""]
    hs = result.get("hospital_scale")
    if hs:
        lines += ["## Hospital scale: render planning and the report (CPU, bench/scale.py)", "",
                  f"From {hs['source']}; {hs['resamples']} bootstrap resamples per AUPRC interval.", "",
                  f"- report: {hs['cells']} cells x {hs['test_n']:.3g} predictions each (pooled and per site): "
                  f"{hs['cell_eval_s_new']:.0f} s per cell (before: {hs['cell_eval_s_old']:.0f} s); "
                  f"**{hs['report_hours_new']:.2f} h on a {hs['cores']}-core node** with report.workers = "
                  f"{hs['cores']} (before: {hs['report_hours_old_serial']:.1f} h, serial). Peak memory: one cell's "
                  f"predictions per worker process (cells stream their predictions).",
                  f"- render as a Slurm array at 8.5e6 ECGs: planning overhead per task {hs['render_task_s_new']:.1f} s "
                  f"and {hs['render_task_rss_mb_new']:.0f} MB peak RSS (before: {hs['render_task_s_old']:.0f} s, "
                  f"{hs['render_task_rss_mb_old']:.0f} MB; the interpreter with torch alone is "
                  f"{hs['idle_rss_mb']:.0f} MB), plus one planning job of {hs['render_plan_once_s']:.0f} s "
                  f"({hs['render_how']}).", ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = PlanInputs()
    p.add_argument("--ecgs", type=float, default=d.ecgs, help="ECGs in the pretraining corpus (default 8.5e6)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--gpus-per-node", type=int, default=d.gpus_per_node)
    p.add_argument("--gpu", choices=sorted(GPUS), default=d.gpu)
    p.add_argument("--cores-per-node", type=int, default=d.cores_per_node)
    p.add_argument("--per-gpu-batch", type=int, default=d.per_gpu_batch)
    p.add_argument("--mfu", type=float, default=d.mfu, help="assumed MFU when no GPU measurement exists")
    p.add_argument("--gpu-images-per-s", type=float, default=0.0, help="override the per-GPU pretraining rate")
    p.add_argument("--inter-node-gbps", type=float, default=d.inter_node_gbps, help="Gb/s per node between nodes")
    p.add_argument("--overlap", type=float, default=d.overlap, help="fraction of communication hidden (0-1)")
    p.add_argument("--target-days", type=float, default=d.target_days)
    p.add_argument("--zero-stage", type=int, choices=ZERO_STAGES, default=d.zero_stage)
    p.add_argument("--report-cells", type=int, default=d.report_cells, help="matrix cells in the report")
    p.add_argument("--report-test-n", type=float, default=d.report_test_n, help="predictions per cell")
    p.add_argument("--report-cores", type=int, default=d.report_cores, help="cores of the report node")
    p.add_argument("--from", dest="from_dir", default="results/bench", help="benchmark records to read")
    p.add_argument("--out", default="results/bench", help="where plan.json and plan.md go")


def run_plan(args: argparse.Namespace) -> dict:
    from heartbeit.utils.io import atomic_write_json, atomic_write_text

    if not 0 <= args.overlap <= 1:
        raise ValueError(f"--overlap must be in [0, 1], got {args.overlap}")
    inp = PlanInputs(ecgs=args.ecgs, epochs=args.epochs, gpus_per_node=args.gpus_per_node, gpu=args.gpu,
                     cores_per_node=args.cores_per_node,
                     per_gpu_batch=args.per_gpu_batch, mfu=args.mfu, inter_node_gbps=args.inter_node_gbps,
                     overlap=args.overlap, target_days=args.target_days, zero_stage=args.zero_stage,
                     gpu_images_per_s=args.gpu_images_per_s, report_cells=args.report_cells,
                     report_test_n=args.report_test_n, report_cores=args.report_cores)
    inp.sources["_from_dir"] = args.from_dir
    result = plan(gather_inputs(inp, Path(args.from_dir)))
    result["sources"].pop("_from_dir", None)
    text = markdown(result)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan.json", result)
    atomic_write_text(out / "plan.md", text)
    print(f"-> {out / 'plan.json'}, {out / 'plan.md'}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run_plan(parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
