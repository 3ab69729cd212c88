"""Tiny corpora for the render / shard / loader tests, written with the corpus writer so they follow the
ingest contract exactly (int16 microvolts [12, n] + json per sample, metadata.parquet)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.data.corpus import ShardWriter

SITES = ("hosp_a", "hosp_b", "hosp_ext")


def simple_ecg(seed: int, fs: float = 100, duration_s: float = 10.0, st_mv: float = 0.0,
               leads_with_st=()) -> np.ndarray:
    """A cheap deterministic 12-lead waveform (P, QRS, T Gaussians per beat), float32 mV [12, n]."""
    from heartbeit.data.leads import LEAD_INDEX

    rng = np.random.default_rng(seed)
    t = np.arange(int(round(fs * duration_s))) / fs
    amp = np.array([1.0, 1.4, 0.4, -1.2, 0.3, 0.9, -0.8, 0.4, 1.1, 1.6, 1.5, 1.1]) * rng.uniform(0.7, 1.3)
    x = np.zeros((12, t.size))
    rr = 60 / rng.uniform(55, 95)
    for beat in np.arange(rng.uniform(0.2, 0.6), duration_s, rr):
        qrs = np.exp(-(((t - beat) / 0.015) ** 2))
        st = ((t > beat + 0.04) & (t < beat + 0.28)).astype(float)
        x += amp[:, None] * (qrs + 0.25 * np.exp(-(((t - beat - 0.3) / 0.06) ** 2)))
        for lead in leads_with_st:
            x[LEAD_INDEX[lead]] += st_mv * st
    return x.astype(np.float32)


def make_corpus(root: Path, n_patients: int = 30, fs: int = 100, seed: int = 0, shard_size: int = 16,
                sites=SITES, prevalence: float = 0.3, uid_prefix: str = "e") -> pd.DataFrame:
    """Write `root/shards/corpus-*.tar` + `root/metadata.parquet`; 1-3 ECGs per patient. Returns metadata."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(root, shard_size)
    rows = []
    k = 0
    for p in range(n_patients):
        patient = f"p{seed:02d}{p:05d}"
        site = sites[p % len(sites)]
        labels = {t: float(rng.random() < prevalence) for t in ("lvef_le40", "hcm", "stemi")}
        if rng.random() < 0.15:
            labels["hcm"] = float("nan")  # missing label
        for _ in range(int(rng.integers(1, 4))):
            uid = f"{uid_prefix}{seed:02d}{k:06d}"
            k += 1
            sig = simple_ecg(int(rng.integers(1 << 30)), fs)
            row = dict(ecg_uid=uid, patient_hash=patient, site=site, format="npz", device="test", fs=float(fs),
                       n_samples=sig.shape[1], sex="F", age=60.0, age_band="60-69", year=2020, lvef=50.0, **labels)
            done = writer.add(row, np.round(sig * 1000).astype(np.int16))
            if done:
                rows.extend(done[1])
    done = writer.flush()
    if done:
        rows.extend(done[1])
    meta = pd.DataFrame(rows)
    meta.to_parquet(root / "metadata.parquet", index=False)
    return meta
