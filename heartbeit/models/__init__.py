"""Models: importing this package registers the HeartBEiT architectures (and the same-size ViT baselines)
with timm, so `timm.create_model("heartbeit_base_patch16_224", ...)` works afterwards."""
from . import heartbeit as _heartbeit  # noqa: F401  (registration side effect)
