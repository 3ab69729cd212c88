"""Check of the converted EfficientNet-Lite0 ImageNet weights: every tensor equal to its source tensor by
the conversion's mapping, and sensible ImageNet predictions on two natural photos that scikit-learn ships
(`sklearn.datasets.load_sample_images`: a Chinese temple and a daisy), so the check runs offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# ImageNet-1k indices the photos should reach in their top 5.
EXPECTED = {
    "china.jpg": {698: "palace", 663: "monastery", 442: "bell cote", 483: "castle", 832: "stupa", 668: "mosque"},
    "flower.jpg": {985: "daisy"},
}


def _photos() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    return {Path(f).name: img for f, img in zip(data.filenames, data.images)}


def _center_crop_224(img: np.ndarray) -> torch.Tensor:
    from PIL import Image

    im = Image.fromarray(img)
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0


def check_lite0(converted: str | Path, source: str | Path | None = None) -> dict:
    """{'ok', 'why', 'tensors', 'tensors_equal', 'top5': {photo: [(index, p), ...]}} for the converted file."""
    import timm
    from safetensors.torch import load_file

    from heartbeit.models.weights import LITE0_ARCH, lite0_mapping, read_state_dict, lite0_source

    converted = Path(converted)
    ours = load_file(str(converted))
    theirs = read_state_dict(source or lite0_source())
    pairs = lite0_mapping(source)
    equal = sum(bool(torch.equal(theirs[k_src].float(), ours[k_dst])) for k_src, k_dst in pairs if k_dst in ours)
    model = timm.create_model(LITE0_ARCH, pretrained=False).eval()
    # strict except for BatchNorm's step counters, which the conversion does not store (they do not affect eval)
    outcome = model.load_state_dict(ours, strict=False)
    stray = [k for k in outcome.missing_keys if not k.endswith("num_batches_tracked")] + list(outcome.unexpected_keys)
    if stray:
        raise ValueError(f"{converted.name} does not match {LITE0_ARCH}: {sorted(stray)[:5]}")
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    top5, why = {}, []
    for name, img in _photos().items():
        x = (_center_crop_224(img) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        with torch.no_grad():
            p = model(x[None]).softmax(1)[0]
        values, indices = p.topk(5)
        top5[name] = [(int(i), float(v)) for i, v in zip(indices, values)]
        if name in EXPECTED and not set(EXPECTED[name]) & {int(i) for i in indices}:
            why.append(f"{name}: top-5 {indices.tolist()} has none of {sorted(EXPECTED[name])}")
    if equal != len(pairs):
        why.append(f"{len(pairs) - equal} tensors differ from the source")
    return {"ok": not why, "why": "; ".join(why), "tensors": len(pairs), "tensors_equal": equal, "top5": top5}
