"""Pretraining length, accumulation and lr as BEiT defines them (epochs over the train split at a global
batch, lr scaled with the batch), derived at start; the small profiles keep their explicit numbers."""
import json

import pytest
import torch
from helpers.mim_data import ecg_images, write_image_shards

from heartbeit.config import ConfigError, TokenizerConfig, load_config
from heartbeit.train.batches import InMemoryBatches
from heartbeit.train.pretrain import pretrain
from heartbeit.train.schedule import check_resume, resolve_schedule
from heartbeit.train.tokenizer_train import train_tokenizer


@pytest.mark.parametrize("profile, steps, lr, warmup", [("ci", 30, 1e-3, 5), ("demo", 1000, 1.5e-3, 50)])
def test_small_profiles_keep_todays_numbers(profile, steps, lr, warmup):
    cfg = load_config(profile).pretrain
    for n_images, world in ((400, 1), (4000, 1), (123, 1)):
        resolved, record = resolve_schedule(cfg, n_images, world)
        assert (resolved.steps, resolved.lr, resolved.warmup_steps, resolved.grad_accum, resolved.min_lr) == \
            (steps, lr, warmup, 1, 1e-5)
        assert record["mode"] == "steps" and record["global_batch"] == cfg.batch_size


def test_paper_profile_is_300_epochs_at_2048_whatever_the_cluster():
    cfg = load_config("paper").pretrain
    n = 8_500_000
    for world, accum in ((32, 1), (16, 2), (8, 4)):
        r, rec = resolve_schedule(cfg, n, world)
        assert (r.grad_accum, rec["global_batch"], r.lr) == (accum, 2048, 1.5e-3)
        assert r.steps == 1_245_118 and r.warmup_steps == 41_504  # ceil(300 n / 2048), 10 epochs
        assert rec["epochs"] == pytest.approx(300, rel=1e-6)
    # 12 GPUs x 64 cannot make 2048: 3 micro batches -> 2304, lr scaled linearly, said so
    r, rec = resolve_schedule(cfg, n, 12)
    assert rec["global_batch"] == 2304 and r.lr == pytest.approx(1.5e-3 * 2304 / 2048)
    assert r.steps == -(-300 * n // 2304) and "2304" in rec["note"]
    # half the corpus: half the steps, same epochs
    assert resolve_schedule(cfg, n // 2, 32)[0].steps == -(-300 * (n // 2) // 2048)
    with pytest.raises(ConfigError, match="image count"):
        resolve_schedule(cfg, 0, 32)


def test_resume_refuses_another_schedule():
    cfg = load_config("paper").pretrain
    _, saved = resolve_schedule(cfg, 1_000_000, 16)
    check_resume(saved, resolve_schedule(cfg, 1_000_000, 16)[1])  # same job: fine
    check_resume(None, saved)  # a checkpoint from before schedules were recorded
    with pytest.raises(RuntimeError, match=r"world_size 16 -> 8.*same number of ranks"):
        check_resume(saved, resolve_schedule(cfg, 1_000_000, 8)[1])
    with pytest.raises(RuntimeError, match="train_images"):
        check_resume(saved, resolve_schedule(cfg, 1_200_000, 16)[1])


def test_validation_names_the_keys():
    with pytest.raises(ConfigError, match="warmup_epochs needs epochs"):
        load_config("ci", overrides=["pretrain.warmup_epochs=1"])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config("ci", overrides=["pretrain.epochs=2", "pretrain.warmup_epochs=2"])


@pytest.fixture(scope="module")
def tokenizer():
    cfg = TokenizerConfig(kind="kmeans", vocab_size=32, input_size=64, patch_size=8, kmeans_steps=20)
    evals = torch.from_numpy(ecg_images(16, 64, seed=1).copy())
    return train_tokenizer(cfg, InMemoryBatches(ecg_images(128, 64, seed=0), 32, seed=0), evals,
                           progress=False)[0]


def test_pretrain_derives_the_schedule_from_the_shards(tmp_path, tokenizer):
    images = tmp_path / "images"
    write_image_shards(images, ecg_images(48, 64, seed=2), per_shard=16)
    cfg = load_config("ci", overrides=["pretrain.epochs=2", "pretrain.global_batch=16", "pretrain.batch_size=8",
                                       "pretrain.lr_batch=32", "pretrain.warmup_epochs=0.5",
                                       "pretrain.log_every=1", "pretrain.checkpoint_every=100"])
    summary = pretrain(cfg, images, tokenizer, tmp_path / "out", progress=False)
    s = summary["schedule"]
    # 2 epochs of 48 images at 8 x 2 accum = 6 steps; lr 1e-3 at 32 -> 5e-4 at 16; warmup 0.5 epoch = 2 steps
    assert (s["steps"], s["grad_accum"], s["global_batch"], s["warmup_steps"]) == (6, 2, 16, 2)
    assert s["lr"] == pytest.approx(5e-4) and summary["steps_done"] == 6 and summary["complete"]
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert max(r["lr"] for r in log) == pytest.approx(5e-4)
    meta = json.loads((tmp_path / "out" / "heartbeit-micro_patch8_64.json").read_text())
    assert meta["pretrain_config"]["epochs"] == 2 and meta["resolved_pretrain_config"]["steps"] == 6


def test_compile_setting_compiles_the_model(tmp_path, tokenizer, monkeypatch):
    """pretrain.compile is wired to torch.compile (nn.Module.compile, in place: checkpoint keys unchanged)."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    cfg = load_config("ci", overrides=["pretrain.steps=1", "pretrain.warmup_steps=0", "pretrain.batch_size=8",
                                       "pretrain.compile=true", "pretrain.export_at=[]"])
    pretrain(cfg, InMemoryBatches(ecg_images(16, 64, seed=2), 8, seed=0), tokenizer, tmp_path / "on", progress=False)
    assert len(compiled) == 1
    cfg = load_config("ci", overrides=["pretrain.steps=1", "pretrain.warmup_steps=0", "pretrain.batch_size=8",
                                       "pretrain.export_at=[]"])
    pretrain(cfg, InMemoryBatches(ecg_images(16, 64, seed=2), 8, seed=0), tokenizer, tmp_path / "off", progress=False)
    assert len(compiled) == 1
