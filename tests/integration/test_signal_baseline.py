"""The signal-domain baseline: waveforms stored beside the images, a 1-D XResNet registered in
timm, repeated patient-level training draws, and matrix cells that train on exactly the image cells' ECGs."""
import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from heartbeit.config import MatrixConfig, RenderConfig
from heartbeit.config.core import ConfigError
from heartbeit.data.loading.loader import make_loader
from heartbeit.data.render.stage import render_corpus
from heartbeit.data.shard_format import wave_for_storage
from heartbeit.data.signal import preprocess
from heartbeit.data.splits import fraction_column, training_draw
from heartbeit.matrix import Cell, plan_cells
from heartbeit.models import zoo
from heartbeit.train.finetune import cell_data_from_shards, finetune_cell
from helpers.render_fixtures import make_corpus


def render_cfg(**kw):
    base = dict(image_size=48, shard_size=8, external_sites=["hosp_ext"], fractions=[0.1, 0.5, 1.0])
    base.update(kw)
    return RenderConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, n_patients=40)
    return root


@pytest.fixture(scope="module")
def images(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    render_corpus(corpus, out, render_cfg(), progress=False)
    return out


# ------------------------------------------------------------------------------------------- model


def test_signal_models_are_registered_and_classify_waveforms():
    torch.manual_seed(0)
    for name in ("signal_xresnet1d_tiny", "signal_xresnet1d18", "signal_xresnet1d50", "signal_xresnet1d101"):
        assert timm.is_model(name)
    model = timm.create_model("signal_xresnet1d_tiny", num_classes=2).eval()
    x = torch.randn(3, 12, 1000)
    assert model(x).shape == (3, 2)
    assert model.forward_features(x).shape[:2] == (3, model.num_features)
    model.reset_classifier(5)
    assert model(x).shape == (3, 5)
    big = timm.create_model("signal_xresnet1d50", num_classes=2).eval()
    assert big(torch.randn(2, 12, 500)).shape == (2, 2)
    with pytest.raises(ValueError, match="leads, samples"):
        model(torch.randn(2, 1, 12, 1000))


def test_zoo_builds_signal_models_with_twelve_leads_and_random_init():
    model, init = zoo.create_classifier("signal_xresnet1d_tiny", num_classes=2, img_size=64, in_chans=1)
    assert init.kind == "random"  # a LoadRecord
    assert model.stem[0][0].in_channels == 12
    assert zoo.input_modality("signal_xresnet1d_tiny") == "wave"
    assert zoo.input_modality("resnet18") == "image"
    assert zoo.normalization("signal_xresnet1d_tiny") == (0.0, 1.0)


# --------------------------------------------------------------------------------------- waveforms


def test_shards_hold_the_filtered_waveform_the_image_is_drawn_from(corpus, images):
    index = json.loads((images / "index.json").read_text())
    assert index["wave_hz"] == 100 and index["wave_samples"] == 1000
    man = pd.read_parquet(images / "manifest.parquet")
    row = man[man["split"] == "train"].iloc[0]
    with tarfile.open(images / row["shard"]) as tar:  # image shards stay images only
        assert not any(n.endswith(".wave.npy") for n in tar.getnames())
    with tarfile.open(images / row["shard"].replace(".tar", ".wave.tar")) as tar:
        wave = np.load(io.BytesIO(tar.extractfile(f"{row['key']}.wave.npy").read()), allow_pickle=False)
    assert wave.dtype == np.int16 and wave.shape == (12, 1000)
    # recompute from the corpus: the same filter chain as the image, stored in microvolts
    from heartbeit.data.corpus import list_shards

    for path in list_shards(corpus):
        with tarfile.open(path) as tar:
            names = tar.getnames()
            if f"{row['ecg_uid']}.signal.npy" in names:
                raw = np.load(io.BytesIO(tar.extractfile(f"{row['ecg_uid']}.signal.npy").read()))
    expected = wave_for_storage(preprocess(raw[None].astype(np.float32) / 1000.0, 100.0, render_cfg())[0:1],
                                100.0, 100, 10.0)[0]
    assert np.array_equal(wave, expected)
    assert np.abs(wave).max() > 200  # an ECG (QRS of several hundred uV), not zeros


def test_wave_for_storage_resamples_crops_and_pads():
    fs = 500.0
    t = np.arange(int(12 * fs)) / fs  # 12 s: cropped to 10 s
    x = np.tile(np.sin(2 * np.pi * 5 * t), (1, 12, 1)).astype(np.float32)
    out = wave_for_storage(x, fs, 100, 10.0)
    assert out.shape == (1, 12, 1000)
    ref = np.rint(np.sin(2 * np.pi * 5 * np.arange(1000) / 100.0) * 1000)
    assert np.abs(out[0, 0, 50:950] - ref[50:950]).max() <= 5  # 5 Hz passes the resampler unchanged
    short = wave_for_storage(x[..., : int(4 * fs)], fs, 100, 10.0)
    assert short.shape == (1, 12, 1000) and not short[..., 420:].any()  # zero-padded like the blank image tail


def test_loader_yields_waveforms_in_millivolts(images):
    batch = next(iter(make_loader(images, "val", batch_size=4, train=False, modality="wave")))
    assert batch["wave"].dtype == torch.float32 and batch["wave"].shape[1:] == (12, 1000)
    assert "image" not in batch
    assert 0.2 < float(batch["wave"].abs().max()) < 10.0


def test_images_only_shards_refuse_the_wave_modality(corpus, tmp_path):
    out = tmp_path / "images"
    render_corpus(corpus, out, render_cfg(wave_hz=0), progress=False)
    assert not list(out.glob("*/*.wave.tar"))
    with pytest.raises(ValueError, match="wave_hz 0"):
        make_loader(out, "val", modality="wave")
    with pytest.raises(ConfigError, match="wave_hz"):
        render_cfg(wave_hz=50).validate()  # below twice the 40 Hz band edge


# ------------------------------------------------------------------------------------------- draws


def test_training_draws_are_independent_patient_level_nested_and_keep_positives(images):
    man = pd.read_parquet(images / "manifest.parquet")
    # draw 0 is the render stage's subset
    assert training_draw(man, "stemi", 0.1, 0).equals(man[fraction_column(0.1, "stemi")].astype(bool))
    d1 = training_draw(man, "stemi", 0.1, 1)
    assert d1.equals(training_draw(man, "stemi", 0.1, 1))  # deterministic
    assert not d1.equals(training_draw(man, "stemi", 0.1, 2))
    assert not d1.equals(training_draw(man, "stemi", 0.1, 1, seed=5))
    assert (man.loc[d1, "split"] == "train").all()
    # whole patients: no patient is half in a draw
    inside = man.loc[d1, "patient_hash"].unique()
    assert man[man["patient_hash"].isin(inside) & (man["split"] == "train")].index.isin(man.index[d1]).all()
    # nested across fractions within a draw, and every task keeps a positive
    assert (d1 <= training_draw(man, "stemi", 0.5, 1)).all()
    for task in ("lvef_le40", "hcm", "stemi"):  # fractions are per task: each keeps a positive
        assert (man.loc[training_draw(man, task, 0.1, 1), task] == 1).any()
    # draws differ by about as much as two independent samples should
    draws = [set(man.loc[training_draw(man, "stemi", 0.5, d), "patient_hash"]) for d in range(4)]
    assert len({frozenset(d) for d in draws}) == 4


def test_plan_gives_small_fractions_several_draws_and_keeps_ids(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "index.json").write_text("{}")
    base = dict(architectures=["resnet18", "signal_xresnet1d_tiny"], fractions=[0.1, 1.0], tasks=["stemi"], seeds=[0])
    one = plan_cells(MatrixConfig(**base), images, None)
    three = plan_cells(MatrixConfig(**base, draws=3), images, None)
    assert len(one) == 4 and len(three) == 2 * 3 + 2
    assert sorted({c.draw for c in three if c.fraction == 1.0}) == [0]
    assert sorted({c.draw for c in three if c.fraction == 0.1}) == [0, 1, 2]
    # asking for more draws keeps the ids of the draws already planned (finished cells stay valid)
    ids = {c.label: c.cell_id for c in three}
    assert all(ids[c.label] == c.cell_id for c in one)
    assert len(set(ids.values())) == len(three)
    limited = plan_cells(MatrixConfig(**{**base, "fractions": [0.01, 0.1, 1.0]}, draws=3, draws_below=0.1), images, None)
    assert sorted({c.draw for c in limited if c.fraction == 0.01}) == [0, 1, 2]
    assert sorted({c.draw for c in limited if c.fraction == 0.1}) == [0]
    with pytest.raises(ConfigError, match="draws"):
        MatrixConfig(draws=0).validate()
    with pytest.raises(ConfigError, match="draws_below"):
        MatrixConfig(draws_below=0).validate()


# -------------------------------------------------------------------------------------- cells


def test_signal_and_image_cells_train_on_the_same_ecgs(images, tmp_path):
    torch.set_num_threads(1)
    mcfg = MatrixConfig(architectures=["signal_xresnet1d_tiny", "resnet10t"], epochs=1, batch_size=8, image_size=48,
                        precision="fp32", num_workers=0, draws=2)
    out = {}
    for arch in ("signal_xresnet1d_tiny", "resnet10t"):
        for draw in (0, 1):
            cell = Cell(0, f"{arch}-{draw}", arch, "stemi", 0.5, 0, draw)
            data = cell_data_from_shards(images, cell, mcfg)
            d = tmp_path / f"{arch}-{draw}"
            d.mkdir()
            summary = finetune_cell(cell, mcfg, data, d)
            out[arch, draw] = (summary, pd.read_parquet(d / "predictions.parquet"))
    (s_sig, p_sig), (s_img, p_img) = out["signal_xresnet1d_tiny", 1], out["resnet10t", 1]
    assert s_sig["n_train"] == s_img["n_train"] and s_sig["n_train_pos"] == s_img["n_train_pos"]
    assert list(p_sig["ecg_uid"]) == list(p_img["ecg_uid"])  # the same held-out ECGs, in the same order
    assert p_sig["score"].between(0, 1).all() and p_sig["score"].std() > 0
    man = pd.read_parquet(images / "manifest.parquet")
    expected = man[(man["split"] == "train") & training_draw(man, "stemi", 0.5, 1) & man["stemi"].notna()]
    assert s_sig["n_train"] == len(expected)
    assert out["signal_xresnet1d_tiny", 0][0]["n_train"] == int(
        ((man["split"] == "train") & man[fraction_column(0.5, "stemi")] & man["stemi"].notna()).sum())


def test_waveform_siblings_are_checked_on_rerun_and_removed_when_turned_off(corpus, tmp_path):
    out = tmp_path / "images"
    render_corpus(corpus, out, render_cfg(), progress=False)
    waves = sorted(out.glob("*/*.wave.tar"))
    index = json.loads((out / "index.json").read_text())
    assert len(waves) == sum(len(e["shards"]) for e in index["splits"].values())
    assert all("wave_sha256" in s for e in index["splits"].values() for s in e["shards"])
    # a damaged sibling is noticed and that shard alone is rendered again, to the same bytes
    original = waves[0].read_bytes()
    damaged = bytearray(original)
    damaged[700:710] = b"x" * 10  # inside the first member's data
    waves[0].write_bytes(bytes(damaged))
    again = render_corpus(corpus, out, render_cfg(), progress=False)
    assert again["rendered_now"] == 1 and waves[0].read_bytes() == original
    waves[0].unlink()
    assert render_corpus(corpus, out, render_cfg(), progress=False)["rendered_now"] == 1
    # images only from now on: the siblings go, the image shards are rendered again without them
    render_corpus(corpus, out, render_cfg(wave_hz=0), progress=False)
    assert not list(out.glob("*/*.wave.tar")) and json.loads((out / "index.json").read_text())["wave_hz"] == 0
