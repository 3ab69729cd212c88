"""Ingest settings (`heartbeit ingest`)."""
from __future__ import annotations

from dataclasses import dataclass

from .core import ConfigError


@dataclass
class IngestConfig:
    corpus_fs: int = 500  # accepted records are resampled to this rate
    duration_s: float = 10.0  # records are cropped to this length (shorter than min_duration_s: rejected)
    min_duration_s: float = 8.0
    label_key: str = "accession"  # column of the labels CSV joined to each record's key
    key_file: str = ""  # HMAC key for patient ids; "" = <workdir>/secret/deid.key (created 0600)
    date_policy: str = "year"  # year | shift
    waveform: str = "Rhythm"  # MUSE waveform type for the corpus
    shard_size: int = 1000
    workers: int = 0  # 0 = all cores

    def validate(self) -> None:
        if self.date_policy not in ("year", "shift"):
            raise ConfigError(f"date_policy must be 'year' or 'shift', got {self.date_policy!r}")
        if self.min_duration_s > self.duration_s:
            raise ConfigError("min_duration_s must be <= duration_s")
