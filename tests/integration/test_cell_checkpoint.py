"""Mid-cell checkpoints: a matrix cell stopped by SIGUSR1 or killed by a crash resumes from its
checkpoint and gives byte-identical predictions, weights and validation scores to an uninterrupted run (CPU,
real image shards through the loader's exact-resume position); the checkpoint goes once the cell is done."""
from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import torch

from heartbeit.config import MatrixConfig, RenderConfig
from heartbeit.config.core import ConfigError
from heartbeit.config.layout import cell_resume_dir
from heartbeit.records import CELL_WEIGHTS, PREDICTIONS, VAL_SCORES
from heartbeit.data.render.stage import render_corpus
from heartbeit.matrix import Cell, _finetune_fingerprint, cell_status, run_cells
from heartbeit.train.cell_checkpoint import CHECKPOINT, decode, encode
from heartbeit.train.finetune import CellData, cell_data_from_shards, finetune_cell
from helpers.render_fixtures import make_corpus

# A BEiT-family ViT (drop path draws from torch's RNG in every step) over two epochs of 6 batches each
ARCH = "vit_micro_patch8_64"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    make_corpus(corpus, n_patients=40)
    out = tmp_path_factory.mktemp("images")
    render_corpus(corpus, out, RenderConfig(image_size=48, shard_size=8, external_sites=["hosp_ext"],
                                            fractions=[1.0]), progress=False)
    return out


def mcfg(**kw) -> MatrixConfig:
    base = dict(architectures=[ARCH], epochs=2, batch_size=8, image_size=48, precision="fp32", num_workers=1,
                checkpoint_minutes=0)
    return MatrixConfig(**{**base, **kw})


class Interrupt:
    """A training epoch's batches that, at batch `at`, deliver SIGUSR1 to this process (what Slurm's signal
    does) or raise (a crash); the loader's resume state passes through."""

    def __init__(self, source, at: int, how: str):
        self.source, self.at, self.how = source, at, how

    def __iter__(self):
        for i, batch in enumerate(self.source):
            if i == self.at:
                if self.how == "signal":
                    os.kill(os.getpid(), signal.SIGUSR1)
                else:
                    raise RuntimeError("simulated crash")
            yield batch

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, state):
        self.source.load_state_dict(state)


def interrupted(data: CellData, epoch: int, at: int, how: str) -> CellData:
    train = data.train
    return dataclasses.replace(data, train=lambda e: Interrupt(train(e), at, how) if e == epoch else train(e))


def outputs(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (PREDICTIONS, CELL_WEIGHTS, VAL_SCORES)}


def test_a_stopped_or_crashed_cell_resumes_to_byte_identical_predictions(images, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cell = Cell(0, "c0ffee0000000000", ARCH, "stemi", 1.0, 0)
    cfg = mcfg()
    straight = tmp_path / "straight"
    straight.mkdir()
    summary = finetune_cell(cell, cfg, cell_data_from_shards(images, cell, cfg), straight)
    per_epoch = summary["steps"] // 2
    assert per_epoch >= 4 and summary["selected_epoch"] in (0, 1)
    expected = outputs(straight)

    # SIGUSR1 at batch 2 of epoch 1 (after a validation: the selection state holds weights and scores)
    cells = tmp_path / "cells"
    marker = tmp_path / "signals" / "checkpointed"
    monkeypatch.setenv("HEARTBEIT_CHECKPOINTED_FILE", str(marker))
    resume = cell_resume_dir(cells, cell.cell_id)

    def train_fn(how=None, config=cfg):
        def run(c, out):
            data = cell_data_from_shards(images, c, config)
            return finetune_cell(c, config, interrupted(data, 1, 2, how) if how else data, out, resume_dir=resume)
        return run

    handler = signal.getsignal(signal.SIGUSR1)
    assert run_cells([cell], cells, train_fn("signal"))["stopped"] == 1
    assert signal.getsignal(signal.SIGUSR1) is handler  # the cell's handler ends with the cell
    assert (resume / CHECKPOINT).is_file() and marker.is_file()
    assert not (cells / ".failed" / f"{cell.cell_id}.json").exists() and not (cells / cell.cell_id).exists()
    state = torch.load(resume / CHECKPOINT, weights_only=True)
    assert (state["position"]["epoch"], state["position"]["batches"]) == (1, 3)
    state_, detail = cell_status(cells, cell)
    assert state_ == "partial" and f"mid-cell checkpoint at step {per_epoch + 3}" in detail
    assert decode(state["loop"])["step"] == per_epoch + 3

    counts = run_cells([cell], cells, train_fn())
    assert counts["ran"] == 1, (cells / ".failed" / f"{cell.cell_id}.json").read_text()
    assert outputs(cells / cell.cell_id) == expected
    assert not resume.exists()  # the mid-cell checkpoint is deleted once the cell is complete
    curves = [json.loads(line) for line in (cells / cell.cell_id / "curves.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_criterion"]) for r in curves] == \
        [(r["step"], r["val_criterion"]) for r in map(json.loads, (straight / "curves.jsonl").read_text().splitlines())]

    # a crash (no stop request) after periodic checkpoints: the rerun resumes from the last one
    every_step = mcfg(checkpoint_minutes=1e-9)
    cells2 = tmp_path / "cells2"
    resume = cell_resume_dir(cells2, cell.cell_id)
    assert run_cells([cell], cells2, train_fn("crash", every_step))["failed"] == 1
    state = torch.load(resume / CHECKPOINT, weights_only=True)
    assert decode(state["loop"])["step"] == per_epoch + 2  # the last step before the crash
    state_, detail = cell_status(cells2, cell)
    assert state_ == "failed" and "simulated crash" in detail and f"checkpoint at step {per_epoch + 2}" in detail
    assert run_cells([cell], cells2, train_fn(config=every_step))["ran"] == 1
    assert outputs(cells2 / cell.cell_id) == expected and not resume.exists()


def test_another_cells_checkpoint_is_ignored(images, tmp_path):
    torch.set_num_threads(1)
    cfg = mcfg(epochs=1)
    a, b = (Cell(0, cid, ARCH, "stemi", 1.0, 0) for cid in ("a" * 16, "b" * 16))
    resume = tmp_path / "resume"
    with pytest.raises(Exception, match="stopped at step"):
        finetune_cell(a, cfg, interrupted(cell_data_from_shards(images, a, cfg), 0, 0, "signal"), tmp_path,
                      resume_dir=resume)
    out = tmp_path / "b"
    out.mkdir()
    summary = finetune_cell(b, cfg, cell_data_from_shards(images, b, cfg), out, resume_dir=resume)
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert curves[0]["images"] > 8  # trained from step 0 (every image of the epoch), not from a's step 1


def test_selection_state_of_any_shape_round_trips():
    best = (0.75, 3, {"w": torch.arange(4.0)}, (np.array([0.1, 0.9]), np.array([0, 1]), ["p1", None]),
            np.float64(-0.5), np.array(["x", None], dtype=object), np.zeros((0, 2), dtype=np.int64))
    back = decode(torch.load(_roundtrip(encode({"best": best})), weights_only=True))["best"]
    assert type(back) is tuple and back[:2] == (0.75, 3) and torch.equal(back[2]["w"], best[2]["w"])
    assert np.array_equal(back[3][0], best[3][0]) and back[3][0].dtype == np.float64 and back[3][2] == ["p1", None]
    assert type(back[4]) is np.float64 and back[5].tolist() == ["x", None] and back[6].shape == (0, 2)
    with pytest.raises(TypeError, match="cannot checkpoint a set"):
        encode({1, 2})


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_the_interval_is_validated_and_not_part_of_a_cells_id():
    assert _finetune_fingerprint(MatrixConfig(checkpoint_minutes=5)) == _finetune_fingerprint(MatrixConfig())
    with pytest.raises(ConfigError, match="checkpoint_minutes"):
        MatrixConfig(checkpoint_minutes=-1).validate()


def test_tokenizer_training_stops_and_resumes_to_the_same_bytes(images, tmp_path):
    """The VQ-VAE tokenizer saves its state at each evaluation point and on a stop
    request; a rerun continues there and writes the same file as an uninterrupted run."""
    from heartbeit.commands.tokenizer import _capped
    from heartbeit.config import TokenizerConfig
    from heartbeit.distributed.preempt import Stopped
    from heartbeit.train.batches import ShardBatches, shard_eval_images
    from heartbeit.train.tokenizer_train import train_tokenizer

    torch.set_num_threads(1)
    cfg = TokenizerConfig(kind="vqvae", vocab_size=16, input_size=32, patch_size=8, steps=8, eval_points=2,
                          batch_size=8, max_images=32, eval_images=8, vq_hidden=8, vq_code_dim=4)
    held_out = shard_eval_images(images, cfg.eval_images)

    def stream(signal_at=None):
        for i, batch in enumerate(_capped(ShardBatches(images, cfg.batch_size, seed=0), cfg.max_images, cfg.batch_size)):
            if i == signal_at:
                os.kill(os.getpid(), signal.SIGUSR1)
            yield batch

    tok, _ = train_tokenizer(cfg, stream(), held_out, progress=False)
    tok.save(tmp_path / "straight.safetensors")
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Stopped, match="stopped at step 6 of 8"):
        train_tokenizer(cfg, stream(signal_at=5), held_out, progress=False, checkpoint=checkpoint)
    tok, metrics = train_tokenizer(cfg, stream(), held_out, progress=False, checkpoint=checkpoint)
    tok.save(tmp_path / "resumed.safetensors")
    assert (tmp_path / "resumed.safetensors").read_bytes() == (tmp_path / "straight.safetensors").read_bytes()
    assert [p["step"] for p in metrics["history"]] == [1, 4, 8]


def test_a_failed_cell_gives_the_signal_handlers_back(images, tmp_path):
    torch.set_num_threads(1)
    cfg = mcfg(epochs=1)
    cell = Cell(0, "f" * 16, ARCH, "stemi", 1.0, 0)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    assert run_cells([cell], tmp_path / "cells", lambda c, out: finetune_cell(
        c, cfg, interrupted(cell_data_from_shards(images, c, cfg), 0, 1, "crash"), out,
        resume_dir=tmp_path / "resume"))["failed"] == 1
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before
