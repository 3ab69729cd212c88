"""Streaming throughput of the image loader (tar read + filter + shuffle buffer + PNG decode + collate,
through a torch DataLoader) for 0..N workers, each against a raw decode ceiling measured in the same run
with the same number of cores: the loader's own PNG decoder (libpng through imagecodecs) decoding the same
PNG bytes from memory (no tar, no torch, no batch) in as many forked processes as the loader has cores
(1 for 0 workers, N for N workers or N decode threads). PIL's decode of the same bytes is measured too, to
show what the decoder choice alone is worth.

The corpus: a few hundred ECGs rendered by the real pipeline, replicated under new keys into a larger shard
set (about 3,400 images in --quick, 18,000 otherwise), so worker start-up is amortised as in a real epoch.
Loaders run the training configuration (`with_meta=False`: images, labels, ecg_uid) in shard order, plus
one evaluation run with per-sample metadata, and one with no worker processes where the trainer's own process
decodes each batch in as many threads as there are cores (libpng runs without the GIL). Consumer overlap: the
in-process loader again with a consumer that waits STEP_S per batch with the GIL released (a trainer waiting
on its accelerator), with 1 thread (loading and step take turns: the same-run control) and with `cores`
threads (the next batch is read and decoded during the step); the ratio is against the rate if they took
turns. Every figure is the median of `--repeats` runs; ceilings and streams alternate, so a change in the
machine's load hits both.
Usage: .venv/bin/python bench/loader.py [--quick] [--repeats 3] [--json OUT]"""
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
from heartbeit.data.loading.loader import make_loader  # noqa: E402
from heartbeit.data.render.stage import render_corpus  # noqa: E402
from heartbeit.utils.io import resolve_workers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_corpus import synthetic_corpus  # noqa: E402


def _replicate(src: Path, dst: Path, copies: int) -> None:
    """dst: an image set holding `copies` copies of src's train split under new keys (same pixels)."""
    import pandas as pd

    from heartbeit.data.corpus import write_shard

    index = json.loads((src / "index.json").read_text())
    man = pd.read_parquet(src / "manifest.parquet")
    man = man[man["split"] == "train"]
    shards, rows = [], []
    (dst / "train").mkdir(parents=True)
    names = sorted(s["name"] for s in index["splits"]["train"]["shards"])
    for copy in range(copies):
        for name in names:
            with tarfile.open(src / name) as tar:
                members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
            out_name = f"train/train-{len(shards):06d}.tar"
            renamed = []
            for member, data in members:
                key, ext = member.split(".", 1)
                if ext == "json":
                    meta = json.loads(data)
                    meta["ecg_uid"] = f"{key}c{copy}"
                    data = json.dumps(meta, sort_keys=True).encode()
                renamed.append((f"{key}c{copy}.{ext}", data))
            write_shard(dst / out_name, renamed)
            part = man[man["shard"] == name].assign(shard=out_name)
            rows.append(part.assign(key=part["key"] + f"c{copy}", ecg_uid=part["ecg_uid"] + f"c{copy}"))
            shards.append({"name": out_name, "count": len(part)})
    index["splits"] = {"train": {"count": sum(s["count"] for s in shards), "shards": shards}}
    (dst / "index.json").write_text(json.dumps(index))
    pd.concat(rows).to_parquet(dst / "manifest.parquet", index=False)


_PNGS: list[bytes] = []  # inherited by the forked decode processes


def _decode_share(share: tuple[int, int]) -> int:
    import imagecodecs  # what heartbeit.data.shard_format.decode_png_into calls

    for data in _PNGS[share[0]:share[1]]:
        imagecodecs.png_decode(data)
    return share[1] - share[0]


def _decode_share_pil(share: tuple[int, int]) -> int:
    from PIL import Image

    for data in _PNGS[share[0]:share[1]]:
        np.asarray(Image.open(io.BytesIO(data)))
    return share[1] - share[0]


def decode_ceiling(pool, processes: int, decoder=_decode_share) -> float:
    """Images/s of raw PNG decoding in `processes` processes at once (the pool is already started)."""
    n = len(_PNGS)
    bounds = np.linspace(0, n, processes + 1).astype(int)
    start = time.perf_counter()
    done = sum(pool.map(decoder, list(zip(bounds[:-1], bounds[1:])), chunksize=1))
    return done / (time.perf_counter() - start)


BATCH = 64
STEP_S = 0.004  # a trainer's step per batch, spent waiting on its accelerator (the GIL released)


def stream_rate(images: Path, workers: int, with_meta: bool, threads: int = 1, step_s: float = 0.0) -> float:
    loader = make_loader(images, "train", batch_size=BATCH, num_workers=workers, train=False, with_meta=with_meta,
                         multiprocessing_context="fork" if workers else None, decode_threads=threads)
    start = time.perf_counter()  # worker start-up included, as every epoch pays it
    count = 0
    for batch in loader:
        count += batch["count"]
        if step_s:
            time.sleep(step_s)
    return count / (time.perf_counter() - start)


def overlap_ratio(with_step: float, alone: float, step_s: float) -> float:
    """Images/s with a consumer step per batch over the rate if loading and the step took turns: 1 = no
    overlap; up to (load + step) / max(load, step) when the next batch is read while the consumer works."""
    return with_step / (1.0 / (1.0 / alone + step_s / BATCH))


def run(quick: bool, size: int = 224, repeats: int = 3) -> dict:
    import multiprocessing

    from heartbeit.benchsuite import smoke

    rendered, copies = (200, 20) if quick else (1000, 20)
    if smoke():  # a few shards of 64 px images: enough for every worker count
        rendered, copies, size, repeats = 40, 4, 64, 1
    cores = resolve_workers(0)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        tmp = Path(tmp)
        synthetic_corpus(tmp / "corpus", rendered, 250)
        cfg = RenderConfig(image_size=size, shard_size=100, val_fraction=0.05, test_fraction=0.05, external_sites=[])
        render_corpus(tmp / "corpus", tmp / "rendered", cfg, workers=cores, progress=False)
        _replicate(tmp / "rendered", tmp / "images", copies)
        _PNGS.clear()
        for path in sorted((tmp / "images" / "train").glob("*.tar")):
            with tarfile.open(path) as tar:
                _PNGS.extend(tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png"))
        out = {"image_size": size, "images": len(_PNGS), "cores": cores, "repeats": repeats}
        worker_counts = sorted({0, 1, 2, min(4, cores), cores})
        ceilings: dict[int, list[float]] = {}
        streams: dict[int, list[float]] = {}
        threaded: list[float] = []  # no worker processes: the trainer's process decodes in `cores` threads
        stepped: dict[int, list[float]] = {}  # the same with a consumer step per batch, 1 and `cores` threads
        with_meta: list[float] = []
        pil: dict[int, list[float]] = {}
        pools = {p: multiprocessing.get_context("fork").Pool(p) for p in {max(1, w) for w in worker_counts}}
        try:
            for pool in pools.values():  # start-up outside the timing: the ceiling is pure decoding
                pool.map(int, range(len(pool._pool)))
            for _ in range(repeats):
                for workers in worker_counts:
                    processes = max(1, workers)
                    ceilings.setdefault(processes, []).append(decode_ceiling(pools[processes], processes))
                    streams.setdefault(workers, []).append(stream_rate(tmp / "images", workers, with_meta=False))
                with_meta.append(stream_rate(tmp / "images", cores, with_meta=True))
                for processes in (1, cores):
                    pil.setdefault(processes, []).append(decode_ceiling(pools[processes], processes, _decode_share_pil))
                threaded.append(stream_rate(tmp / "images", 0, with_meta=False, threads=cores))
                for threads in sorted({1, cores}):
                    stepped.setdefault(threads, []).append(
                        stream_rate(tmp / "images", 0, with_meta=False, threads=threads, step_s=STEP_S))
        finally:
            for pool in pools.values():
                pool.terminate()
        for processes, rates in sorted(ceilings.items()):
            out[f"raw_png_decode_ceiling_{processes}_cores_img_per_s"] = round(float(np.median(rates)), 1)
        for processes, rates in sorted(pil.items()):
            out[f"pil_png_decode_{processes}_cores_img_per_s"] = round(float(np.median(rates)), 1)
        out["decoder_vs_pil_1_core"] = round(out["raw_png_decode_ceiling_1_cores_img_per_s"]
                                             / out["pil_png_decode_1_cores_img_per_s"], 2)
        for workers, rates in streams.items():
            ceiling = out[f"raw_png_decode_ceiling_{max(1, workers)}_cores_img_per_s"]
            out[f"stream_{workers}_workers_img_per_s"] = round(float(np.median(rates)), 1)
            out[f"stream_{workers}_workers_vs_same_cores_ceiling"] = round(float(np.median(rates)) / ceiling, 2)
        ceiling = out[f"raw_png_decode_ceiling_{cores}_cores_img_per_s"]
        out[f"stream_{cores}_workers_with_meta_img_per_s"] = round(float(np.median(with_meta)), 1)
        out[f"stream_{cores}_workers_with_meta_vs_same_cores_ceiling"] = round(float(np.median(with_meta)) / ceiling, 2)
        out[f"stream_0_workers_{cores}_threads_img_per_s"] = round(float(np.median(threaded)), 1)
        out[f"stream_0_workers_{cores}_threads_vs_same_cores_ceiling"] = round(float(np.median(threaded)) / ceiling, 2)
        # consumer overlap: the next batch decodes while the trainer waits on its step (decode_threads > 1);
        # one thread decodes in turn with the step, the same-run control
        out["consumer_step_ms"] = STEP_S * 1000
        for threads, rates in sorted(stepped.items()):
            alone = out["stream_0_workers_img_per_s"] if threads == 1 else out[f"stream_0_workers_{cores}_threads_img_per_s"]
            rate = float(np.median(rates))
            out[f"stream_0_workers_{threads}_threads_with_step_img_per_s"] = round(rate, 1)
            out[f"stream_0_workers_{threads}_threads_with_step_vs_no_overlap"] = round(overlap_ratio(rate, alone, STEP_S), 2)
    # the yardstick: the best loader set-up using every core against the decode ceiling of the same cores
    setups = {f"{cores} workers": out[f"stream_{cores}_workers_img_per_s"],
              f"{cores} decode threads, no workers": out[f"stream_0_workers_{cores}_threads_img_per_s"]}
    best = max(setups, key=setups.get)
    out["stream_best_all_cores_img_per_s"] = setups[best]
    out["stream_best_all_cores_setup"] = best
    out["headline"] = {"metric": f"streamed images/s ({best}, {size} px)", "value": setups[best],
                       "baseline": ceiling, "baseline_name": f"raw PNG decode (libpng) in {cores} processes",
                       "ratio": round(setups[best] / ceiling, 2)}
    return out


def main() -> int:
    from heartbeit.benchsuite import print_figures

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is reported)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = run(args.quick, args.size, args.repeats)
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
