"""Fine-tuning selects the epoch on the validation split only and scores held-out sets once."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from heartbeit.config import MatrixConfig
from heartbeit.matrix import Cell
from heartbeit.train.finetune import Batch, CellData, finetune_cell


def _images(n, seed, positive_bias):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.4).long()
    images = (torch.rand(n, 1, 64, 64, generator=g) * 120).to(torch.uint8)
    # a learnable but noisy signal: positives are brighter in one band of rows
    images[labels == 1, :, 20:30, :] += positive_bias
    return images, labels


def make_data(eval_label_noise: bool, calls: list):
    xtr, ytr = _images(48, 0, 60)
    xva, yva = _images(24, 1, 60)
    xte, yte = _images(24, 2, 60)
    if eval_label_noise:
        yte = torch.randint(0, 2, yte.shape, generator=torch.Generator().manual_seed(99))

    def batches(x, y, split, order=None):
        idx = order if order is not None else torch.arange(len(y))
        for i in range(0, len(idx), 16):
            j = idx[i:i + 16]
            yield Batch(x[j], y[j], [{"ecg_uid": f"{split}{int(k)}", "split": split} for k in j])

    def train(epoch):
        calls.append(("train", epoch))
        return batches(xtr, ytr, "train", torch.randperm(len(ytr), generator=torch.Generator().manual_seed(epoch)))

    def val():
        calls.append(("val",))
        return batches(xva, yva, "val")

    def evaluation():
        calls.append(("evaluation",))
        return batches(xte, yte, "test")

    return CellData(train=train, val=val, evaluation=evaluation, n_train=48, n_train_pos=int(ytr.sum()))


@pytest.mark.parametrize("arch", ["vit_micro_patch8_64", "resnet10t"])
def test_selection_never_reads_heldout_labels(tmp_path, arch):
    torch.set_num_threads(1)
    mcfg = MatrixConfig(architectures=[arch], epochs=3, batch_size=16, image_size=64, precision="fp32")
    cell = Cell(0, "x", arch, "stemi", 1.0, 0)
    results = []
    for noise in (False, True):
        calls = []
        out = tmp_path / f"noise{noise}"
        out.mkdir()
        summary = finetune_cell(cell, mcfg, make_data(noise, calls), out)
        # the held-out set is read once, after every training epoch and validation pass
        assert calls[-1] == ("evaluation",) and calls.count(("evaluation",)) == 1
        # training epochs 0, 1, 2 in order (a BatchNorm model re-reads the current epoch's stream to
        # re-estimate its statistics before each validation)
        assert sorted(set(c for c in calls if c[0] == "train")) == [("train", e) for e in range(3)]
        results.append((summary, load_file(str(out / "model.safetensors"))))
    (s0, w0), (s1, w1) = results
    assert s0["selected_epoch"] == s1["selected_epoch"]
    assert s0["val_criterion"] == s1["val_criterion"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_predictions_written(tmp_path):
    import pandas as pd

    mcfg = MatrixConfig(architectures=["vit_micro_patch8_64"], epochs=1, batch_size=16, image_size=64, precision="fp32")
    cell = Cell(0, "x", "vit_micro_patch8_64", "stemi", 1.0, 0)
    finetune_cell(cell, mcfg, make_data(False, []), tmp_path)
    pred = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(pred) == 24 and set(pred.columns) >= {"ecg_uid", "split", "label", "score"}
    assert pred["score"].between(0, 1).all()
    assert (tmp_path / "curves.jsonl").read_text().count("\n") == 1


def test_device_setting_resolves_and_is_recorded(tmp_path):
    from heartbeit.config import ConfigError
    from heartbeit.train.finetune import resolve_device

    for bad in ("gpu", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match="device must be"):
            MatrixConfig(device=bad).validate()
    MatrixConfig(device="cuda:1").validate()
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="matrix.device=cuda.*no CUDA GPU"):
            resolve_device("cuda")
    with pytest.MonkeyPatch.context() as mp:  # a one-GPU machine asked for its fourth GPU
        mp.setattr(torch.cuda, "is_available", lambda: True)
        mp.setattr(torch.cuda, "device_count", lambda: 1)
        with pytest.raises(RuntimeError, match="matrix.device=cuda:3, but this machine has 1 CUDA GPU"):
            resolve_device("cuda:3")
    mcfg = MatrixConfig(architectures=["resnet10t"], epochs=1, batch_size=16, image_size=64, precision="fp32",
                        device="cpu")
    summary = finetune_cell(Cell(0, "x", "resnet10t", "stemi", 1.0, 0), mcfg, make_data(False, []), tmp_path)
    assert summary["device"] == "cpu"


def test_device_is_not_part_of_a_cells_identity():
    from heartbeit.matrix import _finetune_fingerprint

    assert _finetune_fingerprint(MatrixConfig(device="cpu")) == _finetune_fingerprint(MatrixConfig(device="auto"))
    assert _finetune_fingerprint(MatrixConfig(max_lr=1e-4)) != _finetune_fingerprint(MatrixConfig())


def test_batchnorm_reestimation_prevents_eval_mode_collapse(tmp_path):
    """A from-scratch EfficientNet after a short high-lr fine-tune: its running BatchNorm statistics lag the
    weights and every eval-mode prediction collapses to one class (std ~1e-11, AUROC 0.79 here). Re-estimating
    the statistics on the cell's training images -- no weight change -- restores a model that separates the
    classes, and the collapse is reported as a sanity verdict, never hidden."""
    torch.set_num_threads(1)
    out = {}
    for batches in (0, 16):
        mcfg = MatrixConfig(architectures=["efficientnet_b0"], epochs=3, batch_size=16, image_size=64, precision="fp32",
                            bn_recalib_batches=batches, min_steps=30)
        d = tmp_path / f"bn{batches}"
        d.mkdir()
        out[batches] = finetune_cell(Cell(0, "x", "efficientnet_b0", "stemi", 1.0, 0), mcfg, make_data(False, []), d)
    off, on = out[0]["sanity"], out[16]["sanity"]
    assert "collapsed" in off["verdicts"] and off["val_score_std"] < 1e-3
    assert on["verdicts"] == [] and on["val_auroc"] > 0.95 and on["val_score_std"] > 0.1
    assert out[16]["bn_recalibration_batches"] == 16 and out[0]["bn_recalibration_batches"] == 0


def test_sanity_verdicts_classify_collapse_nonfinite_and_chance():
    from heartbeit.train.sanity import sanity_verdicts

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    good = np.clip(0.5 * y + rng.normal(0.25, 0.15, 400), 0, 1)
    assert sanity_verdicts(good, y)["verdicts"] == []
    assert sanity_verdicts(np.full(400, 0.2), y)["verdicts"] == ["collapsed", "not_better_than_chance"]
    # one class for every ECG although the scores vary and rank: a threshold property, not a collapse
    assert sanity_verdicts(0.1 + 0.3 * good, y)["verdicts"] == ["one_class"]
    # and records made before "one_class" existed read the same through their recorded std
    from heartbeit.records import current_verdicts

    assert current_verdicts({"verdicts": ["collapsed"], "val_score_std": 0.05}) == ["one_class"]
    assert current_verdicts({"verdicts": ["collapsed", "not_better_than_chance"], "val_score_std": 1e-5}) == [
        "collapsed", "not_better_than_chance"]
    noise = rng.random(400)
    assert sanity_verdicts(noise, y)["verdicts"] == ["not_better_than_chance"]
    assert "non_finite_loss" in sanity_verdicts(good, y, nonfinite_steps=1)["verdicts"]
    # a perfect ranking has no DeLong interval but is better than chance
    assert sanity_verdicts(y * 0.8 + 0.1, y)["verdicts"] == []


def test_effective_precision_comes_from_the_device_table_and_is_part_of_the_cell_id(tmp_path):
    from heartbeit.matrix import plan_cells
    from heartbeit.models.precision import numerics_for

    # CPU rows measured with bench/train_step.py: EfficientNet fp32 + channels-last, ResNet bf16 + channels-last
    assert numerics_for("efficientnet_b0", "cpu") == numerics_for("tf_efficientnet_lite0", "cpu")
    assert numerics_for("efficientnet_b0", "cpu").precision == "fp32"
    assert numerics_for("resnet18", "cpu").precision == "bf16" and numerics_for("resnet18", "cpu").channels_last
    assert numerics_for("vit_micro_patch8_64", "cpu").precision == "bf16"
    assert numerics_for("efficientnet_b0", "cuda").precision == "bf16"
    assert numerics_for("efficientnet_b0", "cpu", "bf16").precision == "bf16"  # an explicit setting wins
    (tmp_path / "manifest.parquet").write_bytes(b"x")
    archs = ["efficientnet_b0", "resnet18"]
    auto = plan_cells(MatrixConfig(architectures=archs, device="cpu", fractions=[1.0], tasks=["hcm"], seeds=[0]),
                      tmp_path, None)
    forced = plan_cells(MatrixConfig(architectures=archs, device="cpu", fractions=[1.0], tasks=["hcm"], seeds=[0],
                                     precision="bf16"), tmp_path, None)
    assert [c.precision for c in auto] == ["fp32", "bf16"] and [c.precision for c in forced] == ["bf16", "bf16"]
    assert auto[0].cell_id != forced[0].cell_id
    # the same effective numerics reached two ways give the same cell (resnet18 is bf16 either way)...
    # ...except that the requested setting is part of the fingerprint too; the effective one always is
    assert "bf16" in auto[1].label


def test_same_size_vit_gets_heartbeits_optimizer_and_beit_models_drop_path():
    from heartbeit.models import zoo
    from heartbeit.train.finetune import make_optimizer

    cpu = torch.device("cpu")
    for arch, opt in (("heartbeit_micro_patch8_64", torch.optim.AdamW), ("vit_micro_patch8_64", torch.optim.AdamW),
                      ("resnet18", torch.optim.Adam), ("beit_base_patch16_224", torch.optim.Adam)):
        assert type(make_optimizer(arch, [torch.nn.Parameter(torch.zeros(1))], 1e-3, cpu)) is opt, arch
    assert zoo.classifier_kwargs("vit_micro_patch8_64", img_size=64)["drop_path_rate"] == 0.1
    assert zoo.classifier_kwargs("beit_base_patch16_224")["drop_path_rate"] == 0.1
    assert "drop_path_rate" not in zoo.classifier_kwargs("resnet18")
    model, _ = zoo.create_classifier("vit_micro_patch8_64", img_size=64)
    assert any(getattr(b.drop_path1, "drop_prob", 0) > 0 for b in model.blocks)
