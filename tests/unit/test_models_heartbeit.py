"""HeartBEiT in timm: sizes, the MIM head, export round trips, the fine-tuning zoo, FLOP counting."""
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import heartbeit.models  # noqa: F401  (registers the architectures)
from heartbeit.models import zoo
from heartbeit.models.heartbeit import create_mim_model, export_backbone


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_size_in_range():
    with torch.device("meta"):  # counting needs no memory or init
        backbone = timm.create_model("heartbeit_base_patch16_224")
        mim = create_mim_model("heartbeit_base_patch16_224", vocab_size=8192)
    assert 80e6 <= n_params(backbone) <= 100e6
    assert 80e6 <= n_params(mim) <= 100e6
    assert len(backbone.blocks) == 12 and backbone.embed_dim == 768
    assert backbone.blocks[0].attn.num_heads == 12
    assert backbone.patch_embed.proj.in_channels == 1
    assert backbone.pretrained_cfg["mean"] == (0.5,) and backbone.pretrained_cfg["std"] == (0.5,)


@pytest.mark.parametrize("name,grid,depth,width", [("heartbeit_tiny_patch8_112", 14, 4, 192),
                                                   ("heartbeit_micro_patch8_64", 8, 2, 64)])
def test_small_variants_and_same_size_baselines(name, grid, depth, width):
    with torch.device("meta"):
        hb = timm.create_model(name)
        vit = timm.create_model(name.replace("heartbeit_", "vit_"))
    assert hb.patch_embed.grid_size == (grid, grid) and len(hb.blocks) == depth and hb.embed_dim == width
    assert {k: v.shape for k, v in hb.state_dict().items()} == {k: v.shape for k, v in vit.state_dict().items()}


def test_mim_forward_masked_positions_only():
    torch.manual_seed(0)
    model = create_mim_model("heartbeit_micro_patch8_64", vocab_size=32).eval()
    x = torch.randn(3, 1, 64, 64)
    mask = torch.zeros(3, 64, dtype=torch.bool)
    mask[0, :5] = True
    mask[1, 10:20] = True
    mask[2, 60:] = True
    logits = model(x, mask)  # forward(x, mask) routes to forward_mim (so wrappers see the pass)
    assert logits.shape == (5 + 10 + 4, 32)
    assert torch.equal(logits, model.forward_mim(x, mask))
    # the mask token really replaces the input: a masked patch's content cannot change the logits there
    x2 = x.clone()
    x2[0, :, :8, :8] += 5.0  # patch 0 of image 0 is masked
    assert torch.allclose(model.forward_features_mim(x2, mask)[0, 0], model.forward_features_mim(x, mask)[0, 0])
    assert model.rel_pos_bias is not None  # pretraining shares one relative position bias (BEiT)
    assert "mask_token" in model.no_weight_decay()


@pytest.mark.parametrize("name,size", [("heartbeit_micro_patch8_64", 64), ("heartbeit_base_patch16_224", 224)])
def test_export_round_trips_into_timm(tmp_path, name, size):
    torch.manual_seed(0)
    if name.endswith("224"):  # no init for 86 M parameters: allocate only, values are whatever memory held
        with torch.device("meta"):
            mim = create_mim_model(name, vocab_size=8192)
        mim = mim.to_empty(device="cpu")
        with torch.no_grad():
            for p in mim.parameters():
                p.normal_(0, 0.02)
    else:
        mim = create_mim_model(name, vocab_size=64)
    exported = export_backbone(mim.state_dict(), depth=len(mim.blocks))
    assert not any(k.startswith(("mask_token", "lm_head", "head.", "rel_pos_bias")) for k in exported)
    assert all(v.dtype == torch.float32 for v in exported.values())
    path = tmp_path / "export.safetensors"
    save_file(exported, str(path))

    clf = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=2)
    result = clf.load_state_dict(load_file(str(path)), strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == ["head.bias", "head.weight"]
    sd = clf.state_dict()
    assert torch.equal(sd["blocks.0.attn.qkv.weight"], mim.state_dict()["blocks.0.attn.qkv.weight"])
    shared = mim.state_dict()["rel_pos_bias.relative_position_bias_table"]
    for i in range(len(clf.blocks)):  # the shared pretraining bias becomes every layer's own copy
        assert torch.equal(sd[f"blocks.{i}.attn.relative_position_bias_table"], shared)
    clf.eval()
    with torch.no_grad():
        out = clf(torch.randn(1, 1, size, size))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    mim = create_mim_model("heartbeit_micro_patch8_64", vocab_size=16)
    path = tmp_path / "micro.safetensors"
    exported = export_backbone(mim.state_dict(), depth=2)
    del exported["blocks.1.mlp.fc2.weight"]
    save_file(exported, str(path))
    with pytest.raises(RuntimeError, match="missing backbone keys"):
        timm.create_model("heartbeit_micro_patch8_64", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          num_classes=2)


def test_zoo_init_kinds_and_normalization(tmp_path):
    mim = create_mim_model("heartbeit_micro_patch8_64", vocab_size=16)
    export = tmp_path / "heartbeit-micro_patch8_64.safetensors"
    save_file(export_backbone(mim.state_dict(), depth=2), str(export))
    x = torch.zeros(2, 1, 64, 64)

    model, loaded = zoo.create_classifier("heartbeit_micro_patch8_64", img_size=64, pretrained_file=str(export))
    assert loaded.kind == "pretrained" and model(x).shape == (2, 2)
    assert loaded.new_tensors == ["head.bias", "head.weight"] and loaded.tensors_loaded == loaded.tensors_in_model - 2
    with pytest.raises(ValueError, match="pretraining export"):
        zoo.create_classifier("heartbeit_micro_patch8_64", img_size=64)

    model, loaded = zoo.create_classifier("vit_micro_patch8_64", img_size=64, imagenet_weights_dir=str(tmp_path))
    assert loaded.kind == "random" and model(x).shape == (2, 2)

    weights_dir = tmp_path / "imagenet"
    weights_dir.mkdir()
    rgb = timm.create_model("resnet18", num_classes=1000).state_dict()  # a stand-in for local ImageNet weights
    save_file(rgb, str(weights_dir / "resnet18.safetensors"))
    model, loaded = zoo.create_classifier("resnet18", img_size=64, imagenet_weights_dir=str(weights_dir))
    assert loaded.kind == "imagenet" and model(x).shape == (2, 2) and loaded.new_tensors == ["fc.bias", "fc.weight"]
    # the RGB stem was folded into one channel, not re-initialised
    assert torch.allclose(model.conv1.weight, rgb["conv1.weight"].sum(1, keepdim=True))
    model, loaded = zoo.create_classifier("efficientnet_b0", img_size=64)
    assert loaded.kind == "random" and model(x).shape == (2, 2)

    assert zoo.normalization("heartbeit_base_patch16_224") == (0.5, 0.5)
    assert zoo.normalization("vit_micro_patch8_64") == (0.5, 0.5)
    mean, std = zoo.normalization("resnet18")
    assert mean == pytest.approx((0.485 + 0.456 + 0.406) / 3) and std == pytest.approx((0.229 + 0.224 + 0.225) / 3)


def test_flops_match_the_known_vit_b16_count():
    from heartbeit.train.flops import mim_forward_flops, mim_train_flops_per_image

    fwd = mim_forward_flops("heartbeit_base_patch16_224", 224, 8192, 75)
    lm_head = 2 * 75 * 768 * 8192
    # ViT-B/16 at 224: 17.6 GMACs = 35.2 GFLOPs (the published count); BEiT adds the relative position bias only
    assert fwd - lm_head == pytest.approx(35.2e9, rel=0.03)
    assert mim_train_flops_per_image("heartbeit_base_patch16_224", 224, 8192, 75) == pytest.approx(3 * fwd)
