"""Results / report settings (`heartbeit report`)."""
from __future__ import annotations

from dataclasses import dataclass

from .core import ConfigError


@dataclass
class ReportConfig:
    bootstrap: int = 2000  # AUPRC bootstrap resamples
    ci: float = 0.95
    seed: int = 0  # bootstrap, sampling of ECGs for saliency / Wasserstein, synthetic STEMI ECGs
    min_n: int = 10  # fewer ECGs than this: metric is NaN with a reason
    min_per_class: int = 10  # subgroups with fewer positives or negatives are flagged "too small"
    # `heartbeit export`: counts below this are published as "< k" in a model folder (config.json, card), and
    # a count, rate or AUROC that would give one away is withheld (heartbeit/modelschema.py)
    export_min_count: int = 10
    ece_bins: int = 10
    workers: int = 1  # processes scoring cells (the output is the same bytes for any count)
    # saliency
    saliency_samples: int = 8  # overlays drawn per task x model (positives of the saliency split)
    saliency_lead_samples: int = 32  # positives per task behind the per-lead table
    saliency_split: str = "test"
    fullgrad: bool = True  # also FullGrad for the CNNs
    saliency_batch: int = 16
    territory_samples: int = 8  # synthetic STEMI ECGs per territory for the territory ratio
    territory_severity: float = 1.0
    # modality distance
    wasserstein_pairs: int = 200
    wasserstein_images: int = 100  # ECG images sampled from the shards (and as many natural patches)
    wasserstein_patch: int = 16
    natural_images_dir: str = ""  # empty = crops of scikit-learn's bundled photographs
    # The measured AUROC spread over training seeds (bench/seed_spread.py's record): paired differences no
    # larger than it are marked "within training noise" whatever their p-value. Empty = not marked.
    seed_spread_file: str = ""

    def validate(self) -> None:
        if not 0 < self.ci < 1:
            raise ConfigError(f"report.ci must be in (0, 1), got {self.ci}")
        for name in ("bootstrap", "min_n", "min_per_class", "export_min_count", "ece_bins", "saliency_batch", "wasserstein_patch",
                     "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"report.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("saliency_samples", "saliency_lead_samples", "territory_samples", "wasserstein_pairs",
                     "wasserstein_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"report.{name} must be >= 0, got {getattr(self, name)}")
        if self.export_min_count > 1000:
            raise ConfigError(f"report.export_min_count must be <= 1000, got {self.export_min_count}")
        if self.wasserstein_images == 1:
            raise ConfigError("report.wasserstein_images must be 0 (off) or >= 2 (pairs need two images)")
        if self.saliency_split not in ("train", "val", "test", "external"):
            raise ConfigError(f"report.saliency_split must be train, val, test or external, got {self.saliency_split!r}")
        if self.territory_severity <= 0:
            raise ConfigError(f"report.territory_severity must be > 0, got {self.territory_severity}")
