"""The margins behind ingest's amplitude-normalisation check (heartbeit/data/ingest/amplitude.py, docs/real-data.md).

Reads every record under the given folders as ingest does and reports, over the real records and over the
same records with each lead rescaled on its own (to equal peak-to-peak, equal standard deviation, equal
largest |sample|): the smallest max/min of the 8 independent leads' peak-to-peak and standard deviation
(sign 1), and the limb leads' misfit to Einthoven's law with the share a fit of rescaled weights leaves
(sign 2). Not a benchmark (no `run`): a measurement to rerun when the tolerances are questioned.

    .venv/bin/python bench/amplitude_margins.py ../shared/fixtures/ecg
    .venv/bin/heartbeit synth --out /tmp/synth --n 300 --seed 11 --set synth.broken_fraction=0 --no-progress
    .venv/bin/python bench/amplitude_margins.py /tmp/synth
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _records(folders: list[str]):
    from heartbeit.config import IngestConfig
    from heartbeit.data.ingest.arrays import ArrayDefaults
    from heartbeit.data.ingest.stage import Context, read_record
    from heartbeit.data.ingest.listing import list_inputs
    from heartbeit.data.ingest.ptbxl import ScpTaskMap
    from heartbeit.data.reasons import IngestError

    cfg = IngestConfig()
    ctx = Context(cfg, b"\0" * 32, None, "accession", "auto", ArrayDefaults(500.0, "mV", []),
                  ScpTaskMap.from_config(cfg))
    for item in list_inputs(folders).files:
        try:
            x = read_record(item, ctx).signals.astype(np.float64)
        except IngestError:
            continue
        if np.ptp(x, axis=1).min() >= cfg.flat_ptp_mv:  # a flat lead is refused before this check
            yield x


def measure(folders: list[str]) -> dict:
    from heartbeit.data.ingest.amplitude import _INDEPENDENT, einthoven_misfit

    sizes = {"peak-to-peak": lambda x: np.ptp(x, axis=1), "standard deviation": lambda x: x.std(axis=1),
             "largest |sample|": lambda x: np.abs(x).max(axis=1)}
    out: dict = {}
    records = list(_records(folders))
    for mode in ("as recorded", *(f"rescaled to equal {k}" for k in sizes)):
        spread = {k: [] for k in list(sizes)[:2]}
        misfit, share = [], []
        for x in records:
            if mode != "as recorded":
                x = x / sizes[mode.removeprefix("rescaled to equal ")](x)[:, None]
            for k in spread:
                v = sizes[k](x)[_INDEPENDENT]
                spread[k].append(float(v.max() / v.min()))
            off, fitted, _ = einthoven_misfit(x)
            misfit.append(off)
            if off > 1e-3:  # where the law holds exactly (derived by the reader) the share means nothing
                share.append(fitted / off)
        out[mode] = {**{f"min spread of {k}": round(min(v), 4) for k, v in spread.items()},
                     "Einthoven misfit min": round(min(misfit), 4), "Einthoven misfit max": round(max(misfit), 4),
                     "misfit share left by fitted weights, min": round(min(share), 3) if share else None,
                     "misfit share left by fitted weights, max": round(max(share), 3) if share else None}
    return {"records": len(records), **out}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    print(json.dumps(measure(parser.parse_args().folders), indent=2))
