"""ECG image rendering throughput, one core: the suite's vectorised renderer against matplotlib drawing the
same layout with a figure reused between images (the fair baseline: creating a figure per ECG is ~5x
slower still), measured in the same run on the same preprocessed synthetic ECGs (10 s, 500 Hz, 224x224
3x4 + II strip unless --size/--fs say otherwise). Also render + encode (PNG zlib levels 0/1/6 via PIL, raw
.npy) with bytes per image, and the preprocessing filters, to pick the shard encoding.
Usage: .venv/bin/python bench/render.py [--quick] [--json OUT]"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core figures
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from heartbeit.benchsuite import smoke  # noqa: E402
from heartbeit.data.render.draw import MatplotlibRenderer, render, render_batch  # noqa: E402
from heartbeit.data.shard_format import encode_image  # noqa: E402
from heartbeit.data.signal import preprocess  # noqa: E402
from heartbeit.data.synth.ecg import simulate_ecg  # noqa: E402


def _rate(fn, items, min_time: float) -> float:
    """items per second over repeated passes of fn(item) lasting at least min_time."""
    fn(items[0])  # warm caches (render plan, matplotlib artists)
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return done / elapsed


def run(quick: bool, size: int = 224, fs: float = 500.0) -> dict:
    n_ecgs = 16 if quick else 64
    min_time = 1.0 if quick else 4.0
    if smoke():
        n_ecgs, min_time = 2, 0.0
    raw = np.stack([simulate_ecg(seed, fs=fs, noise_mv=0.02, wander_mv=0.2, stemi_territory=("anterior" if seed % 4 == 0 else None))
                    for seed in range(n_ecgs)])
    ecgs = list(preprocess(raw, fs))
    mpl = MatplotlibRenderer(size)
    out: dict = {"image_size": size, "fs": fs, "ecgs": n_ecgs}

    ours = _rate(lambda x: render(x, fs, size), ecgs, min_time)
    base = _rate(lambda x: mpl(x, fs), ecgs, min_time)
    batch = np.stack(ecgs)
    batched = _rate(lambda _: render_batch(batch, fs, size), [None], min_time) * len(ecgs)
    out.update({"render_ours_img_per_s": round(ours, 1), "render_ours_batch_img_per_s": round(batched, 1),
                "render_matplotlib_reused_fig_img_per_s": round(base, 1),
                "render_speedup_vs_matplotlib": round(ours / base, 1),
                "headline": {"metric": f"render images/s, one core ({size} px)", "value": round(ours, 1),
                             "baseline": round(base, 1), "baseline_name": "matplotlib, reused figure",
                             "ratio": round(ours / base, 1)}})

    images = [render(x, fs, size) for x in ecgs]
    for name, enc, level in (("png0", "png", 0), ("png1", "png", 1), ("png6", "png", 6), ("npy", "npy", 0)):
        size_b = np.mean([len(encode_image(img, enc, level)) for img in images])
        enc_rate = _rate(lambda img: encode_image(img, enc, level), images, min_time / 2)
        both = _rate(lambda x: encode_image(render(x, fs, size), enc, level), ecgs, min_time / 2)
        mpl_both = _rate(lambda x: encode_image(mpl(x, fs), enc, level), ecgs, min_time / 2)
        out[f"encode_{name}_img_per_s"] = round(enc_rate, 1)
        out[f"render+{name}_ours_img_per_s"] = round(both, 1)
        out[f"render+{name}_matplotlib_img_per_s"] = round(mpl_both, 1)
        out[f"render+{name}_speedup"] = round(both / mpl_both, 1)
        out[f"{name}_bytes_per_img"] = int(size_b)

    from PIL import Image

    pngs = [encode_image(img, "png", 1) for img in images]
    out["decode_png1_img_per_s"] = round(_rate(lambda b: np.asarray(Image.open(io.BytesIO(b))), pngs, min_time / 2), 1)
    out["preprocess_ecgs_per_s"] = round(_rate(lambda x: preprocess(x, fs), list(raw), min_time / 2), 1)
    return out


def main() -> int:
    from heartbeit.benchsuite import print_figures

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fs", type=float, default=500.0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = run(args.quick, args.size, args.fs)
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
