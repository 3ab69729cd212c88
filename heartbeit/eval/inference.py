"""A finished cell's model, rebuilt for the report: its selected weights in the matrix's own classifier
(heartbeit.models.zoo.build_classifier, the builder fine-tuning uses), and its scores on ECGs read back
from the shards or drawn for the territory analysis."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .report_inputs import MODEL_FILE


def load_cell_model(cell_dir: str | Path, arch: str, img_size: int):
    """The cell's selected weights in a freshly built timm model (safetensors: nothing is unpickled)."""
    from safetensors.torch import load_file

    from heartbeit.models.zoo import build_classifier

    path = Path(cell_dir) / MODEL_FILE
    model = build_classifier(arch, num_classes=2, img_size=img_size)
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load the weights into {arch} ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from exc
    return model.eval()


def predict(model, arch: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(class 1) for uint8 images [N, H, W], or float mV waveforms [N, 12, L] for a signal model."""
    import torch

    from heartbeit.models.families import is_signal_arch

    from .saliency import _normalization

    mean, std = _normalization(arch)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start:start + batch_size])
            x = x.float() if is_signal_arch(arch) else x[:, None].float() / 255.0
            out.append(torch.softmax(model((x - mean) / std).float(), dim=1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)
