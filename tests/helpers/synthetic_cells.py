"""Synthetic matrix cells in the matrix's on-disk format, for testing and demonstrating the results layer
without training anything. Scores come from a known model: every architecture sees the same test ECGs
(shared per task), and its separation grows with the training fraction and depends on its family, so
tables and figures have a known shape (HeartBEiT ahead at small fractions)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from heartbeit.records import CELL_RECORD, PREDICTIONS
from heartbeit.utils.io import atomic_path, atomic_write_json

DEFAULT_ARCHS = {"heartbeit_micro": "heartbeit", "vit_micro": "vit", "efficientnet_b0": "efficientnet",
                 "resnet18": "resnet", "resnet1d": "signal"}
# Separation (in units of the noise sd) at 100% of the data, and how much is lost at 1%.
_STRENGTH = {"heartbeit": (1.1, 0.3), "vit": (1.0, 0.7), "efficientnet": (0.9, 0.7), "resnet": (0.85, 0.7),
             "signal": (1.0, 0.5)}


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _test_set(task: str, split: str, n: int, prevalence: float, sites: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(_seed("ecgs", task, split))
    n_patients = max(2, int(n * 0.7))
    patient = rng.integers(0, n_patients, n)
    # A patient's label tends to repeat across their ECGs: a latent per-patient risk.
    risk = rng.normal(size=n_patients)[patient] + rng.normal(scale=0.5, size=n)
    label = (risk > np.quantile(risk, 1 - prevalence)).astype(np.int8)
    return pd.DataFrame({
        "ecg_uid": [f"{split}-{task}-{i:05d}" for i in range(n)],
        "patient_hash": [f"p{split}{p:05d}" for p in patient],
        "site": [sites[p % len(sites)] for p in patient],
        "split": split,
        "label": label,
        "sex": np.where((patient // 3) % 2 == 0, "F", "M"),
        "age_band": np.array(["<50", "50-69", ">=70"])[(patient // 7) % 3],
    })


def make_predictions(task: str, family: str, fraction: float, seed: int, draw: int = 0, *, n_test: int = 400,
                     n_external: int = 250, prevalence: float = 0.2, arch: str = "") -> pd.DataFrame:
    frames = [_test_set(task, "test", n_test, prevalence, ["site_a", "site_b"]),
              _test_set(task, "external", n_external, prevalence, ["site_x"])]
    df = pd.concat(frames, ignore_index=True)
    top, loss = _STRENGTH.get(family, (1.0, 0.8))
    strength = top - loss * (1.0 - np.log10(fraction * 100) / 2.0)  # log-linear in the fraction
    rng = np.random.default_rng(_seed("scores", task, arch or family, fraction, seed, draw))
    shift = np.where(df["split"] == "external", 0.8, 1.0)  # a little worse off-site
    logit = strength * shift * (df["label"].to_numpy() - 0.5) * 2 + rng.normal(size=len(df)) - 1.2
    df["score"] = 1.0 / (1.0 + np.exp(-logit))
    return df


def write_fake_cells(cells_dir: str | Path, *, archs: dict[str, str] | None = None, tasks=("stemi", "hcm"),
                     fractions=(0.01, 0.1, 1.0), seeds=(0,), draws=(0,), n_test: int = 400,
                     n_external: int = 250) -> list[Path]:
    """Write cells/<cell_id>/{cell.json,predictions.parquet}; returns the cell directories."""
    archs = archs or DEFAULT_ARCHS
    cells_dir = Path(cells_dir)
    out = []
    for task in tasks:
        for arch, family in archs.items():
            for fraction in fractions:
                for seed in seeds:
                    for draw in draws:
                        cell_id = hashlib.sha256(f"{arch}|{task}|{fraction}|{seed}|{draw}".encode()).hexdigest()[:12]
                        d = cells_dir / cell_id
                        d.mkdir(parents=True, exist_ok=True)
                        preds = make_predictions(task, family, fraction, seed, draw, n_test=n_test,
                                                 n_external=n_external, arch=arch)
                        with atomic_path(d / PREDICTIONS) as tmp:
                            preds.to_parquet(tmp, index=False)
                        n_train = int(round(2000 * fraction))
                        atomic_write_json(d / CELL_RECORD, {
                            "cell_id": cell_id, "arch": arch, "arch_family": family, "fraction": fraction,
                            "task": task, "seed": seed, "draw": draw, "init": "pretrained" if family == "heartbeit"
                            else "imagenet" if family != "signal" else "random", "profile": "synthetic",
                            "n_train": n_train, "n_train_pos": int(n_train * 0.2), "selected_epoch": 1})
                        out.append(d)
    return out
