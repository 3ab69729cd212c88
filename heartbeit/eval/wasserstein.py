"""How far ECG images are from natural images: the paper's modality-distance argument, made measurable.

Two distances, each averaged over seeded random pairs of images within ECGs, within natural images and
across the two:
- `intensity_w1`: 1-D Wasserstein distance between the two images' grayscale intensity distributions
  (`scipy.stats.wasserstein_distance` on 256-level histograms: exact for 8-bit images);
- `patch_sliced_w2`: sliced Wasserstein distance (POT, seeded projections) between the images' sets of
  non-overlapping patches, each patch a point in R^(p*p) — it compares local structure (thin traces on a
  grid vs natural textures), not only brightness.
A modality gap shows as across-pair distances well above both within-modality distances.
"""
from __future__ import annotations

import numpy as np
import ot
import pandas as pd
from scipy.stats import wasserstein_distance

PAIR_TYPES = ("within_ecg", "within_natural", "ecg_vs_natural")
_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def _histograms(images: np.ndarray) -> np.ndarray:
    q = np.clip(np.rint(np.asarray(images, dtype=np.float64) * 255.0), 0, 255).astype(np.int64)
    return np.stack([np.bincount(im.ravel(), minlength=256) for im in q]).astype(np.float64)


def _patches(image: np.ndarray, patch: int) -> np.ndarray:
    h, w = image.shape
    h, w = h - h % patch, w - w % patch
    grid = image[:h, :w].reshape(h // patch, patch, w // patch, patch).swapaxes(1, 2)
    return grid.reshape(-1, patch * patch).astype(np.float64)


def sample_pairs(n_a: int, n_b: int | None, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(n_pairs, 2) index pairs: distinct images of one set when n_b is None, else one from each set."""
    if n_b is None:
        if n_a < 2:
            raise ValueError("need at least 2 images for within-modality pairs")
        i = rng.integers(0, n_a, n_pairs)
        j = (i + rng.integers(1, n_a, n_pairs)) % n_a  # uniform over j != i
        return np.stack([i, j], axis=1)
    return np.stack([rng.integers(0, n_a, n_pairs), rng.integers(0, n_b, n_pairs)], axis=1)


def modality_distances(ecg_images: np.ndarray, natural_images: np.ndarray, *, n_pairs: int = 200, seed: int = 0,
                       patch: int = 16, n_projections: int = 64) -> pd.DataFrame:
    """Tidy table: one row per distance x pair type with mean, sd, n_pairs. Inputs are (N, H, W)
    grayscale arrays in [0, 1] of equal image size (see natural_images.to_gray01)."""
    ecg = np.asarray(ecg_images, dtype=np.float32)
    nat = np.asarray(natural_images, dtype=np.float32)
    if ecg.ndim != 3 or nat.ndim != 3 or ecg.shape[1:] != nat.shape[1:]:
        raise ValueError(f"expected (N, H, W) grayscale stacks of one size, got {ecg.shape} and {nat.shape}")
    sets = {"ecg": ecg, "natural": nat}
    hists = {k: _histograms(v) for k, v in sets.items()}
    rng = np.random.default_rng(seed)
    plan = {"within_ecg": ("ecg", "ecg", sample_pairs(len(ecg), None, n_pairs, rng)),
            "within_natural": ("natural", "natural", sample_pairs(len(nat), None, n_pairs, rng)),
            "ecg_vs_natural": ("ecg", "natural", sample_pairs(len(ecg), len(nat), n_pairs, rng))}
    rows = []
    for pair_type, (a, b, pairs) in plan.items():
        w1 = [wasserstein_distance(_LEVELS, _LEVELS, hists[a][i], hists[b][j]) for i, j in pairs]
        sw = [float(ot.sliced_wasserstein_distance(_patches(sets[a][i], patch), _patches(sets[b][j], patch),
                                                   n_projections=n_projections, seed=seed + k))
              for k, (i, j) in enumerate(pairs)]
        for metric, values in (("intensity_w1", w1), ("patch_sliced_w2", sw)):
            v = np.asarray(values)
            rows.append({"metric": metric, "pair_type": pair_type, "mean": float(v.mean()),
                         "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n_pairs": len(v),
                         "n_images_a": len(sets[a]), "n_images_b": len(sets[b])})
    return pd.DataFrame(rows)


def gap_ratio(distances: pd.DataFrame, metric: str) -> float:
    """Across-modality mean distance over the larger of the two within-modality means (> 1: a gap)."""
    m = distances[distances["metric"] == metric].set_index("pair_type")["mean"]
    return float(m["ecg_vs_natural"] / max(m["within_ecg"], m["within_natural"]))


def wasserstein_table(distances: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Display form for tables.write_table: distances as rows, pair types as columns ("mean ± sd")."""
    rows = []
    for metric in sorted(distances["metric"].unique()):
        part = distances[distances["metric"] == metric].set_index("pair_type")
        row = {"Distance": metric}
        for pt in PAIR_TYPES:
            r = part.loc[pt]
            row[pt] = f"{r['mean']:.{digits}f} ± {r['sd']:.{digits}f} (n={int(r['n_pairs'])})"
        row["across / max within"] = f"{gap_ratio(distances, metric):.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def write_wasserstein(distances: pd.DataFrame, out_dir) -> list:
    """The tidy table (Parquet/JSON/CSV) plus the display table (Markdown/LaTeX/CSV)."""
    from .tables import write_long, write_table

    files = write_long(distances, out_dir, "wasserstein_long")
    files += write_table(wasserstein_table(distances), out_dir, "wasserstein",
                         title="Average pairwise Wasserstein distance between ECG and natural images",
                         note="intensity_w1: grayscale-intensity distributions (scipy); patch_sliced_w2: "
                              "sliced Wasserstein on non-overlapping patches (POT). mean ± sd over sampled pairs.")
    return files


# ------------------------------------------------------------------------------------- the report's part


def wasserstein_part(images, cfg, out_dir) -> tuple[pd.DataFrame | None, str]:
    """The report's modality-distance table from ECG images sampled from the shards (`images`, a
    heartbeit.eval.report_inputs.ImageSet) vs natural images: (display table or None, the note saying
    what was compared, or why nothing was)."""
    from .natural_images import load_image_dir, sample_image_patches
    from .report_inputs import pick_rows, read_images

    rc = cfg.report
    if rc.wasserstein_images == 0 or rc.wasserstein_pairs == 0:
        return None, "Wasserstein table switched off (report.wasserstein_images / wasserstein_pairs = 0)"
    if not images.usable:
        return None, "no usable image shards: no Wasserstein table"
    h, w = images.size
    if h != w:
        return None, f"images are {h}x{w}; the natural-image crops are square: no Wasserstein table"
    m = images.manifest
    rows = pick_rows(m, m["split"].notna(), rc.wasserstein_images, rc.seed, "wasserstein")
    if len(rows) < 2:
        return None, "fewer than 2 rendered ECG images: no Wasserstein table"
    ecg = read_images(images, rows).astype(np.float32) / 255.0
    if rc.natural_images_dir:
        natural = load_image_dir(rc.natural_images_dir, h, limit=len(ecg))
        source = f"images in `{rc.natural_images_dir}`"
    else:
        natural = sample_image_patches(len(ecg), h, seed=rc.seed)
        source = "random crops of scikit-learn's bundled photographs (china.jpg, flower.jpg)"
    if len(natural) < 2:
        return None, "fewer than 2 natural images: no Wasserstein table"
    dist = modality_distances(ecg, natural, n_pairs=rc.wasserstein_pairs, seed=rc.seed, patch=rc.wasserstein_patch)
    write_wasserstein(dist, out_dir)
    return wasserstein_table(dist), (f"{len(ecg)} ECG images sampled from the shards vs {len(natural)} natural images "
                                     f"({source}), {h}x{w} grayscale; {rc.wasserstein_pairs} pairs per type; "
                                     f"patches {rc.wasserstein_patch}x{rc.wasserstein_patch}.")


def wasserstein_section(doc, images, cfg, out_dir, summary: dict, problems: list[str]) -> None:
    doc.heading("Modality distance: ECG images vs natural images")
    table, note = wasserstein_part(images, cfg, out_dir)
    if table is not None:
        doc.para(note)
        doc.table(table, "Average pairwise Wasserstein distance (mean ± sd over pairs); across / max within > 1 "
                         "= a modality gap")
        summary["wasserstein"] = table.to_dict(orient="records")
    else:
        problems.append(note)
        doc.para(note)
