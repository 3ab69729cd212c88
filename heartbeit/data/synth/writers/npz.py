"""Array export: `<accession>.npz` (key `signals`, float32 [12, n] in the site's units, LEADS order) plus a
`<accession>.json` sidecar with fs, units, lead names and the acquisition metadata."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from heartbeit.data.leads import LEAD_INDEX, LEADS
from heartbeit.data.reasons import Reason
from heartbeit.utils.io import atomic_write_bytes, atomic_write_text

NPZ_DEFECTS: tuple[Reason, ...] = (Reason.NAN, Reason.FLAT_LINE, Reason.IMPLAUSIBLE_AMPLITUDE)
UNIT_SCALE = {"mV": 1.0, "uV": 1000.0}
WRONG_GAIN_FACTOR = 4.88
_NAN_LEAD, _FLAT_LEAD = "V2", "aVF"


def npz_bytes(signals_mv: np.ndarray, units: str, defect: Reason | None = None) -> bytes:
    """An uncompressed .npz with fixed zip timestamps, so equal arrays give equal bytes."""
    if defect is not None and defect not in NPZ_DEFECTS:
        raise ValueError(f"npz writer cannot produce defect {defect!r}")
    x = signals_mv.astype(np.float32) * np.float32(UNIT_SCALE[units])
    if defect is Reason.NAN:
        n = x.shape[1]
        x[LEAD_INDEX[_NAN_LEAD], n // 3: n // 3 + max(1, n // 20)] = np.nan
    elif defect is Reason.FLAT_LINE:
        x[LEAD_INDEX[_FLAT_LEAD]] = x[LEAD_INDEX[_FLAT_LEAD], 0]
    elif defect is Reason.IMPLAUSIBLE_AMPLITUDE:
        x = x * np.float32(WRONG_GAIN_FACTOR)
    array = io.BytesIO()
    np.lib.format.write_array(array, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        info = zipfile.ZipInfo("signals.npy", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, array.getvalue())
    return out.getvalue()


def write_npz(npz_path: str | Path, signals_mv: np.ndarray, fs: int, units: str, sidecar: dict,
              defect: Reason | None = None) -> Path:
    """Write the array and its sidecar JSON (`<stem>.json` beside it) atomically."""
    npz_path = Path(npz_path)
    meta = {"fs": fs, "units": units, "leads": list(LEADS), **sidecar}
    atomic_write_bytes(npz_path, npz_bytes(signals_mv, units, defect))
    atomic_write_text(npz_path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return npz_path
