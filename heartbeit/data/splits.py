"""Patient-level splits and nested label-stratified training fractions, as pure functions of the patient
hash and a seed.

Split: every patient gets u = keyed_hash(seed, "split", patient_hash) in [0, 1): u < test_fraction ->
test, u < test_fraction + val_fraction -> val, otherwise train. Sites in `external_sites` are held out
whole as split "external"; a patient who also has ECGs from an internal site gets those ECGs marked
"excluded" (never trained on, never tested on), so no patient is on two sides.

Fractions are per task, label-stratified and nested. For task t, the train patients with a label for t are
split into positives (any train ECG positive for t) and negatives; every patient gets
r = keyed_hash(seed, "fraction", patient_hash), and each group is ranked by r (ties by hash). Fraction f of
task t holds the first k(f, n) patients of each group, n the group's size, k(f, n) = floor(f * n + 1/2)
(round half up), at least 1 where the group is not empty and f > 0 -- a fraction without a positive could
not train. So each task's f-fraction holds round(f x positives) positive and round(f x negatives)
negative patients of that task's labelled training pool; nesting (1 % in 10 % in ... in 100 %) holds because
every fraction is a prefix of the same ranking. A patient's ECGs go together (patient level). Manifest
columns: frac_<task>_<f>.

Stability when ECGs are added: an existing patient's split never moves (it depends on its hash only). A new
patient takes its place in the ranking by its own r; k(f, n) grows by at most one per new patient in the
group, so fraction membership of existing patients can change only at the boundary of the prefix (the
patient ranked k-th may leave when a new patient ranks before it, or the next one enter when k grows).
A patient whose new ECG changes their label status moves between the positive and negative rankings.
A patient who gains an ECG at an external site moves to external/excluded.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from heartbeit.config.matrix import TASKS
from heartbeit.config.tasks import PAPER_TASKS, all_tasks

SPLITS = ("train", "val", "test", "external", "excluded")


def fraction_column(f: float, task: str) -> str:
    """Manifest column of task `task`'s training fraction f (boolean)."""
    return f"frac_{task}_{float(f):g}"


def fraction_size(f: float, n: int) -> int:
    """Patients of a group of n in fraction f: round half up, at least one where n > 0 and f > 0."""
    if n <= 0 or f <= 0:
        return 0
    return min(n, max(1, int(math.floor(f * n + 0.5))))


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
    """Boolean membership columns frac_<task>_<f> (per task: patient-level, label-stratified, nested; see the
    module note). `purpose` salts the patient hash: another purpose gives an independent draw of the same
    design (`training_draw`)."""
    fractions = sorted(float(f) for f in fractions)
    is_train = split == "train"
    train = meta[is_train]
    out = pd.DataFrame(index=meta.index)
    patients = pd.unique(train["patient_hash"])
    r = dict(zip(patients, keyed_uniform(patients, seed, purpose)))
    for t in tasks:
        labelled = train[train[t].notna()] if t in train else train.iloc[:0]
        positive = set(labelled.loc[labelled[t] == 1, "patient_hash"])
        groups = [sorted(positive, key=lambda p: (r[p], p)),
                  sorted(set(labelled["patient_hash"]) - positive, key=lambda p: (r[p], p))]
        for f in fractions:
            chosen = set()
            for ranked in groups:
                chosen.update(ranked[:fraction_size(f, len(ranked))])
            out[fraction_column(f, t)] = is_train & meta["patient_hash"].isin(chosen)
    return out


def training_draw(manifest: pd.DataFrame, task: str, fraction: float, draw: int, seed: int = 0) -> pd.Series:
    """Boolean mask over manifest rows: task `task`'s training subset of `draw` at `fraction`. Draw 0 is the
    render stage's subset (the manifest's frac_<task>_<f> column); draw d > 0 repeats the same design --
    patient-level, label-stratified, nested across fractions -- with an independent keyed hash salted by
    (seed, d), so repeated draws show the spread a different sample of patients would give."""
    if draw == 0:
        col = fraction_column(fraction, task)
        if col not in manifest:
            raise ValueError(f"fraction {fraction:g} of task {task} was not rendered (have "
                             f"{[c for c in manifest.columns if c.startswith('frac_')]}); re-render the images")
        return manifest[col].astype(bool)
    if draw < 0:
        raise ValueError(f"draw must be >= 0, got {draw}")
    members = assign_fractions(manifest, manifest["split"], seed, [fraction], [task], purpose=f"training-draw-{draw}")
    return members[fraction_column(fraction, task)].astype(bool)


def validation_subsample(manifest: pd.DataFrame, task: str, negatives_cap: int, seed: int = 0) -> frozenset | None:
    """The ecg_uids of the validation rounds during training: every labelled positive of the validation split
    and at most `negatives_cap` of its labelled negatives -- those with the smallest keyed hash of
    (seed, task), so every cell of a task, every draw and every rerun validates on the same ECGs. None when
    the cap keeps every negative (0, or at least as many as there are): the rounds read the whole split."""
    val = manifest[(manifest["split"] == "val") & manifest[task].notna()]
    negative = (val[task] == 0).to_numpy()
    if negatives_cap <= 0 or negative.sum() <= negatives_cap:
        return None
    uids = val["ecg_uid"].astype(str).to_numpy()
    rank = keyed_uniform(uids[negative], seed, f"validation-negatives-{task}")
    kept = uids[negative][np.argsort(rank, kind="stable")[:negatives_cap]]
    return frozenset(uids[~negative]) | frozenset(kept)


def task_labels(meta: pd.DataFrame, cfg) -> pd.DataFrame:
    """`meta` with one 0/1/NaN column per task the render stage labels (config.tasks.all_tasks): the
    paper's columns as they are (absent: all missing), declared tasks by their column and positive rule."""
    meta = meta.copy()
    for t in PAPER_TASKS:
        if t not in meta:
            meta[t] = np.nan
    for name, spec in getattr(cfg, "tasks", {}).items():
        if spec.column not in meta:
            raise ValueError(f"render.tasks.{name}: the corpus has no label column {spec.column!r} "
                             f"(label columns come from the labels CSV, ingest.label_columns and the header map)")
        meta[name] = spec.apply(meta[spec.column])
    return meta


def build_manifest(meta: pd.DataFrame, cfg, tasks=None) -> pd.DataFrame:
    """Every ECG's split, fraction membership and labels (one row per ECG, sorted by ecg_uid). `tasks`
    defaults to every task `cfg` (RenderConfig) labels."""
    tasks = all_tasks(cfg) if tasks is None else tasks
    missing = [c for c in ("ecg_uid", "patient_hash", "site") if c not in meta]
    if missing:
        raise ValueError(f"corpus metadata lacks columns {missing}")
    if meta["ecg_uid"].duplicated().any():
        raise ValueError("corpus metadata has duplicate ecg_uid values")
    meta = task_labels(meta.sort_values("ecg_uid").reset_index(drop=True), cfg)
    split = assign_splits(meta, cfg.split_seed, cfg.val_fraction, cfg.test_fraction, cfg.external_sites)
    fr = assign_fractions(meta, split, cfg.split_seed, cfg.fractions, tasks)
    # sex and age band ride along for the report's subgroup tables (both are de-identified corpus fields)
    keep = [c for c in ("ecg_uid", "patient_hash", "site", "sex", "age_band", "fs", "n_samples") if c in meta]
    manifest = pd.concat([meta[keep], split.rename("split"), fr, meta[list(tasks)].astype("float64")], axis=1)
    return manifest
