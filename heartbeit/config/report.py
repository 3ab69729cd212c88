"""Results / report settings (`heartbeit report`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportConfig:
    bootstrap: int = 2000
    ci: float = 0.95
    seed: int = 0
    saliency_samples: int = 8
    wasserstein_pairs: int = 200
