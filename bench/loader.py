"""Streaming throughput of the image loader (tar read + filter + shuffle buffer + PNG decode + collate,
through a torch DataLoader) for 0..N workers, against a raw decode ceiling measured in the same run: PIL
decoding the same PNG bytes in a loop on one core (no tar, no torch). Shards come from a synthetic corpus
rendered by the real pipeline. Usage: .venv/bin/python bench/loader.py [--quick] [--json OUT]"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from heartbeit.config import RenderConfig  # noqa: E402
from heartbeit.data.corpus import ShardWriter  # noqa: E402
from heartbeit.data.loader import make_loader  # noqa: E402
from heartbeit.data.shards import render_corpus  # noqa: E402
from heartbeit.data.synth import simulate_ecg  # noqa: E402
from heartbeit.utils.io import resolve_workers  # noqa: E402


def _corpus(root: Path, n: int, fs: int) -> None:
    import pandas as pd

    writer = ShardWriter(root, 256)
    rows = []
    base = simulate_ecg(0, fs=fs, noise_mv=0.02)
    rng = np.random.default_rng(0)
    for i in range(n):  # vary amplitude and shift so images differ without simulating every ECG
        sig = np.roll(base * rng.uniform(0.6, 1.4), int(rng.integers(base.shape[1])), axis=1)
        row = dict(ecg_uid=f"b{i:07d}", patient_hash=f"p{i:07d}", site="hosp_a", format="npz", device="bench",
                   fs=float(fs), n_samples=sig.shape[1], lvef_le40=float(i % 7 == 0), hcm=0.0, stemi=0.0)
        done = writer.add(row, np.round(sig * 1000).astype(np.int16))
        if done:
            rows.extend(done[1])
    done = writer.flush()
    if done:
        rows.extend(done[1])
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet", index=False)


def run(quick: bool, size: int = 224) -> dict:
    n = 600 if quick else 4000
    cores = resolve_workers(0)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        tmp = Path(tmp)
        _corpus(tmp / "corpus", n, 250)
        cfg = RenderConfig(image_size=size, shard_size=100, val_fraction=0.05, test_fraction=0.05, external_sites=[])
        render_corpus(tmp / "corpus", tmp / "images", cfg, workers=cores, progress=False)
        pngs = []
        for path in sorted((tmp / "images" / "train").glob("*.tar")):
            with tarfile.open(path) as tar:
                pngs += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")]
        from PIL import Image

        start = time.perf_counter()
        for data in pngs:
            np.asarray(Image.open(io.BytesIO(data)))
        ceiling = len(pngs) / (time.perf_counter() - start)
        out = {"image_size": size, "images": len(pngs), "cores": cores,
               "raw_png_decode_ceiling_img_per_s_1core": round(ceiling, 1)}
        for workers in sorted({0, 1, 2, min(4, cores), cores}):
            loader = make_loader(tmp / "images", "train", batch_size=64, num_workers=workers, train=False,
                                 multiprocessing_context="fork" if workers else None)
            start = time.perf_counter()
            count = sum(batch["count"] for batch in loader)
            rate = count / (time.perf_counter() - start)
            out[f"stream_{workers}_workers_img_per_s"] = round(rate, 1)
            out[f"stream_{workers}_workers_vs_1core_ceiling"] = round(rate / ceiling, 2)
    # the yardstick: the stream with every core against the decode ceiling of the same cores
    rate = out[f"stream_{cores}_workers_img_per_s"]
    out["headline"] = {"metric": f"streamed images/s ({cores} workers, {size} px)", "value": rate,
                       "baseline": round(ceiling * cores, 1), "baseline_name": f"raw PNG decode x {cores} cores",
                       "ratio": round(rate / (ceiling * cores), 2)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = run(args.quick, args.size)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
