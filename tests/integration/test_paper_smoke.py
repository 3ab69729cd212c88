"""The paper profile, shrunken only in data and steps: the paper's models at the paper's sizes (HeartBEiT-B/16
and BEiT-B/16 at 224 px, the 8192-code VQ-VAE at 112 px, EfficientNet-B4, ResNet-152, the 1-D XResNet-101),
pretrained a few steps under ZeRO-3 with torchrun (2 ranks), then one matrix cell per architecture and the
report. CPU only, so it sets allow_cpu; no ImageNet weights here, so allow_random_init (the report says so)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heartbeit.distributed.deepspeed import extensions_dir

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SHRINK = [
    "allow_cpu=true", "matrix.allow_random_init=true",
    "synth.n_patients=50", "synth.ecgs_per_patient_max=2", "synth.prevalence_stemi=0.3", "synth.seed=3",
    "render.shard_size=8",  # several train shards: ranks are dealt whole shards
    "tokenizer.steps=2", "tokenizer.batch_size=8", "tokenizer.eval_images=8", "tokenizer.eval_points=1",
    "tokenizer.max_images=64",
    # the paper's schedule definition (epochs at a global batch), a tenth of an epoch at a global batch of 4
    "pretrain.epochs=0.1", "pretrain.warmup_epochs=0", "pretrain.warmup_steps=0", "pretrain.global_batch=4",
    "pretrain.batch_size=2", "pretrain.zero_stage=3", "pretrain.num_workers=0", "pretrain.log_every=1",
    "pretrain.export_at=[]", "matrix.ablation_label_fraction=null",  # the ablation: tests/integration/test_pretrain_ablation.py
    "matrix.tasks=[stemi]", "matrix.fractions=[1.0]", "matrix.seeds=[0]", "matrix.draws=1", "matrix.epochs=1",
    "matrix.batch_size=8", "matrix.num_workers=0", "matrix.jobs=2", "matrix.threads_per_job=1",
    "report.bootstrap=20", "report.saliency_samples=1", "report.saliency_lead_samples=2",
    "report.territory_samples=1", "report.wasserstein_pairs=5", "report.wasserstein_images=4",
    "report.fullgrad=false", "report.saliency_batch=2",
]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TORCH_EXTENSIONS_DIR=str(extensions_dir()))
    return env


def _run(cmd: list[str], timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd[:6])} exited {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_shrunken_paper_study_end_to_end(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    common = ["--profile", "paper", "--workdir", str(work), "--set", f"results_dir={results}"]
    for item in SHRINK:
        common += ["--set", item]
    t0 = time.monotonic()
    _run([PY, "-m", "heartbeit", "run", *common, "--until", "tokenizer", "--no-progress"], 240)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = _run([str(Path(PY).parent / "torchrun"), "--nproc_per_node=2", f"--master_port={port}", "-m",
                "heartbeit", "pretrain", *common, "--no-progress"], 300)
    assert "DeepSpeed ZeRO stage 3" in log or "ZeRO stage 3" in log
    export = json.loads((work / "pretrain" / "heartbeit-base_patch16_224.json").read_text())
    s = export["summary"]["schedule"]
    assert export["img_size"] == 224 and export["vocab_size"] == 8192 and s["world_size"] == 2
    assert (s["global_batch"], s["grad_accum"], s["mode"]) == (4, 1, "epochs")
    assert s["steps"] == -(-s["train_images"] // 40)  # ceil(0.1 epoch x images / 4)
    resolved = (work / "pretrain" / "config.resolved.yaml").read_text()
    assert f"steps: {s['steps']}" in resolved  # the derived values, written where the run is described
    # the rest of the study: pretraining is complete (skipped), one cell per architecture, the report
    _run([PY, "-m", "heartbeit", "run", *common, "--no-progress"], 600)
    cells = sorted((work / "matrix" / "cells").glob("*/complete.json"))
    plan = json.loads((work / "matrix" / "plan.json").read_text())
    archs = sorted(c["arch"] for c in (plan["cells"] if isinstance(plan, dict) else plan))
    assert archs == sorted(["heartbeit_base_patch16_224", "beit_base_patch16_224", "efficientnet_b4", "resnet152",
                            "signal_xresnet1d101"]) and len(cells) == 5
    report = (results / "REPORT.md").read_text()
    assert "matrix.allow_random_init: true" in report
    for arch in ("beit_base_patch16_224", "efficientnet_b4", "resnet152"):
        assert arch in report
    print(f"shrunken paper study: {time.monotonic() - t0:.0f} s")
