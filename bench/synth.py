"""Synthetic corpus throughput: ECGs/s for the signal simulator alone and for writing whole corpora
(simulate + encode + write files) with one worker (the baseline, measured in the same run) and with all
cores. Usage: .venv/bin/python bench/synth.py [--quick] [--json OUT]"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heartbeit.benchsuite import smoke  # noqa: E402
from heartbeit.config import SynthConfig  # noqa: E402
from heartbeit.data.synth.ecg import simulate_ecg  # noqa: E402
from heartbeit.data.synth.corpus import write_corpus  # noqa: E402
from heartbeit.utils.io import resolve_workers  # noqa: E402


def _time_corpus(cfg: SynthConfig, workers: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        start = time.perf_counter()
        summary = write_corpus(cfg, tmp, workers=workers, progress=False)
        return summary["ecgs"], time.perf_counter() - start


def run(quick: bool) -> dict:
    n_patients = 40 if quick else 400
    n_sim = 100 if quick else 1000
    if smoke():
        n_patients, n_sim = 4, 3
    cores = resolve_workers(0)
    start = time.perf_counter()
    for seed in range(n_sim):
        simulate_ecg(seed, fs=500, noise_mv=0.02, wander_mv=0.2, powerline_mv=0.02)
    sim_rate = n_sim / (time.perf_counter() - start)

    cfg = SynthConfig(n_patients=n_patients, seed=0)
    _time_corpus(SynthConfig(n_patients=2 if smoke() else 8, seed=1), 1)  # warm-up: lazy imports (wfdb, pandas), page cache
    ecgs, t1 = _time_corpus(cfg, 1)
    _, tn = _time_corpus(cfg, cores)
    return {
        "cores": cores,
        "simulate_500hz_ecgs_per_s": round(sim_rate, 1),
        "corpus_ecgs": ecgs,
        "corpus_1_worker_ecgs_per_s": round(ecgs / t1, 1),
        f"corpus_{cores}_workers_ecgs_per_s": round(ecgs / tn, 1),
        "corpus_ecgs_per_s_per_core": round(ecgs / tn / cores, 1),
        "parallel_speedup_vs_1_worker": round(t1 / tn, 2),
        "headline": {"metric": f"synthetic corpus ECGs/s ({cores} workers)", "value": round(ecgs / tn, 1),
                     "baseline": round(ecgs / t1, 1), "baseline_name": "1 worker", "ratio": round(t1 / tn, 2)},
    }


def main() -> int:
    from heartbeit.benchsuite import print_figures

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = run(args.quick)
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
