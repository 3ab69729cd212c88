"""The CUDA paths, on a machine with a GPU: `pytest -m gpu` on a GPU node checks that the matrix and the
pretraining loop really train there (device, bf16 autocast, fused optimizers, pinned non-blocking batches).
Without CUDA every test here skips with that reason; CI machines have no GPU, so these run where one is."""
import math

import numpy as np
import pytest
import torch
from helpers.mim_data import ecg_images, write_image_shards
from test_finetune import make_data

from heartbeit.config import MatrixConfig
from heartbeit.matrix import Cell
from heartbeit.train.finetune import finetune_cell

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


@pytest.mark.parametrize("arch", ["vit_micro_patch8_64", "resnet10t"])  # the ViT is HeartBEiT's architecture
def test_matrix_cell_trains_on_the_gpu(tmp_path, arch):
    import pandas as pd

    mcfg = MatrixConfig(architectures=[arch], epochs=3, batch_size=16, image_size=64, precision="bf16", device="auto")
    summary = finetune_cell(Cell(0, "x", arch, "stemi", 1.0, 0), mcfg, make_data(False, []), tmp_path)
    assert summary["device"] == torch.cuda.get_device_name(0)
    pred = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(pred) == 24 and pred["score"].between(0, 1).all()
    assert math.isfinite(summary["val_criterion"])


def test_pretraining_runs_on_the_gpu_from_pinned_shards(tmp_path):
    from heartbeit.config import PretrainConfig, load_config
    from heartbeit.train.batches import InMemoryBatches, ShardBatches
    from heartbeit.train.pretrain import pretrain
    from heartbeit.train.tokenizer_train import train_tokenizer

    images = ecg_images(96, 64, seed=0)
    tok_cfg = load_config("ci", overrides=["tokenizer.kmeans_steps=20"]).tokenizer  # the 64 px grid
    tokenizer = train_tokenizer(tok_cfg, InMemoryBatches(images, 32, seed=0),
                                torch.from_numpy(images[:16].copy()), progress=False)[0]
    shards = tmp_path / "images"
    write_image_shards(shards, images)
    batch = next(iter(ShardBatches(shards, batch_size=8, pin_memory=True)))
    assert batch.images.is_pinned()
    cfg = PretrainConfig(model="heartbeit_micro_patch8_64", image_size=64, steps=6, batch_size=8, lr=1e-3,
                         warmup_steps=2, mask_patches=24, min_mask_block=4, checkpoint_every=3, log_every=3,
                         precision="bf16")
    summary = pretrain(cfg, shards, tokenizer, tmp_path / "pretrain", progress=False)
    assert np.isfinite(summary["final_loss"])
    assert summary["device"].startswith("cuda") and summary["complete"]
