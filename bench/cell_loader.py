"""Images/s of one matrix cell with its loaders kept vs made per use, on CPU.

The same cell (a micro ViT at 64 px, a 10 % training fraction, 2 loader workers, 3 validation rounds) is
trained twice on the same image shards, alternating, `--repeats` times:
  - per use (the baseline, the old data path): a fresh loader -- fresh worker processes, the filter resolved
    against the manifest again -- for every training epoch, every BatchNorm recalibration and every validation
    round, and every round scores the whole validation split at the training batch size;
  - kept (`cell_data_from_shards`): three loaders made once per cell with persistent workers, the filter
    resolved once, the rounds on the fixed stratified subsample (every positive, at most `CAP` negatives) at
    `val_batch_size`; the whole split is scored once, for the export threshold.
The validation split is large next to the training fraction, as at hospital scale (a 1 % cell there reads
~1 M training images against ~14 M validation inferences). Both runs give byte-identical predictions and
validation scores (checked here): only the work around the model changes. Reported: training images per
second of cell wall time, the ratio, and where the time went (images the model saw, loader starts).
Usage: .venv/bin/python bench/cell_loader.py [--quick] [--repeats 3] [--json OUT]"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from heartbeit.config import MatrixConfig, RenderConfig  # noqa: E402
from heartbeit.records import PREDICTIONS, VAL_SCORES  # noqa: E402
from heartbeit.data.loading import epoch_loader  # noqa: E402
from heartbeit.data.render.stage import render_corpus  # noqa: E402
from heartbeit.matrix import Cell  # noqa: E402
from heartbeit.train import finetune as ft  # noqa: E402

ARCH, TASK, CAP = "vit_micro_patch8_64", "lvef_le40", 40


def per_use_data(images: Path, cell, mcfg: MatrixConfig) -> ft.CellData:
    """The old data path: the kept loaders' CellData with every loader made afresh at each use and every round
    on the whole validation split at the training batch size."""
    from heartbeit.data.loading.loader import make_image_dataset

    kept = ft.cell_data_from_shards(images, cell, mcfg)
    kept.close()
    subset = kept.train(0).loader.dataset.keep.subset

    def fresh_train(epoch: int) -> epoch_loader.ImageLoader:
        ds = make_image_dataset(images, "train", task=cell.task, epoch=epoch, seed=cell.seed, shuffle=True,
                                batch_size=mcfg.batch_size, drop_last=False, subset=subset, with_meta=False)
        return epoch_loader.ImageLoader(ds, num_workers=mcfg.num_workers)  # persistent=False: workers per use

    return ft.CellData(train=lambda e: ft._Epoch(fresh_train(e), "image"), val=kept.val, evaluation=kept.evaluation,
                       n_train=kept.n_train, n_train_pos=kept.n_train_pos, val_rounds=kept.val,
                       recalibration=lambda e: ft._batches(fresh_train(e), "image"))


def one_cell(images: Path, out: Path, mcfg: MatrixConfig, kept: bool) -> dict:
    cell = Cell(0, "be7c4000000000" + ("01" if kept else "00"), ARCH, TASK, 0.1, 0)
    starts = []
    real = epoch_loader.ImageLoader._batches

    def counting(self):  # a loader start: fresh workers (per use) or the first iteration of a kept loader
        if self.num_workers and (not self.persistent or self._dataloader is None):
            starts.append(1)
        return real(self)

    epoch_loader.ImageLoader._batches = counting
    try:
        data = ft.cell_data_from_shards(images, cell, mcfg) if kept else per_use_data(images, cell, mcfg)
        t0 = time.perf_counter()
        summary = ft.finetune_cell(cell, mcfg, data, out)
        wall = time.perf_counter() - t0
    finally:
        epoch_loader.ImageLoader._batches = real
    digest = hashlib.sha256((out / PREDICTIONS).read_bytes() + (out / VAL_SCORES).read_bytes()).hexdigest()
    trained = summary["n_train"] * summary["epochs"]
    return {"wall_s": wall, "train_images_per_s": trained / wall, "loader_starts": len(starts), "outputs": digest,
            "validation": summary["validation"] if kept else {"rounds": "whole split", "batch_size": mcfg.batch_size}}


def run(quick: bool, repeats: int = 3) -> dict:
    from bench_corpus import synthetic_corpus

    from heartbeit.benchsuite import smoke

    n = 400 if quick else 1500
    if smoke():
        n, repeats = 120, 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-cell-loader-") as tmp:
        tmp = Path(tmp)
        synthetic_corpus(tmp / "corpus", n, 250)
        render_corpus(tmp / "corpus", tmp / "images", RenderConfig(image_size=64, shard_size=50, val_fraction=0.4,
                      test_fraction=0.05, external_sites=[], fractions=[0.1, 1.0]), workers=1, progress=False)
        mcfg = MatrixConfig(architectures=[ARCH], epochs=3, batch_size=16, image_size=64, precision="fp32",
                            num_workers=2, checkpoint_minutes=0, bn_recalib_batches=4, val_negatives_cap=CAP,
                            val_batch_size=64)
        runs: dict[str, list[dict]] = {"per_use": [], "kept": []}
        for r in range(repeats):
            for mode in ("per_use", "kept"):
                out = tmp / f"{mode}{r}"
                out.mkdir()
                runs[mode].append(one_cell(tmp / "images", out, mcfg, kept=mode == "kept"))
    identical = runs["per_use"][0]["outputs"] == runs["kept"][0]["outputs"]
    rate = {m: statistics.median(x["train_images_per_s"] for x in v) for m, v in runs.items()}
    out = {"arch": ARCH, "repeats": repeats, "num_workers": 2, "epochs": 3,
           "per_use_train_images_per_s": rate["per_use"], "kept_train_images_per_s": rate["kept"],
           "kept_vs_per_use_ratio": rate["kept"] / rate["per_use"],
           "per_use_loader_starts": runs["per_use"][0]["loader_starts"],
           "kept_loader_starts": runs["kept"][0]["loader_starts"],
           "validation_rounds": runs["kept"][0]["validation"], "identical_predictions_and_val_scores": identical,
           "headline": {"metric": "training images/s of one cell (micro ViT, 2 workers, CPU), loaders kept and "
                                  "validation rounds on the stratified subsample",
                        "value": rate["kept"], "baseline": rate["per_use"],
                        "baseline_name": "loaders made per epoch/recalibration/round, rounds on the whole split",
                        "ratio": rate["kept"] / rate["per_use"]}}
    print(f"cell images/s: per use {rate['per_use']:.1f}, kept {rate['kept']:.1f} "
          f"({rate['kept'] / rate['per_use']:.2f}x); loader starts {out['per_use_loader_starts']} -> "
          f"{out['kept_loader_starts']}; identical outputs: {identical}", flush=True)
    if not identical:
        raise SystemExit("the two data paths gave different predictions or validation scores")
    return out


def main() -> int:
    from heartbeit.benchsuite import print_figures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print_figures(run(args.quick, args.repeats), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
