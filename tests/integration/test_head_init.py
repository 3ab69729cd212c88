"""Every new classifier head starts where it can learn (models/families.py, Family.head_init): the family's weight
rule and a bias at the training prevalence's log-odds. Before recipe 2 the BEiT-family heads kept timm's
head_init_scale=0.001 and collapsed to a near-constant score on an imbalanced task (the demo's random ViT)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from heartbeit.config import MatrixConfig
from heartbeit.matrix import Cell
from heartbeit.models import zoo
from heartbeit.models.families import family_of, head_init, needs_mim_export
from heartbeit.train import finetune as ft
from tests.conftest import ROOT as REPO_ROOT


def _matrix_architectures() -> list[str]:
    """Every architecture a profile's matrix fine-tunes, and the package defaults."""
    archs = set(MatrixConfig().architectures)
    for path in (REPO_ROOT / "configs").glob("*.yaml"):
        archs |= set((yaml.safe_load(path.read_text()).get("matrix") or {}).get("architectures") or [])
    return sorted(archs)


@pytest.mark.parametrize("arch", _matrix_architectures())
def test_every_matrix_architecture_gets_its_family_head(arch, tmp_path):
    torch.manual_seed(0)
    kwargs = {"img_size": 64} if not arch.endswith("224") else {}
    if needs_mim_export(arch):  # from a (random) MIM export, as fine-tuning loads it
        from safetensors.torch import save_file
        from heartbeit.models.heartbeit import create_mim_model, export_backbone

        mim = create_mim_model(arch, vocab_size=16)
        kwargs["pretrained_file"] = str(tmp_path / "export.safetensors")
        save_file(export_backbone(mim.state_dict(), depth=len(mim.blocks)), kwargs["pretrained_file"])
    model, _ = zoo.create_classifier(arch, prevalence=0.12, n_train=500, **kwargs)
    stats = zoo.head_statistics(model)
    rule, std = head_init(arch)
    assert rule == ("trunc_normal" if family_of(arch).kind == "transformer" else "torch_default")
    assert stats["bias_gap"] == pytest.approx(math.log(0.12 / 0.88), abs=1e-5)
    assert stats["bias"][0] == pytest.approx(-stats["bias"][1], abs=1e-6)
    head = zoo.classifier_head(model)
    if rule == "trunc_normal":
        assert 0.012 < stats["weight_std"] < 0.025 and stats["weight_absmax"] <= 2 * std + 1e-6
    else:  # PyTorch's default Linear init: U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
        bound = 1 / math.sqrt(head.in_features)
        assert stats["weight_absmax"] <= bound + 1e-6
        assert stats["weight_std"] == pytest.approx(bound / math.sqrt(3), rel=0.25)
    # none of the library inits that trapped or saturated a head survives: not timm's 0.001 scale, not +-0.71
    assert 1e-3 < stats["weight_std"] < 0.2


def test_prior_logit_is_finite_without_positives():
    assert math.isfinite(zoo.prior_logit(0.0, 10)) and zoo.prior_logit(0.0, 10) == pytest.approx(math.log(0.05 / 0.95))
    assert zoo.prior_logit(0.5) == 0.0


def _task(n: int, seed: int, prevalence: float = 0.1, amplitude: float = 12.0):
    """A faint horizontal band (an ST-like shift in one row of leads) in 10 % of noisy 64 px images."""
    g = np.random.default_rng(seed)
    y = (g.random(n) < prevalence).astype(np.int64)
    x = g.normal(128, 30, size=(n, 1, 64, 64))
    for i in np.flatnonzero(y):
        r = int(g.integers(0, 3)) * 21
        x[i, 0, r + 8:r + 14, :] -= amplitude
    return torch.tensor(np.clip(x, 0, 255).astype(np.uint8)), torch.tensor(y)


def _batches(x, y, bs, seed=None):
    idx = np.arange(len(y))
    if seed is not None:
        np.random.default_rng(seed).shuffle(idx)
    for i in range(0, len(idx), bs):
        j = idx[i:i + bs]
        yield ft.Batch(images=x[j], labels=y[j], meta=[{"ecg_uid": str(k)} for k in j])


def _val_scores(tmp_path, legacy: bool, monkeypatch) -> tuple[float, float, dict]:
    from sklearn.metrics import roc_auc_score
    import pandas as pd

    xt, yt = _task(480, 1)
    xv, yv = _task(200, 2)
    data = ft.CellData(train=lambda e: _batches(xt, yt, 32, e), val=lambda: _batches(xv, yv, 64),
                       evaluation=lambda: _batches(xv, yv, 64), n_train=len(yt), n_train_pos=int(yt.sum()))
    mcfg = MatrixConfig(epochs=4, min_steps=40, batch_size=32, image_size=64, device="cpu", precision="fp32",
                        num_workers=0, selection="last")
    if legacy:  # the code before recipe 2: timm's own head init (weights x 0.001, bias 0)
        monkeypatch.setattr(zoo, "init_new_head", lambda *a, **k: {})
    summary = ft.finetune_cell(Cell(0, "t", "vit_micro_patch8_64", "x", 1.0, 0, 0, "fp32", False), mcfg, data, tmp_path)
    monkeypatch.undo()
    v = pd.read_parquet(tmp_path / "val_scores.parquet")
    return float(v.score.std()), float(roc_auc_score(v.label, v.score)), summary


def test_random_vit_learns_an_imbalanced_task_where_the_library_head_stays_constant(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    (tmp_path / "old").mkdir(), (tmp_path / "new").mkdir()
    old_std, _, old = _val_scores(tmp_path / "old", True, monkeypatch)
    new_std, new_auroc, new = _val_scores(tmp_path / "new", False, monkeypatch)
    assert old["head_init"]["weight_std"] < 1e-4  # timm's head_init_scale: the trap this guards against
    assert old_std < 0.005, "the library init no longer collapses: the comparison below would prove nothing"
    assert new_std > 0.01 and new_auroc > 0.8
    h = new["head_init"]
    assert h["rule"] == "trunc_normal" and h["prior_logit"] == pytest.approx(math.log(h["prevalence"] / (1 - h["prevalence"])), abs=1e-4)
    # the AdamW recipe's groups: weights with decay, biases/norms/tables/tokens without
    groups = new["optimizer"]["groups"]
    assert new["optimizer"]["name"] == "AdamW" and [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert new["recipe"] >= 2
