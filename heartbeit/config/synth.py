"""Synthetic 12-lead ECG generator settings (`heartbeit synth`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .core import ConfigError


@dataclass
class SiteSpec:
    """One acquisition site: its device profile and export format."""

    name: str
    format: str = "muse"  # muse | wfdb | npz
    fs: int = 500
    external: bool = False
    share: float = 0.25  # share of patients from this site
    gain_uv_per_bit: float = 4.88
    noise_mv: float = 0.02
    wander_mv: float = 0.15
    powerline_hz: float = 60.0
    powerline_mv: float = 0.02
    device: str = "MAC5500"
    units: str = "mV"  # npz sites only: "mV" or "uV" (MUSE stores microvolts, WFDB millivolts)


def default_sites() -> list[SiteSpec]:
    return [
        SiteSpec("hosp_a", "muse", 500, False, 0.45, 4.88, 0.015, 0.15, 60.0, 0.01, "MAC5500"),
        SiteSpec("hosp_b", "muse", 250, False, 0.20, 4.88, 0.025, 0.25, 60.0, 0.03, "MAC1600"),
        SiteSpec("hosp_b_arrays", "npz", 1000, False, 0.10, 1.0, 0.02, 0.20, 60.0, 0.02, "CardioSoft", "uV"),
        SiteSpec("hosp_ext", "muse", 1000, True, 0.15, 4.88, 0.03, 0.30, 60.0, 0.03, "MAC2000"),
        SiteSpec("ptbxl_like", "wfdb", 500, True, 0.10, 1.0, 0.02, 0.20, 50.0, 0.02, "CS-12"),
    ]


@dataclass
class SynthConfig:
    n_patients: int = 200
    ecgs_per_patient_max: int = 3  # each patient has 1..max ECGs
    seed: int = 0
    duration_s: float = 10.0
    prevalence_lvef_le40: float = 0.15
    prevalence_hcm: float = 0.05
    prevalence_stemi: float = 0.05
    severity_min: float = 0.3  # effects graded by a per-ECG severity in [min, 1]
    # STEMI only: the smallest mean ST elevation over the territory's leads (0 = graded by severity alone;
    # 0.1 = the clinical STEMI criterion of >= 1 mm in contiguous leads)
    stemi_st_min_mv: float = 0.0
    broken_fraction: float = 0.02
    missing_label_fraction: float = 0.08  # share of labels.csv cells left blank (label not recorded)
    workers: int = 0  # 0 = all cores
    sites: list[SiteSpec] = field(default_factory=default_sites)

    def validate(self) -> None:
        if self.n_patients < 1:
            raise ConfigError("n_patients must be >= 1")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.ecgs_per_patient_max < 1:
            raise ConfigError("ecgs_per_patient_max must be >= 1")
        if self.duration_s <= 0:
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s}")
        if not 0.0 <= self.stemi_st_min_mv <= 1.0:
            raise ConfigError(f"stemi_st_min_mv must be in [0, 1] mV, got {self.stemi_st_min_mv}")
        if not 0.0 <= self.severity_min <= 1.0:
            raise ConfigError(f"severity_min must be in [0, 1], got {self.severity_min}")
        for name in ("prevalence_lvef_le40", "prevalence_hcm", "prevalence_stemi", "broken_fraction",
                     "missing_label_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {v}")
        if not self.sites:
            raise ConfigError("sites must list at least one site")
        for s in self.sites:
            if s.format not in ("muse", "wfdb", "npz"):
                raise ConfigError(f"sites: {s.name}: format must be muse, wfdb or npz, got {s.format!r}")
            if s.units not in ("mV", "uV"):
                raise ConfigError(f"sites: {s.name}: units must be mV or uV, got {s.units!r}")
            if s.fs < 50 or s.gain_uv_per_bit <= 0 or s.share < 0:
                raise ConfigError(f"sites: {s.name}: need fs >= 50, gain_uv_per_bit > 0 and share >= 0")
            if not s.name or not all(c.isalnum() or c in "_-" for c in s.name):
                raise ConfigError(f"sites: site name {s.name!r} must be letters, digits, '_' or '-' (it names a folder)")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ConfigError(f"sites: site names must be unique, got {names}")
        if sum(s.share for s in self.sites) <= 0:
            raise ConfigError("sites: shares must sum to more than 0")
