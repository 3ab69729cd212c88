"""Patient-level splits and nested label-stratified training fractions, as pure functions of the patient
hash and a seed.

Split: every patient gets u = keyed_hash(seed, "split", patient_hash) in [0, 1): u < test_fraction ->
test, u < test_fraction + val_fraction -> val, otherwise train. Sites in `external_sites` are held out
whole as split "external"; a patient who also has ECGs from an internal site gets those ECGs marked
"excluded" (never trained on, never tested on), so no patient is on two sides.

Fractions: every train patient gets r = keyed_hash(seed, "fraction", patient_hash) and is in fraction f
when r < f. Because r is independent of the labels, each fraction is a stratified sample in expectation;
nesting (1% < 10% < ... < 100%) is automatic. Where the threshold rule leaves a fraction without a positive
for a task, the train positive(s) of that task with the smallest r are added ("top-up"), so every fraction
holds at least one positive per task where the data has one; top-ups are nested too (a top-up for f is in
every larger fraction).

Stability when ECGs are added: an existing patient's split never moves (it depends on its hash only) and
its threshold-rule fraction membership never moves. Only a top-up can change, and only when a new
positive of that task outranks it -- the price of guaranteeing a positive in tiny fractions with a pure
function of the data. A patient who gains an ECG at an external site moves to external/excluded.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from heartbeit.config.matrix import TASKS

SPLITS = ("train", "val", "test", "external", "excluded")


def fraction_column(f: float) -> str:
    return f"frac_{f:g}"


def keyed_uniform(keys, seed: int, purpose: str) -> np.ndarray:
    """Uniform [0, 1) per key from BLAKE2b keyed by (seed, purpose): a fixed, platform-independent
    function of the key alone (no global shuffle), so adding keys never moves existing ones."""
    salt = f"heartbeit:{purpose}:{int(seed)}".encode()
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(str(key).encode(), key=salt[:64], digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def assign_splits(meta: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                  external_sites=()) -> pd.Series:
    """Split name for every row of `meta` (columns patient_hash, site), aligned to meta.index."""
    if not 0 < val_fraction + test_fraction < 1:
        raise ValueError("val_fraction + test_fraction must be in (0, 1)")
    patients = pd.unique(meta["patient_hash"])
    u = pd.Series(keyed_uniform(patients, seed, "split"), index=patients)
    internal = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))
    split = meta["patient_hash"].map(pd.Series(internal, index=patients)).astype(object)
    at_external = meta["site"].isin(list(external_sites))
    external_patients = set(meta.loc[at_external, "patient_hash"])
    split[meta["patient_hash"].isin(external_patients)] = "excluded"
    split[at_external] = "external"
    return split


def assign_fractions(meta: pd.DataFrame, split: pd.Series, seed: int, fractions, tasks=TASKS,
                     purpose: str = "fraction") -> pd.DataFrame:
    """Boolean membership columns frac_<f> (patient-level, nested, >= 1 positive per task where possible)
    plus `fraction` = the smallest fraction holding the ECG (NaN outside train). `purpose` salts the
    patient hash: another purpose gives an independent draw of the same design (`training_draw`)."""
    fractions = sorted(float(f) for f in fractions)
    train = meta[split == "train"]
    patients = pd.unique(train["patient_hash"])
    r = pd.Series(keyed_uniform(patients, seed, purpose), index=patients)
    # a patient is a positive for a task if any of their train ECGs is
    positive = {t: set(train.loc[train[t] == 1, "patient_hash"]) for t in tasks if t in train}
    members: dict[float, set] = {}
    topped: set = set()
    for f in fractions:
        chosen = set(r.index[r < f]) | topped
        for t, pos in positive.items():
            if pos and not (chosen & pos):
                best = min(pos, key=lambda p: (r[p], p))
                chosen.add(best)
                topped.add(best)
        members[f] = chosen
    out = pd.DataFrame(index=meta.index)
    is_train = split == "train"
    smallest = pd.Series(np.nan, index=meta.index)
    for f in reversed(fractions):
        inside = is_train & meta["patient_hash"].isin(members[f])
        out[fraction_column(f)] = inside
        smallest[inside] = f
    out["fraction"] = smallest
    return out[[fraction_column(f) for f in fractions] + ["fraction"]]


def training_draw(manifest: pd.DataFrame, fraction: float, draw: int, seed: int = 0, tasks=TASKS) -> pd.Series:
    """Boolean mask over manifest rows: the training subset of `draw` at `fraction`. Draw 0 is the render
    stage's subset (the manifest's frac_<f> column); draw d > 0 repeats the same design -- patient-level,
    nested across fractions, >= 1 positive per task -- with an independent keyed hash salted by (seed, d),
    so repeated draws show the spread a different sample of patients would give."""
    if draw == 0:
        col = fraction_column(fraction)
        if col not in manifest:
            raise ValueError(f"fraction {fraction:g} was not rendered (have "
                             f"{[c for c in manifest.columns if c.startswith('frac_')]})")
        return manifest[col].astype(bool)
    if draw < 0:
        raise ValueError(f"draw must be >= 0, got {draw}")
    tasks = [t for t in tasks if t in manifest]
    members = assign_fractions(manifest, manifest["split"], seed, [fraction], tasks, purpose=f"training-draw-{draw}")
    return members[fraction_column(fraction)].astype(bool)


def build_manifest(meta: pd.DataFrame, cfg, tasks=TASKS) -> pd.DataFrame:
    """Every ECG's split, fraction membership and labels (one row per ECG, sorted by ecg_uid)."""
    missing = [c for c in ("ecg_uid", "patient_hash", "site") if c not in meta]
    if missing:
        raise ValueError(f"corpus metadata lacks columns {missing}")
    if meta["ecg_uid"].duplicated().any():
        raise ValueError("corpus metadata has duplicate ecg_uid values")
    meta = meta.sort_values("ecg_uid").reset_index(drop=True)
    for t in tasks:
        if t not in meta:
            meta[t] = np.nan
    split = assign_splits(meta, cfg.split_seed, cfg.val_fraction, cfg.test_fraction, cfg.external_sites)
    fr = assign_fractions(meta, split, cfg.split_seed, cfg.fractions, tasks)
    # sex and age band ride along for the report's subgroup tables (both are de-identified corpus fields)
    keep = [c for c in ("ecg_uid", "patient_hash", "site", "sex", "age_band", "fs", "n_samples") if c in meta]
    manifest = pd.concat([meta[keep], split.rename("split"), fr, meta[list(tasks)].astype("float64")], axis=1)
    return manifest
