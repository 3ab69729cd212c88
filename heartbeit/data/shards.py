"""Deprecated module name, kept so existing imports keep working: `data/shards.py` was the render stage under
the name of a format. The stage is heartbeit.data.render_stage; member names and the encoding of images and
waveforms are heartbeit.data.shard_format."""
from __future__ import annotations

import warnings

from .render_stage import *  # noqa: F401,F403
from .render_stage import _render_shard_star  # noqa: F401
from .shard_format import *  # noqa: F401,F403

warnings.warn("heartbeit.data.shards is deprecated: import heartbeit.data.render_stage (the render stage) or "
              "heartbeit.data.shard_format (member names, image and waveform encoding)", DeprecationWarning,
              stacklevel=2)
