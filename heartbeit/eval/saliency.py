"""Where a model looks on the ECG image: Grad-CAM (all four image families) and FullGrad (CNNs), mapped
back to lead and time through the renderer's lead boxes.

Maps. `saliency_maps` returns one map per image in [0, 1] (pytorch-grad-cam scales each map by its own
min and max, so maps show *where* within an image, not how strongly across images). Target layers:
- HeartBEiT / ViT (timm Beit / VisionTransformer): the first norm of the last block, whose tokens still
  receive gradient through the last attention whatever the pooling (a cls-token ViT passes gradient only
  to the cls token at the last block's output); `token_reshape_transform` drops the prefix (cls/register)
  tokens and folds the patch tokens back onto the model's patch grid;
- ResNet: the last residual block; EfficientNet: the head's final BN+activation (`bn2`); any other timm
  CNN: the module of its last `feature_info` entry. Unless that map is coarser than MIN_CAM_GRID cells a
  side at the run's image size: then the deepest feature stage (timm `feature_info`) that still has that
  grid. At 224 px nothing changes (7x7); at 64 px a ResNet's last stage is 2x2 -- one cell spans several
  lead rows, so Grad-CAM could not say which lead it saw -- and layer3 (4x4) is used instead.
FullGrad uses every Conv2d/BatchNorm2d bias (pytorch-grad-cam), so it is defined for CNNs only; asking it
of a transformer is an error.

Regions. The 3x4+II layout draws lead II twice: its 2.5 s column box and the 10 s rhythm strip. They are
kept apart as regions "II" and "II rhythm" (the strip shows other times and four times the area); the
`lead` column of every table names the lead, so a per-lead total is `df.groupby("lead").mass_share.sum()`.

Mass. A map's saliency mass is its sum over pixels inside lead boxes; a region's share is its mass over
the image's total (shares of an image sum to 1; an all-zero map has no shares and is left out of the
means, its count reported). Chance is a uniform map, whose share of a region is the region's area share;
`enrichment` = mass share / area share, so > 1 means the model looks at the region more than chance.

Territory (synthetic STEMI, where the injured territory is known): the share of mass in every box that
draws one of the territory's leads (both lead II boxes for an inferior STEMI) over those boxes' area
share. A uniform map gives exactly 1; > 1 means the model looks at the injured territory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from heartbeit.data.render.draw import LeadBox

METHODS = ("gradcam", "fullgrad")
TIME_BIN_S = 0.5
RHYTHM_SUFFIX = " rhythm"


# --------------------------------------------------------------------------------------------- models


def is_token_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


def token_reshape_transform(model: torch.nn.Module):
    """[B, prefix + gh*gw, D] tokens -> [B, D, gh, gw] (prefix = cls and any register tokens)."""
    gh, gw = (int(v) for v in model.patch_embed.grid_size)

    def transform(tokens: torch.Tensor) -> torch.Tensor:
        prefix = tokens.shape[1] - gh * gw
        if tokens.dim() != 3 or prefix < 0:
            raise ValueError(f"token tensor {tuple(tokens.shape)} does not hold a {gh}x{gw} patch grid")
        grid = tokens[:, prefix:, :].reshape(tokens.shape[0], gh, gw, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return transform


MIN_CAM_GRID = 4  # Grad-CAM cells per side at least, where the CNN has a stage that fine


def cam_target_layers(model: torch.nn.Module, arch: str = "",
                      size: tuple[int, int] | None = None) -> list[torch.nn.Module]:
    """The layer whose activations Grad-CAM weighs (see the module note); `size` = the input (H, W)."""
    if is_token_model(model):
        last = model.blocks[-1]
        return [last.norm1 if hasattr(last, "norm1") else last]
    info = getattr(model, "feature_info", None)
    if size is not None and info:
        fine = [e for e in info if min(size) // int(e["reduction"]) >= MIN_CAM_GRID]
        if fine and fine[-1]["reduction"] < info[-1]["reduction"]:
            return [model.get_submodule(fine[-1]["module"])]
    if hasattr(model, "layer4"):  # ResNet family
        return [model.layer4[-1]]
    if hasattr(model, "bn2") and hasattr(model, "conv_head"):  # EfficientNet / MobileNet family
        return [model.bn2]
    info = getattr(model, "feature_info", None)
    if info:
        return [model.get_submodule(info[-1]["module"])]
    raise ValueError(f"{arch or type(model).__name__}: no known Grad-CAM target layer")


def cam_resolution(model: torch.nn.Module, arch: str, size: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) grid Grad-CAM sees at this input size (7x7 for a ResNet at 224 px, 14x14 for a
    patch-16 ViT): detail finer than one grid cell is interpolation, not evidence."""
    if is_token_model(model):
        return tuple(int(v) for v in model.patch_embed.grid_size)
    shape = {}

    def record(module, inputs, output) -> None:  # returning None keeps the output unchanged
        shape["s"] = output.shape

    hook = cam_target_layers(model, arch, size)[0].register_forward_hook(record)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, *size))
    finally:
        hook.remove()
    return int(shape["s"][-2]), int(shape["s"][-1])


def supports_fullgrad(model: torch.nn.Module) -> bool:
    return not is_token_model(model)


def _normalization(arch: str) -> tuple[float, float]:
    from heartbeit.models import zoo

    try:
        return zoo.normalization(arch)
    except Exception:  # an architecture timm has no pretrained config for: the HeartBEiT convention
        return 0.5, 0.5


def saliency_maps(model: torch.nn.Module, arch: str, images, target_class: int = 1, method: str = "gradcam",
                  batch_size: int = 16, mean: float | None = None, std: float | None = None) -> np.ndarray:
    """uint8 images [B, 1, H, W] (or [B, H, W]) -> float32 maps [B, H, W] in [0, 1] for `target_class`.
    Images are normalised as in training: (x / 255 - mean) / std with the architecture's statistics."""
    from pytorch_grad_cam import FullGrad, GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {METHODS}")
    x = torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images shaped [B, 1, H, W], got {tuple(x.shape)}")
    if mean is None or std is None:
        mean, std = _normalization(arch)
    x = (x.float() / 255.0 - mean) / std
    token = is_token_model(model)
    if method == "fullgrad" and token:
        raise ValueError(f"{arch}: FullGrad needs convolution/BatchNorm biases; use Grad-CAM for transformers")
    reshape = token_reshape_transform(model) if token else None
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.enable_grad():
            if method == "gradcam":
                cam = GradCAM(model=model, target_layers=cam_target_layers(model, arch, tuple(x.shape[2:])),
                              reshape_transform=reshape)
            else:
                cam = FullGrad(model=model, target_layers=[], reshape_transform=reshape)
            with cam:
                for start in range(0, len(x), batch_size):
                    part = x[start:start + batch_size]
                    targets = [ClassifierOutputTarget(int(target_class))] * len(part)
                    out.append(np.asarray(cam(input_tensor=part, targets=targets), dtype=np.float32))
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    maps = np.concatenate(out) if out else np.zeros((0, *x.shape[2:]), dtype=np.float32)
    return np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------- lead regions


def as_boxes(boxes: Iterable) -> list[LeadBox]:
    """LeadBox objects from LeadBoxes or their dicts (layout.json's "boxes")."""
    return [b if isinstance(b, LeadBox) else LeadBox(**b) for b in boxes]


def region_names(boxes: Sequence[LeadBox]) -> list[str]:
    """One name per box: the lead, and "<lead> rhythm" for a lead's second box (the 3x4+II strip)."""
    seen: dict[str, int] = {}
    names = []
    for b in boxes:
        k = seen.get(b.lead, 0)
        names.append(b.lead if k == 0 else f"{b.lead}{RHYTHM_SUFFIX}" if k == 1 else f"{b.lead} #{k + 1}")
        seen[b.lead] = k + 1
    return names


def _check_maps(maps, boxes: Sequence[LeadBox]) -> np.ndarray:
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"expected saliency maps [B, H, W], got {m.shape}")
    h = max(b.y1 for b in boxes)
    w = max(b.x1 for b in boxes)
    if m.shape[1] < h or m.shape[2] < w:
        raise ValueError(f"saliency maps {m.shape[1:]} are smaller than the layout ({h}, {w})")
    if (m < 0).any() or not np.isfinite(m).all():
        raise ValueError("saliency maps must be finite and non-negative")
    return m


def region_masses(maps, boxes) -> np.ndarray:
    """[B, regions] share of each image's in-box saliency mass per box; NaN rows for all-zero maps."""
    boxes = as_boxes(boxes)
    m = _check_maps(maps, boxes)
    mass = np.stack([m[:, b.y0:b.y1, b.x0:b.x1].sum(axis=(1, 2)) for b in boxes], axis=1)
    total = mass.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, mass / np.where(total > 0, total, 1.0), np.nan)


def area_shares(boxes) -> np.ndarray:
    boxes = as_boxes(boxes)
    area = np.array([(b.x1 - b.x0) * (b.y1 - b.y0) for b in boxes], dtype=np.float64)
    return area / area.sum()


def lead_importance(maps, boxes) -> pd.DataFrame:
    """One row per lead region (layout order): region, lead, pixel box, time window, area_share,
    mass_share (mean over images; sums to 1), mass_sd, enrichment (mass / area share), n_images."""
    boxes = as_boxes(boxes)
    shares = region_masses(maps, boxes)
    valid = ~np.isnan(shares).any(axis=1)
    v = shares[valid]
    area = area_shares(boxes)
    mean = v.mean(axis=0) if len(v) else np.full(len(boxes), np.nan)
    sd = v.std(axis=0, ddof=1) if len(v) > 1 else np.full(len(boxes), np.nan)
    rows = []
    for i, (name, b) in enumerate(zip(region_names(boxes), boxes)):
        rows.append({"region": name, "lead": b.lead, "x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1,
                     "t0_s": round(b.t0, 4), "t1_s": round(b.t1, 4), "area_share": float(area[i]),
                     "mass_share": float(mean[i]), "mass_sd": float(sd[i]),
                     "enrichment": float(mean[i] / area[i]), "n_images": int(valid.sum()),
                     "n_zero_maps": int((~valid).sum())})
    return pd.DataFrame(rows)


def per_lead(importance: pd.DataFrame) -> pd.DataFrame:
    """Regions summed into the 12 leads (lead II = its column box + the rhythm strip)."""
    g = importance.groupby("lead", sort=False)[["area_share", "mass_share"]].sum().reset_index()
    g["enrichment"] = g["mass_share"] / g["area_share"]
    return g


def time_profile(maps, boxes, bin_s: float = TIME_BIN_S) -> pd.DataFrame:
    """Saliency mass per region and time bin: region, lead, t_start_s, t_end_s, mass_share (mean over
    images; all rows sum to 1). A pixel column x of a box shows times [x, x+1) / px_per_s of the record;
    it is counted in the bin holding its centre time."""
    boxes = as_boxes(boxes)
    m = _check_maps(maps, boxes)
    total = np.stack([m[:, b.y0:b.y1, b.x0:b.x1].sum(axis=(1, 2)) for b in boxes], axis=1).sum(axis=1)
    valid = total > 0
    m, total = m[valid], total[valid]
    rows = []
    for name, b in zip(region_names(boxes), boxes):
        cols = m[:, b.y0:b.y1, b.x0:b.x1].sum(axis=1) / total[:, None] if len(m) else np.zeros((0, b.x1 - b.x0))
        centre = (np.arange(b.x0, b.x1) + 0.5) / b.px_per_s
        bins = np.floor(centre / bin_s + 1e-9).astype(int)
        for k in np.unique(bins):
            share = cols[:, bins == k].sum(axis=1)
            rows.append({"region": name, "lead": b.lead, "t_start_s": round(k * bin_s, 6),
                         "t_end_s": round((k + 1) * bin_s, 6),
                         "mass_share": float(share.mean()) if len(share) else float("nan"),
                         "n_images": int(len(share))})
    return pd.DataFrame(rows)


def territory_ratios(maps, boxes, territory_leads: Iterable[str]) -> np.ndarray:
    """Per image: the saliency mass share of every box drawing a territory lead over those boxes' area
    share (1 = chance, a uniform map; > 1 = attention on the territory). NaN for all-zero maps."""
    boxes = as_boxes(boxes)
    leads = set(territory_leads)
    inside = np.array([b.lead in leads for b in boxes])
    if not inside.any():
        raise ValueError(f"no lead box draws any of the territory leads {sorted(leads)}")
    shares = region_masses(maps, boxes)
    return shares[:, inside].sum(axis=1) / area_shares(boxes)[inside].sum()


# ------------------------------------------------------------------------------- signal-domain models


def signal_attributions(model: torch.nn.Module, waves, target_class: int = 1, batch_size: int = 32) -> np.ndarray:
    """|input x gradient| of the class logit for waveform models: float32 [N, 12, L] >= 0 for waves
    [N, 12, L] in mV. Grad-CAM needs an image's spatial grid; a waveform's leads are its input channels, so
    the attribution is read per lead directly (no layout to map back through)."""
    x = torch.as_tensor(np.asarray(waves, dtype=np.float32))
    if x.dim() != 3:
        raise ValueError(f"expected waveforms shaped [N, leads, samples], got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            part = x[start:start + batch_size].clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(part)
                grad, = torch.autograd.grad(logits[:, int(target_class)].sum(), part)
            out.append((part.detach() * grad).abs().numpy())
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return np.concatenate(out) if out else np.zeros((0, *x.shape[1:]), np.float32)


def _lead_shares(attr: np.ndarray) -> np.ndarray:
    """[N, 12] share of each ECG's attribution per lead (NaN rows for an all-zero attribution)."""
    per_lead = np.asarray(attr, dtype=np.float64).sum(axis=2)
    total = per_lead.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, per_lead / total, np.nan)


def signal_lead_importance(attr: np.ndarray) -> pd.DataFrame:
    """The `lead_importance` table for waveform attributions: one region per lead, chance = 1/12 each."""
    from heartbeit.data.leads import LEADS

    shares = _lead_shares(attr)
    valid = ~np.isnan(shares).any(axis=1)
    v = shares[valid]
    mean = v.mean(axis=0) if len(v) else np.full(len(LEADS), np.nan)
    sd = v.std(axis=0, ddof=1) if len(v) > 1 else np.full(len(LEADS), np.nan)
    area = 1.0 / len(LEADS)
    return pd.DataFrame([{"region": lead, "lead": lead, "area_share": area, "mass_share": float(mean[i]),
                          "mass_sd": float(sd[i]), "enrichment": float(mean[i] / area), "n_images": int(valid.sum()),
                          "n_zero_maps": int((~valid).sum())} for i, lead in enumerate(LEADS)])


def signal_territory_ratios(attr: np.ndarray, territory_leads: Iterable[str]) -> np.ndarray:
    """Per ECG: the attribution share of the territory's leads over their share of the 12 leads (1 = chance)."""
    from heartbeit.data.leads import LEADS

    inside = np.array([lead in set(territory_leads) for lead in LEADS])
    if not inside.any():
        raise ValueError(f"no lead of {sorted(territory_leads)} is one of the 12 leads")
    return _lead_shares(attr)[:, inside].sum(axis=1) / (inside.sum() / len(LEADS))


# ------------------------------------------------------------------------------------------- figures


def _time_ticks(ax, boxes: Sequence[LeadBox], width: int) -> None:
    px_per_s = boxes[0].px_per_s
    seconds = np.arange(0, width / px_per_s + 1e-9, 1.0 if width / px_per_s <= 12 else 2.0)
    ax.set_xticks(seconds * px_per_s - 0.5, [f"{s:g}" for s in seconds])


def overlay_figure(image: np.ndarray, saliency: np.ndarray, boxes, path: str | Path, title: str,
                   method_label: str = "Grad-CAM") -> Path:
    """The ECG image in grey with the saliency map over it, every lead box outlined and named; x axis in
    seconds of the record (each 3x4 column shows its own 2.5 s)."""
    from matplotlib.figure import Figure

    from .plots import save_png

    boxes = as_boxes(boxes)
    h, w = image.shape
    scale = max(1.0, 512 / w)
    fig = Figure(figsize=(w * scale / 80 + 1.6, h * scale / 80 + 1.0))
    ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    heat = ax.imshow(saliency, cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
    for name, b in zip(region_names(boxes), boxes):
        ax.add_patch(_rect(b))
        ax.text(b.x0 + 0.6, b.y0 + 0.6, name, color="white", fontsize=7, va="top", ha="left",
                bbox=dict(boxstyle="square,pad=0.1", fc="black", alpha=0.55, lw=0))
    _time_ticks(ax, boxes, w)
    ax.set_yticks([])
    ax.set_xlabel("Time in the record (s)")
    ax.set_ylabel("Lead rows (see box labels)")
    ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(heat, ax=ax, fraction=0.035, pad=0.02)
    cbar.set_label(f"{method_label} saliency (0–1, scaled per image)")
    return save_png(fig, path)


def _rect(b: LeadBox):
    from matplotlib.patches import Rectangle

    return Rectangle((b.x0 - 0.5, b.y0 - 0.5), b.x1 - b.x0, b.y1 - b.y0, fill=False, ec="white", lw=0.6, alpha=0.8)


def lead_time_figure(profile: pd.DataFrame, path: str | Path, title: str) -> Path | None:
    """Heat map of saliency mass share by lead region (rows, layout order) and 0.5 s time bin (columns);
    blank where a region does not show that time."""
    from matplotlib.figure import Figure

    from .plots import save_png

    if profile.empty:
        return None
    regions = list(dict.fromkeys(profile["region"]))
    starts = sorted(profile["t_start_s"].unique())
    grid = np.full((len(regions), len(starts)), np.nan)
    col = {t: j for j, t in enumerate(starts)}
    row = {r: i for i, r in enumerate(regions)}
    for r in profile.itertuples(index=False):
        grid[row[r.region], col[r.t_start_s]] = r.mass_share * 100
    bin_s = float(profile["t_end_s"].iloc[0] - profile["t_start_s"].iloc[0])
    fig = Figure(figsize=(max(6.0, 0.35 * len(starts) + 2.5), 0.32 * len(regions) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="magma_r", interpolation="nearest",
                   extent=(starts[0], starts[-1] + bin_s, len(regions) - 0.5, -0.5))
    ax.set_yticks(range(len(regions)), regions)
    ax.set_xlabel(f"Time in the record (s), {bin_s:g} s bins")
    ax.set_ylabel("Lead region")
    ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cbar.set_label("Share of saliency mass (%)")
    return save_png(fig, path)
