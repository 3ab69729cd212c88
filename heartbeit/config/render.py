"""Preprocess / render / shard / split settings (`heartbeit render`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .core import ConfigError
from .tasks import TaskSpec, validate_declared


# The image layouts heartbeit/data/render/draw.py draws (its module docstring describes each).
LAYOUTS = ("3x4+II", "3x4", "12x1")


@dataclass
class RenderConfig:
    image_size: int = 224
    layout: str = "3x4+II"  # 3x4+II (clinical, rhythm strip) | 3x4 (no strip: taller rows) | 12x1
    mm_per_mv: float = 10.0  # paper-ECG convention; scaled to pixels by the layout
    grid: bool = False
    bandpass_hz: tuple[float, float] = (0.5, 40.0)
    filter_order: int = 4
    median_windows_s: tuple[float, float] = (0.2, 0.6)
    baseline_fs: float = 50.0  # median baseline computed at ~this rate, interpolated back (0 = full rate)
    resample_hz: int = 0  # 0 = keep the corpus rate
    duration_s: float = 10.0  # seconds shown across the image width (longer records are cropped)
    line_width: float = 0.0  # trace width in pixels; 0 = image_height / 224 (at least 1)
    encoding: str = "png"
    png_level: int = 1
    # The filtered waveform the image is drawn from, also stored per ECG (`<key>.wave.npy`, int16 uV,
    # [12, wave_hz * duration_s]) so a signal-domain model trains on exactly the same ECGs, splits and
    # fractions. 100 Hz keeps the 0.5-40 Hz band (the PTB-XL benchmark's rate); 0 = images only.
    wave_hz: int = 100
    shard_size: int = 1000
    split_seed: int = 42
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.25, 0.5, 1.0])
    # sites held out whole as external test sets (the synthetic default's external sites)
    external_sites: list[str] = field(default_factory=lambda: ["hosp_ext", "ptbxl_like"])
    workers: int = 0
    shard_seed: int = 0  # order of samples within a split's shards (a keyed hash of the ECG id)
    # Your own binary tasks, labelled into the shards beside the paper's three: name -> {column, positive}
    # (heartbeit/config/tasks.py). Train them by listing them in matrix.tasks.
    tasks: dict[str, TaskSpec] = field(default_factory=dict)

    def validate(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if not 1.0 <= self.mm_per_mv <= 100.0:
            raise ConfigError(f"mm_per_mv must be in [1, 100], got {self.mm_per_mv}")
        if not 0 < self.val_fraction + self.test_fraction < 1:
            raise ConfigError("val_fraction + test_fraction must be in (0, 1)")
        if sorted(self.fractions) != list(self.fractions) or not all(0 < f <= 1 for f in self.fractions):
            raise ConfigError("fractions must be increasing values in (0, 1]")
        if self.encoding not in ("png", "npy"):
            raise ConfigError(f"encoding must be 'png' or 'npy', got {self.encoding!r}")
        if not 0 <= self.png_level <= 9:
            raise ConfigError(f"png_level must be in 0..9, got {self.png_level}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16, got {self.image_size}")
        if self.wave_hz < 0 or (self.wave_hz and self.wave_hz < 2 * self.bandpass_hz[1]):
            raise ConfigError(f"wave_hz must be 0 (no waveforms) or >= twice the band-pass high edge "
                              f"({2 * self.bandpass_hz[1]:g} Hz), got {self.wave_hz}")
        if self.shard_size < 1:
            raise ConfigError("shard_size must be >= 1")
        validate_declared(self.tasks)
