"""Saliency: Grad-CAM / FullGrad on every image family, mapping maps to lead and time, territory ratio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from heartbeit.data.render.draw import layout_boxes, render
from heartbeit.data.synth.ecg import STEMI_TERRITORY_LEADS, simulate_ecg
from heartbeit.eval import saliency as sal

SIZE = 64
ARCHS = ["heartbeit_micro_patch8_64", "vit_micro_patch8_64", "vit_tiny_patch16_224", "efficientnet_b0", "resnet18"]


def tiny_model(arch: str, seed: int = 0):
    import timm

    import heartbeit.models  # noqa: F401

    torch.manual_seed(seed)
    kwargs = {"img_size": SIZE} if arch.startswith(("vit", "heartbeit")) else {}
    return timm.create_model(arch, pretrained=False, num_classes=2, in_chans=1, **kwargs).eval()


@pytest.fixture(scope="module")
def ecg_images() -> np.ndarray:
    sig = [simulate_ecg(s, fs=250, stemi_territory=t) for s, t in ((1, "anterior"), (2, None), (3, "inferior"))]
    return np.stack([render(x, 250, SIZE) for x in sig])[:, None]


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_every_family(arch, ecg_images):
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = sal.saliency_maps(model, arch, ecg_images, target_class=1, batch_size=2)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isclose(maps.reshape(3, -1).max(axis=1), 1.0, atol=1e-4).all()  # scaled per image
    # deterministic, model untouched and left in eval mode
    again = sal.saliency_maps(model, arch, ecg_images, target_class=1)
    np.testing.assert_allclose(maps, again, atol=1e-5)  # batch 2 vs 32: float summation order
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the target class matters (class 0 and class 1 use different gradients)
    other = sal.saliency_maps(model, arch, ecg_images, target_class=0)
    assert not np.allclose(maps, other)


@pytest.mark.parametrize("arch", ["efficientnet_b0", "resnet18"])
def test_fullgrad_for_cnns(arch, ecg_images):
    model = tiny_model(arch)
    maps = sal.saliency_maps(model, arch, ecg_images[:2], method="fullgrad")
    assert maps.shape == (2, SIZE, SIZE) and 0.0 <= maps.min() and maps.max() <= 1.0
    assert maps.std() > 0


def test_fullgrad_refused_for_transformers(ecg_images):
    model = tiny_model("vit_micro_patch8_64")
    assert not sal.supports_fullgrad(model)
    with pytest.raises(ValueError, match="FullGrad"):
        sal.saliency_maps(model, "vit_micro_patch8_64", ecg_images, method="fullgrad")


def test_token_reshape_drops_prefix_and_keeps_grid_order():
    model = tiny_model("vit_micro_patch8_64")
    gh, gw = model.patch_embed.grid_size
    tokens = torch.arange(2 * (1 + gh * gw) * 3, dtype=torch.float32).reshape(2, 1 + gh * gw, 3)
    grid = sal.token_reshape_transform(model)(tokens)
    assert grid.shape == (2, 3, gh, gw)
    # patch token k (after the cls token) lands at row k // gw, column k % gw
    k = 2 * gw + 5
    torch.testing.assert_close(grid[1, :, k // gw, k % gw], tokens[1, 1 + k])
    with pytest.raises(ValueError, match="patch grid"):
        sal.token_reshape_transform(model)(tokens[:, : gh * gw - 1])


def test_bad_inputs_are_refused(ecg_images):
    model = tiny_model("resnet18")
    with pytest.raises(ValueError, match="method"):
        sal.saliency_maps(model, "resnet18", ecg_images, method="lime")
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        sal.saliency_maps(model, "resnet18", np.zeros((2, 3, SIZE, SIZE), np.uint8))


# ------------------------------------------------------------------------------------- lead mapping


BOXES = layout_boxes("3x4+II", SIZE)


def test_region_names_split_lead_ii():
    names = sal.region_names(BOXES)
    assert len(names) == 13 and names.count("II") == 1 and names[-1] == "II rhythm"
    assert sorted({b.lead for b in BOXES}) == sorted(set(n.replace(" rhythm", "") for n in names))
    assert sal.area_shares(BOXES).sum() == pytest.approx(1.0)


def test_lead_importance_sums_to_one_and_finds_the_lead():
    rng = np.random.default_rng(0)
    maps = rng.random((5, SIZE, SIZE)).astype(np.float32)
    imp = sal.lead_importance(maps, BOXES)
    assert imp["mass_share"].sum() == pytest.approx(1.0)
    assert list(imp["region"]) == sal.region_names(BOXES)
    assert (imp["n_images"] == 5).all()
    # all the saliency inside V3's box: V3 gets all the mass
    v3 = next(b for b in BOXES if b.lead == "V3")
    focused = np.zeros((2, SIZE, SIZE), np.float32)
    focused[:, v3.y0 + 1:v3.y1 - 1, v3.x0 + 1:v3.x1 - 1] = 1.0
    imp = sal.lead_importance(focused, BOXES).set_index("region")
    assert imp.loc["V3", "mass_share"] == pytest.approx(1.0)
    assert imp.drop("V3")["mass_share"].abs().max() == 0.0
    assert imp.loc["V3", "enrichment"] == pytest.approx(1.0 / imp.loc["V3", "area_share"])
    # per-lead totals fold the rhythm strip into lead II
    per = sal.per_lead(sal.lead_importance(maps, BOXES)).set_index("lead")
    assert len(per) == 12 and per["mass_share"].sum() == pytest.approx(1.0)


def test_uniform_map_has_enrichment_one_and_zero_maps_are_left_out():
    maps = np.ones((3, SIZE, SIZE), np.float32)
    maps[2] = 0.0
    imp = sal.lead_importance(maps, BOXES)
    np.testing.assert_allclose(imp["enrichment"], 1.0)
    assert (imp["n_images"] == 2).all() and (imp["n_zero_maps"] == 1).all()
    with pytest.raises(ValueError, match="non-negative"):
        sal.lead_importance(-maps, BOXES)
    with pytest.raises(ValueError, match="smaller than the layout"):
        sal.lead_importance(maps[:, :32], BOXES)


def test_boxes_from_layout_json_dicts_give_the_same_table():
    maps = np.random.default_rng(1).random((2, SIZE, SIZE))
    a = sal.lead_importance(maps, BOXES)
    b = sal.lead_importance(maps, [box.to_dict() for box in BOXES])
    assert a.equals(b)


def test_time_profile_places_mass_at_the_right_time():
    ii = next(b for b in BOXES if b.lead == "II" and b.x1 - b.x0 == SIZE)  # the rhythm strip
    x = int(round(7.2 * ii.px_per_s))  # a column showing t = 7.2 s
    maps = np.zeros((1, SIZE, SIZE), np.float32)
    maps[0, ii.y0:ii.y1, x] = 1.0
    prof = sal.time_profile(maps, BOXES)
    assert prof["mass_share"].sum() == pytest.approx(1.0)
    hit = prof[prof["mass_share"] > 0]
    assert len(hit) == 1
    row = hit.iloc[0]
    assert row["region"] == "II rhythm" and row["t_start_s"] <= (x + 0.5) / ii.px_per_s < row["t_end_s"]
    assert row["t_start_s"] == 7.0
    # a column box covers only its own 2.5 s: V1 (third column) spans 5.0-7.5 s
    v1 = prof[prof["region"] == "V1"]
    assert v1["t_start_s"].min() == 5.0 and v1["t_end_s"].max() == 7.5


def test_territory_ratio_concentrated_vs_uniform():
    leads = STEMI_TERRITORY_LEADS["inferior"]  # II, III, aVF: includes both lead II boxes
    uniform = np.ones((2, SIZE, SIZE), np.float32)
    np.testing.assert_allclose(sal.territory_ratios(uniform, BOXES, leads), 1.0)
    focused = np.zeros((1, SIZE, SIZE), np.float32)
    for b in BOXES:
        if b.lead in leads:
            focused[0, b.y0:b.y1, b.x0:b.x1] = 1.0
    area = sal.area_shares(BOXES)[[b.lead in leads for b in BOXES]].sum()
    ratio = sal.territory_ratios(focused, BOXES, leads)[0]
    assert ratio == pytest.approx(1.0 / area) and ratio > 1
    # saliency everywhere except the territory: 0
    assert sal.territory_ratios(1.0 - focused, BOXES, leads)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="territory leads"):
        sal.territory_ratios(uniform, BOXES, ["X9"])


def test_figures_are_written(tmp_path, ecg_images):
    maps = sal.saliency_maps(tiny_model("resnet18"), "resnet18", ecg_images[:1])
    p = sal.overlay_figure(ecg_images[0, 0], maps[0], BOXES, tmp_path / "o.png", "title")
    q = sal.lead_time_figure(sal.time_profile(maps, BOXES), tmp_path / "lt.png", "title")
    from PIL import Image

    for path in (p, q):
        with Image.open(path) as im:
            assert im.size[0] > 200 and im.size[1] > 100


def test_cam_resolution_names_the_grid():
    assert sal.cam_resolution(tiny_model("vit_micro_patch8_64"), "vit_micro_patch8_64", (SIZE, SIZE)) == (8, 8)
    # a CNN's last stage is 2x2 at 64 px: the deepest stage with a 4x4 grid is used instead
    assert sal.cam_resolution(tiny_model("resnet18"), "resnet18", (SIZE, SIZE)) == (4, 4)
    assert sal.cam_resolution(tiny_model("efficientnet_b0"), "efficientnet_b0", (SIZE, SIZE)) == (4, 4)
    resnet = tiny_model("resnet18")
    assert sal.cam_target_layers(resnet, "resnet18", (SIZE, SIZE))[0] is resnet.layer3
    assert sal.cam_target_layers(resnet, "resnet18", (224, 224))[0] is resnet.layer4[-1]  # 7x7 already
    assert sal.cam_resolution(resnet, "resnet18", (224, 224)) == (7, 7)


def test_signal_model_attribution_per_lead_and_territory():
    import timm

    from heartbeit.data.leads import LEADS

    torch.manual_seed(0)
    model = timm.create_model("signal_xresnet1d_tiny", num_classes=2).eval()
    waves = np.stack([simulate_ecg(s, fs=100, stemi_territory="anterior") for s in (1, 2)]).astype(np.float32)
    attr = sal.signal_attributions(model, waves, batch_size=1)
    assert attr.shape == waves.shape and (attr >= 0).all() and attr.sum() > 0
    np.testing.assert_allclose(attr, sal.signal_attributions(model, waves), rtol=1e-4, atol=1e-7)  # batch-size free
    assert not model.training and all(p.grad is None for p in model.parameters())
    imp = sal.signal_lead_importance(attr)
    assert list(imp["lead"]) == list(LEADS) and imp["mass_share"].sum() == pytest.approx(1.0)
    # chance is a uniform spread over the 12 leads; mass on the territory's leads only gives 12 / k
    uniform = np.ones((3, 12, 50))
    np.testing.assert_allclose(sal.signal_territory_ratios(uniform, ["V1", "V2", "V3", "V4"]), 1.0)
    focused = np.zeros((1, 12, 50))
    focused[0, [LEADS.index(x) for x in ("II", "III", "aVF")]] = 1.0
    np.testing.assert_allclose(sal.signal_territory_ratios(focused, ["II", "III", "aVF"]), 4.0)
    assert np.isnan(sal.signal_territory_ratios(np.zeros((1, 12, 50)), ["V1"])).all()
    with pytest.raises(ValueError, match="leads"):
        sal.signal_attributions(model, waves[0])
