"""Tiny synthetic ECG images for the MIM tests (tokenizer, pretraining): the project's own simulator and
renderer, so the images look like what the pipeline feeds the model."""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def ecg_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [n, 1, size, size], deterministic; a mix of normal, low-EF, HCM and STEMI morphologies."""
    from heartbeit.data.render.draw import render_batch
    from heartbeit.data.synth.ecg import simulate_ecg

    fs = 100.0
    kinds = [dict(), dict(lvef_le40=True), dict(hcm=True), dict(stemi_territory="anterior")]
    signals = np.stack([simulate_ecg(seed * 100003 + i, fs=fs, noise_mv=0.02, **kinds[i % 4])
                        for i in range(n)])
    images = render_batch(signals, fs, size=size)
    images.setflags(write=False)
    return images[:, None]


def write_image_shards(images_dir, splits, per_shard: int = 32) -> None:
    """A minimal `heartbeit render`-style shard folder: <split>/<split>-NNNNNN.tar (+ sidecar) and index.json.
    `splits`: {split: uint8 [N, 1, H, W]} (or one array, for a train split only)."""
    import io
    import json
    from pathlib import Path

    from PIL import Image

    from heartbeit.data.corpus import write_shard
    from heartbeit.utils.io import atomic_write_json, sha256_file

    if not isinstance(splits, dict):
        splits = {"train": splits}
    images_dir = Path(images_dir)
    index = {"encoding": "png", "image_ext": "png", "layout": "3x4+II", "splits": {}, "fractions": [1.0],
             "tasks": ["lvef_le40", "hcm", "stemi"]}
    rows = []
    for split, images in splits.items():
        index["image_size"] = int(images.shape[-1])
        shards = []
        for s, start in enumerate(range(0, len(images), per_shard)):
            members = []
            for i in range(start, min(start + per_shard, len(images))):
                buf = io.BytesIO()
                Image.fromarray(images[i, 0]).save(buf, format="PNG")
                key = f"{split}{i:05d}"
                meta = {"ecg_uid": key, "labels": {"lvef_le40": 0, "hcm": None, "stemi": 1}, "split": split,
                        "fractions": [1.0], "site": "synthetic"}
                members += [(f"{key}.png", buf.getvalue()), (f"{key}.json", json.dumps(meta).encode())]
            name = f"{split}/{split}-{s:06d}.tar"
            write_shard(images_dir / name, members)
            info = {"name": name, "count": len(members) // 2, "sha256": sha256_file(images_dir / name),
                    "bytes": (images_dir / name).stat().st_size, "digest": "test"}
            atomic_write_json((images_dir / name).with_suffix(".json"), {**info, "split": split})
            shards.append({k: info[k] for k in ("name", "count", "sha256", "bytes")})
        index["splits"][split] = {"count": len(images), "shards": shards}
        rows += [{"split": split, "shard": f"{split}/{split}-{i // per_shard:06d}.tar", "lvef_le40": 0.0,
                  "hcm": None, "stemi": 1.0} for i in range(len(images))]
    import pandas as pd

    pd.DataFrame(rows).to_parquet(images_dir / "manifest.parquet")
    atomic_write_json(images_dir / "index.json", index)
