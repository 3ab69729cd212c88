"""Models: importing this package registers the HeartBEiT architectures (and the same-size ViT baselines)
and the signal-domain baseline (signal_xresnet1d_*) with timm, so
`timm.create_model("heartbeit_base_patch16_224", ...)` works afterwards."""
from . import heartbeit as _heartbeit  # noqa: F401  (registration side effect)
from . import signal1d as _signal1d  # noqa: F401  (registration side effect)
