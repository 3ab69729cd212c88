"""A quick benchmark corpus shared by the loader benchmarks (not a benchmark itself: no `run`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from heartbeit.data.corpus import ShardWriter
from heartbeit.data.synth.ecg import simulate_ecg


def synthetic_corpus(root: Path, n: int, fs: int) -> None:
    """A corpus of `n` ECGs (one per patient, one site) from one simulated ECG, each with its own amplitude
    and shift so images differ; lvef_le40 positive for every 7th, hcm and stemi negative."""
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
