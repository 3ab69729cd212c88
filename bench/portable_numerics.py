"""What a portable numeric mode costs, and what it changes: one demo cell trained with the machine's own
vector ISA and with torch, oneDNN and MKL pinned to AVX2 (the ISA every x86-64 machine since 2015 has),
each in a fresh process; wall time, the predictions' sha256 and the internal-test AUROC.

    .venv/bin/python bench/portable_numerics.py --workdir runs/demo [--arch tf_efficientnet_lite0 --task hcm]

Byte equality *across* CPU types can only be checked by running this on two machine types and comparing
the recorded sha256 (docs/reproducibility.md says what has been compared)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"}


def train_once(args, env_extra: dict) -> dict:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    with tempfile.TemporaryDirectory() as tmp:
        matrix = Path(tmp) / "matrix"
        common = ["--profile", args.profile, "--workdir", args.workdir, "--matrix-dir", str(matrix),
                  "--set", f"matrix.architectures=[{args.arch}]", "--set", f"matrix.tasks=[{args.task}]",
                  "--set", f"matrix.fractions=[{args.fraction}]", "--set", "matrix.ablation_label_fraction=null",
                  "--set", "matrix.jobs=1", "--set", "matrix.threads_per_job=1"]
        env = {**os.environ, **env_extra}
        subprocess.run([sys.executable, "-m", "heartbeit", "matrix", "plan", *common], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "heartbeit", "matrix", "run", *common], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.time() - t0
        cell = next((matrix / "cells").glob("*/predictions.parquet"))
        pred = pd.read_parquet(cell)
        record = json.loads((cell.parent / "cell.json").read_text())
        internal = pred[pred["split"] == "test"]
        return {"seconds": round(seconds, 1), "predictions_sha256": hashlib.sha256(cell.read_bytes()).hexdigest(),
                "auroc_internal": round(float(roc_auc_score(internal["label"], internal["score"])), 6),
                "torch_cpu_capability": record.get("machine", {}).get("torch_cpu_capability"),
                "isa_pins": env_extra}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--arch", default="tf_efficientnet_lite0")
    ap.add_argument("--task", default="hcm")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--json", default="results/bench/portable_numerics.json")
    args = ap.parse_args()
    from heartbeit.utils.io import atomic_write_json
    from heartbeit.utils.machine import machine_record

    native = train_once(args, {})
    pinned = train_once(args, PINS)
    pinned_again = train_once(args, PINS)
    record = {"cell": {"arch": args.arch, "task": args.task, "fraction": args.fraction}, "machine": machine_record(),
              "native": native, "pinned_avx2": pinned, "pinned_avx2_again": pinned_again,
              "pinned_cost": round(pinned["seconds"] / native["seconds"], 3),
              "pinned_equals_native": pinned["predictions_sha256"] == native["predictions_sha256"],
              "pinned_repeatable": pinned["predictions_sha256"] == pinned_again["predictions_sha256"]}
    atomic_write_json(args.json, record)
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
