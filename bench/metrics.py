"""DeLong AUROC interval vs the usual 1,000-resample bootstrap of sklearn's roc_auc_score.

Baseline (measured in the same run): a Python loop of 1,000 `roc_auc_score` calls on resampled indices,
percentile interval — what most evaluation scripts do. Compared: our DeLong interval (fast midrank
algorithm) and our vectorised bootstrap (one sort, weight matrices). Prints times, speed-up ratios and
how far the intervals' bounds differ.

    .venv/bin/python bench/metrics.py            # n = 10k and 100k
    .venv/bin/python bench/metrics.py --quick    # n = 10k and 30k
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from heartbeit.benchsuite import smoke
from heartbeit.eval.metrics import auroc, bootstrap_distribution, percentile_interval

N_RESAMPLES = 1000


def _synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int8)
    s = rng.normal(size=n) + 1.2 * y
    return y, s


def _best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _loop_bootstrap(y, s, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(y)
    reps = np.empty(N_RESAMPLES)
    for b in range(N_RESAMPLES):
        idx = rng.integers(0, n, n)
        reps[b] = roc_auc_score(y[idx], s[idx]) if 0 < y[idx].sum() < n else np.nan
    return percentile_interval(reps, 0.95)[:2]


def run(quick: bool) -> dict:
    sizes = (10_000, 30_000) if quick else (10_000, 100_000)
    if smoke():
        sizes = (2_000,)
    results = {"n_resamples": N_RESAMPLES, "sizes": {}}
    print(f"{'n':>8} {'DeLong s':>9} {'loop bootstrap s':>17} {'vector bootstrap s':>19} "
          f"{'loop/DeLong':>12} {'loop/vector':>12} {'max |bound diff|':>17}")
    for n in sizes:
        y, s = _synthetic(n)
        t_delong, r = _best_time(lambda: auroc(y, s), repeat=5)
        t_loop, (lo_b, hi_b) = _best_time(lambda: _loop_bootstrap(y, s), repeat=1)
        t_vec, reps = _best_time(lambda: bootstrap_distribution(y, s, metrics=("auroc",), n_resamples=N_RESAMPLES,
                                                                 seed=0), repeat=1)
        lo_v, hi_v, _ = percentile_interval(reps["auroc"], 0.95)
        diff = max(abs(r.low - lo_b), abs(r.high - hi_b))
        row = {"auroc": r.value, "delong_ci": [r.low, r.high], "loop_bootstrap_ci": [lo_b, hi_b],
               "vector_bootstrap_ci": [lo_v, hi_v], "delong_s": t_delong, "loop_bootstrap_s": t_loop,
               "vector_bootstrap_s": t_vec, "loop_over_delong": t_loop / t_delong,
               "loop_over_vector": t_loop / t_vec, "max_bound_diff_delong_vs_bootstrap": diff}
        results["sizes"][str(n)] = row
        results["headline"] = {"metric": f"DeLong AUROC interval, s (n = {n})", "value": t_delong,
                               "baseline": t_loop, "baseline_name": f"{N_RESAMPLES}-resample roc_auc_score loop, s",
                               "ratio": t_loop / t_delong}
        print(f"{n:>8} {t_delong:>9.4f} {t_loop:>17.3f} {t_vec:>19.3f} {t_loop / t_delong:>11.0f}x "
              f"{t_loop / t_vec:>11.1f}x {diff:>17.4f}")
        print(f"{'':>8} AUROC {r.value:.4f}  DeLong [{r.low:.4f}, {r.high:.4f}]  loop bootstrap [{lo_b:.4f}, {hi_b:.4f}]"
              f"  vector bootstrap [{lo_v:.4f}, {hi_v:.4f}]")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 10k and 30k instead of 10k and 100k")
    parser.add_argument("--json", default="", help="also write the results as JSON to this path")
    args = parser.parse_args()
    results = run(args.quick)
    if args.json:
        from heartbeit.utils.io import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
