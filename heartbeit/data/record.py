"""The canonical ECG record every reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heartbeit.data.leads import LEADS


@dataclass
class ECGRecord:
    """12 leads in LEADS order, float32 millivolts, shape [12, n].

    `meta` holds source metadata. Inside ingest it may still carry identifiers (under the keys listed in
    `IDENTIFIER_KEYS`); de-identification strips them before anything is written."""

    signals: np.ndarray
    fs: float
    source_format: str  # muse | wfdb | npz | npy | mat
    source_path: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.signals.shape[1] / self.fs

    @property
    def leads(self) -> tuple[str, ...]:
        return LEADS


# Metadata keys readers use for identifiers; deid.py removes or transforms every one of them.
IDENTIFIER_KEYS = (
    "patient_id", "mrn", "accession", "record", "first_name", "last_name", "birth_date", "order_number",
    "cart_number", "device_serial", "operator", "physician", "location_name", "acquisition_datetime",
)
