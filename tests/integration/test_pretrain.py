"""Masked image modeling loop: it learns at ci size, resumes bit-exactly, checkpoints atomically, exports a
backbone timm loads, and runs from image shards through the CLI."""
import json

import pytest
import timm
import torch
from helpers.mim_data import ecg_images, write_image_shards
from safetensors.torch import load_file

from heartbeit.config import PretrainConfig, TokenizerConfig, load_config
from heartbeit.distributed.build import build_engine
from heartbeit.distributed.local import LocalEngine
from heartbeit.train.batches import InMemoryBatches
from heartbeit.train.pretrain import pretrain
from heartbeit.train.schedule import lr_at
from heartbeit.train.tokenizer_train import train_tokenizer


@pytest.fixture(scope="module")
def images():
    return ecg_images(512, 64, seed=0)


@pytest.fixture(scope="module")
def tokenizer(images):
    ci = load_config("ci", overrides=["tokenizer.kmeans_steps=60"])
    evals = torch.from_numpy(ecg_images(32, 64, seed=1).copy())
    return train_tokenizer(ci.tokenizer, InMemoryBatches(images, 64, seed=0), evals, progress=False)[0]


def read_log(out_dir):
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_ci_profile_run_learns(tmp_path, images, tokenizer):
    cfg = load_config("ci")  # heartbeit_micro_patch8_64, 30 steps of 16 images, k-means with 64 codes
    assert cfg.pretrain.model == "heartbeit_micro_patch8_64" and tokenizer.vocab_size == 64
    summary = pretrain(cfg, InMemoryBatches(images, cfg.pretrain.batch_size, seed=0), tokenizer, tmp_path,
                       progress=False)
    records = read_log(tmp_path)
    first, last = records[0], records[-1]
    assert first["step"] == 1 and last["step"] == cfg.pretrain.steps
    assert last["loss"] < first["loss"] - 0.2  # from ~ln(64) = 4.16
    assert last["mlm_acc"] > 2.0 / tokenizer.vocab_size
    for rec in records:
        assert {"loss", "mlm_acc", "lr", "images_per_s", "mfu", "grad_norm"} <= set(rec)
        assert rec["images_per_s"] > 0 and 0 < rec["mfu"] < 1
    assert summary["final_loss"] == last["loss"] and summary["export"].endswith("heartbeit-micro_patch8_64.safetensors")

    # the export loads by name through timm and fine-tunes
    clf = timm.create_model("heartbeit_micro_patch8_64", pretrained=True,
                            pretrained_cfg_overlay=dict(file=summary["export"]), num_classes=2)
    exported = load_file(summary["export"])
    assert torch.equal(clf.state_dict()["blocks.1.mlp.fc1.weight"], exported["blocks.1.mlp.fc1.weight"])
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-4)
    x = (torch.from_numpy(images[:8].copy()).float() / 255 - 0.5) / 0.5
    loss = torch.nn.functional.cross_entropy(clf(x), torch.tensor([0, 1] * 4))
    loss.backward()
    opt.step()
    meta = json.loads((tmp_path / "heartbeit-micro_patch8_64.json").read_text())
    assert meta["pretrain_config"]["steps"] == cfg.pretrain.steps and meta["vocab_size"] == 64

    # a rerun of a completed run with the same config is skipped
    again = pretrain(cfg, InMemoryBatches(images, cfg.pretrain.batch_size, seed=0), tokenizer, tmp_path,
                     progress=False)
    assert again["final_loss"] == summary["final_loss"]


def small_cfg(**kw):
    base = dict(model="heartbeit_micro_patch8_64", image_size=64, steps=8, batch_size=8, grad_accum=2, lr=2e-3,
                warmup_steps=2, mask_patches=24, min_mask_block=4, checkpoint_every=2, log_every=2,
                drop_path=0.1, precision="fp32", keep_checkpoints=2)
    base.update(kw)
    return PretrainConfig(**base)


def test_resume_is_bit_exact(tmp_path, images, tokenizer):
    cfg = small_cfg()
    straight, split = tmp_path / "straight", tmp_path / "split"
    pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, straight, progress=False)
    # 80 images = 5 micro batches per epoch: the resumed run crosses an epoch boundary mid-way
    half = pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, split, progress=False, stop_after=3)
    assert half["steps_done"] == 3 and not half["complete"] and "export" not in half
    assert (split / "checkpoints" / "latest").read_text().strip() == "step00000003"
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, split, progress=False)
    pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, split, resume=True, progress=False)

    a = load_file(str(straight / "heartbeit-micro_patch8_64.safetensors"))
    b = load_file(str(split / "heartbeit-micro_patch8_64.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full_a = load_file(str(straight / "checkpoints" / "step00000008" / "model.safetensors"))
    full_b = load_file(str(split / "checkpoints" / "step00000008" / "model.safetensors"))
    assert all(torch.equal(full_a[k], full_b[k]) for k in full_a)  # incl. mask token and lm head
    # the log: the stopped run also logged its last (partial) window at step 3; windows after the resume
    # point line up again and carry identical numbers
    log_a, log_b = read_log(straight), read_log(split)
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 6, 8]
    after = {r["step"]: r for r in log_a if r["step"] > 4}
    assert [(r["loss"], r["mlm_acc"]) for r in log_b if r["step"] > 4] == [(r["loss"], r["mlm_acc"]) for r in after.values()]
    # old checkpoints are pruned (keep_checkpoints=2), the pointer names a complete tag
    tags = sorted(p.name for p in (split / "checkpoints").iterdir() if p.is_dir())
    assert tags == ["step00000006", "step00000008"]
    assert not any(p.name.startswith(".") for p in (split / "checkpoints").iterdir())


def test_lr_schedule_from_global_step():
    cfg = small_cfg(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)

    def lr_of(step: int) -> float:
        return lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr)

    assert lr_of(0) == pytest.approx(1e-4)
    assert lr_of(9) == pytest.approx(1e-3)
    assert lr_of(10) == pytest.approx(1e-3)
    assert lr_of(55) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_of(100) == pytest.approx(1e-5)
    lrs = [lr_of(s) for s in range(10, 101)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))


def test_local_engine_accumulates_and_clips():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    cfg = small_cfg(grad_accum=2, clip_grad=0.5)
    engine = build_engine(model, [{"params": list(model.parameters()), "weight_decay": 0.0}], cfg)
    assert isinstance(engine, LocalEngine)
    before = model.weight.detach().clone()
    engine.set_lr(0.1)
    engine.backward(model(torch.ones(2, 4)).pow(2).sum() * 100)
    assert engine.step() is False and torch.equal(model.weight, before)
    engine.backward(model(torch.ones(2, 4)).pow(2).sum() * 100)
    assert engine.step() is True and not torch.equal(model.weight, before)
    assert engine.grad_norm() > 0.5  # the norm before clipping is reported
    assert all(p.grad is None for p in model.parameters())
    assert engine.all_reduce_mean(3.0) == 3.0


def test_distributed_engine_missing_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "heartbeit.distributed.deepspeed", None)  # as if absent
    with pytest.raises(RuntimeError, match="DeepSpeed engine"):
        build_engine(torch.nn.Linear(2, 2), [], small_cfg(zero_stage=1))


def test_grid_mismatch_is_refused(tmp_path, images, tokenizer):
    with pytest.raises(ValueError, match="patch grid"):
        pretrain(small_cfg(model="heartbeit_tiny_patch8_112", image_size=112), InMemoryBatches(images, 8),
                 tokenizer, tmp_path, progress=False)


@pytest.mark.slow
def test_cli_from_shards_with_precomputed_tokens(tmp_path, caplog):
    from heartbeit.cli import main

    images_dir, tok_dir, out = tmp_path / "images", tmp_path / "tokenizer", tmp_path / "pretrain"
    write_image_shards(images_dir, {"train": ecg_images(96, 64, seed=4), "val": ecg_images(24, 64, seed=5)})
    common = ["--profile", "ci", "--workdir", str(tmp_path)]
    assert main(["tokenizer", "train", "--no-progress", *common, "--set", "tokenizer.kmeans_steps=5",
                 "--set", "tokenizer.eval_images=16"]) == 0
    metrics = json.loads((tok_dir / "tokenizer_metrics.json").read_text())
    assert metrics["final"]["used_codes"] > 0 and metrics["eval_images"] == 16
    # --local-file adopts an existing tokenizer instead of training one
    assert main(["tokenizer", "train", "--no-progress", *common, "--out", str(tmp_path / "adopted"),
                 "--local-file", str(tok_dir / "tokenizer.safetensors")]) == 0
    adopted = json.loads((tmp_path / "adopted" / "tokenizer_metrics.json").read_text())
    assert adopted["source"] == "local_file" and adopted["sha256"] == metrics["sha256"]
    assert main(["tokenizer", "encode", "--no-progress", *common]) == 0
    assert (images_dir / "tokens.json").is_file()
    caplog.set_level("INFO", logger="heartbeit")
    assert main(["pretrain", "--no-progress", *common, "--set", "pretrain.steps=4",
                 "--set", "pretrain.checkpoint_every=2"]) == 0
    assert "precomputed in the shards" in caplog.text
    assert (out / "heartbeit-micro_patch8_64.safetensors").is_file() and len(read_log(out)) >= 2
    assert (out / "config.resolved.yaml").is_file()
    # resuming a finished run re-exports the same weights
    first = load_file(str(out / "heartbeit-micro_patch8_64.safetensors"))
    assert main(["pretrain", "--no-progress", "--resume", *common, "--set", "pretrain.steps=4",
                 "--set", "pretrain.checkpoint_every=2"]) == 0
    second = load_file(str(out / "heartbeit-micro_patch8_64.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_stop_request_checkpoints_and_resumes_exactly(tmp_path, images, tokenizer, monkeypatch):
    """A stop request (the file slurm/pretrain.sh creates when Slurm signals the batch shell) makes the
    loop checkpoint at the current step and leave; --resume then reaches the uninterrupted weights."""
    import signal

    cfg = small_cfg(checkpoint_every=100)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    handlers = [signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)]
    pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, straight, progress=False)
    assert [signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)] == handlers  # given back at the end
    stop_file, marker = tmp_path / "STOP", tmp_path / "CHECKPOINTED"
    stop_file.touch()
    monkeypatch.setenv("HEARTBEIT_STOP_FILE", str(stop_file))
    monkeypatch.setenv("HEARTBEIT_CHECKPOINTED_FILE", str(marker))
    half = pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, stopped, progress=False)
    assert half["steps_done"] == 1 and not half["complete"] and marker.is_file()
    assert (stopped / "checkpoints" / "latest").read_text().strip() == "step00000001"
    monkeypatch.delenv("HEARTBEIT_STOP_FILE")
    pretrain(cfg, InMemoryBatches(images[:80], 8, seed=5), tokenizer, stopped, resume=True, progress=False)
    a = load_file(str(straight / "heartbeit-micro_patch8_64.safetensors"))
    b = load_file(str(stopped / "heartbeit-micro_patch8_64.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
