"""How realistic are the synthetic ECGs? The generator's output measured against real ECGs and published
adult reference ranges (`heartbeit synth compare`).

Real and synthetic records go through the same path: the project's readers, `heartbeit.data.signal.
preprocess` at 500 Hz with the run's render settings, and the median-beat delineator of
`heartbeit.eval.delineate`. Synthetic ECGs are drawn exactly as the corpus draws them (`plan_corpus`: its
patients, sites, per-site noise, wander and mains, labels), the first `n` planned ECGs.

Per feature and cohort (synthetic `normal` = no LVEF <= 40 %, HCM or STEMI label; `all` = every ECG):
- the real distribution (n, NaN count, 10/50/90 %), the synthetic one, the reference range;
- `d_median` = |median_syn - median_real| / IQR_real, and `w1` = the 1-D Wasserstein distance between the
  two samples / IQR_real (IQR_real falls back to a quarter of the reference range when the real values are
  all equal, e.g. S waves that are mostly absent);
- `real_in_syn_10_90` (the real median lies within the synthetic 10..90 % range) and the same for the
  published median (`ref_in_syn_10_90`).

Privacy: real records are named by their index in the listing and their format only; the reasons for
skipped files are the readers' reason codes, never their text (which names the file).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from heartbeit.eval.delineate import FEATURES, delineate, prepare

COHORTS = ("normal", "all")


@dataclass(frozen=True)
class Reference:
    """A published adult reference: median and limits (`kind` says what the limits are)."""

    median: float
    low: float
    high: float
    kind: str
    source: str


# ONE table of adult reference values. Sources:
#   [AHA09] Surawicz B, Childers R, et al. AHA/ACCF/HRS recommendations for the standardization and
#           interpretation of the ECG, parts III-V. J Am Coll Cardiol 2009;53:976-1011 (and Mason JW et al.,
#           part II, 2007): clinical normal limits (axis -30..+90, QRS < 110-120 ms, QTc > 450 ms men /
#           460 ms women prolonged, PR 120-200 ms, rate 60-100 bpm).
#   [RIJ14] Rijnbeek PR, van Herpen G, Bots ML, et al. Normal values of the electrocardiogram for ages
#           16-90 years. J Electrocardiol 2014;47:914-921 (13,354 healthy Dutch adults; median and 2nd/98th
#           percentiles per age and sex, www.normalecg.org).
#   [MAS07] Mason JW, Ramseth DJ, Chanter DO, et al. Electrocardiographic reference ranges derived from
#           79,743 ambulatory subjects. J Electrocardiol 2007;40:228-234.
#   [SOK49] Sokolow M, Lyon TP. The ventricular complex in left ventricular hypertrophy as obtained by
#           unipolar precordial and limb leads. Am Heart J 1949;37:161-186 (SV1 + RV5/6 >= 3.5 mV: LVH).
# Medians and 2-98 % limits from [RIJ14]/[MAS07] are pooled over sex and age and rounded by us (the papers
# tabulate them per stratum); treat them as approximate and check the papers before quoting a number.
REFERENCE_RANGES: dict[str, Reference] = {
    "heart_rate_bpm": Reference(68, 50, 100, "normal limits", "[AHA09] 60-100 (50-100 widely used); median [MAS07]"),
    "pr_ms": Reference(156, 120, 200, "normal limits", "[AHA09]; median [RIJ14]"),
    "qrs_ms": Reference(92, 74, 114, "2-98 %", "[RIJ14] (< 110-120 ms normal [AHA09])"),
    "qt_ms": Reference(398, 340, 450, "2-98 %", "[MAS07] (rate dependent)"),
    "qtc_bazett_ms": Reference(416, 370, 460, "normal limits", "[AHA09] prolonged > 450 M / 460 F; median [RIJ14]"),
    "qrs_axis_deg": Reference(44, -30, 90, "normal limits", "[AHA09]; median [RIJ14]"),
    "r_I_mv": Reference(0.6, 0.2, 1.3, "2-98 %", "[RIJ14]"),
    "r_II_mv": Reference(1.0, 0.3, 2.0, "2-98 %", "[RIJ14]"),
    "r_aVL_mv": Reference(0.3, 0.0, 1.0, "2-98 %", "[RIJ14]"),
    "r_V1_mv": Reference(0.25, 0.0, 0.8, "2-98 %", "[RIJ14]"),
    "r_V2_mv": Reference(0.6, 0.1, 1.6, "2-98 %", "[RIJ14]"),
    "r_V5_mv": Reference(1.4, 0.6, 2.8, "2-98 %", "[RIJ14]"),
    "r_V6_mv": Reference(1.1, 0.4, 2.2, "2-98 %", "[RIJ14]"),
    "s_I_mv": Reference(0.1, 0.0, 0.4, "2-98 %", "[RIJ14]"),
    "s_II_mv": Reference(0.2, 0.0, 0.6, "2-98 %", "[RIJ14]"),
    "s_aVL_mv": Reference(0.3, 0.0, 1.0, "2-98 %", "[RIJ14]"),
    "s_V1_mv": Reference(0.9, 0.2, 2.0, "2-98 %", "[RIJ14]"),
    "s_V2_mv": Reference(1.4, 0.4, 3.0, "2-98 %", "[RIJ14]"),
    "s_V5_mv": Reference(0.3, 0.0, 1.0, "2-98 %", "[RIJ14]"),
    "s_V6_mv": Reference(0.15, 0.0, 0.6, "2-98 %", "[RIJ14]"),
    "sokolow_lyon_mv": Reference(2.3, 1.1, 3.5, "normal limits", "[SOK49] < 3.5 mV; median [RIJ14]"),
    "t_II_mv": Reference(0.28, 0.05, 0.6, "2-98 %", "[RIJ14]"),
    "t_V5_mv": Reference(0.4, 0.05, 0.9, "2-98 %", "[RIJ14]"),
}
assert set(REFERENCE_RANGES) == set(FEATURES), "one reference per delineated feature"


# ------------------------------------------------------------------------------------------------------
# measuring real and synthetic ECGs


def measure(signals_mv: np.ndarray, fs: float, render_cfg=None) -> dict[str, float]:
    """Preprocess + delineate one record: {feature: value (NaN = not measurable)}."""
    return dict(delineate(prepare(signals_mv, fs, render_cfg)).features)


def _read_real(path: Path, fmt: str):
    from heartbeit.data.ingest.arrays import ArrayDefaults, read_array
    from heartbeit.data.ingest.muse import read_muse
    from heartbeit.data.ingest.wfdb_io import read_wfdb

    if fmt == "muse":
        return read_muse(path)
    if fmt == "wfdb":
        return read_wfdb(path)
    # MATLAB/npy arrays without a sidecar: the CinC/CPSC convention (500 Hz, mV, 12 leads in LEADS order)
    return read_array(path, kind=fmt, defaults=ArrayDefaults(fs=500.0))


def measure_real(dirs: list[str | Path], render_cfg=None) -> tuple[pd.DataFrame, Counter]:
    """Every ECG under `dirs` (listed as ingest lists them) -> one row per record: `record` (its index in
    the listing), `format`, the features, and the device's own measurements where the file carries them
    (`device_*`, MUSE). Unreadable files are skipped and counted by reason code."""
    from heartbeit.data.ingest.stage import detect_format
    from heartbeit.data.ingest.listing import list_inputs
    from heartbeit.data.reasons import IngestError

    listing = list_inputs([str(d) for d in dirs], check_sites=False)  # no site reaches its output
    skipped: Counter = Counter(f"listing:{reason}" for _, reason, _ in listing.rejects)
    rows = []
    for index, item in enumerate(listing.files):
        path = Path(item.path)
        try:
            with open(path, "rb") as fh:
                fmt = detect_format(path, fh.read(4096))
            if fmt is None:
                skipped["unknown_format"] += 1
                continue
            record = _read_real(path, fmt)
        except IngestError as exc:
            skipped[exc.reason.value] += 1
            continue
        except OSError:
            skipped["unreadable"] += 1
            continue
        device = {f"device_{k}": float(v) for k, v in (record.meta.get("measurements") or {}).items()}
        rows.append({"record": index, "format": fmt, **measure(record.signals, record.fs, render_cfg), **device})
    return pd.DataFrame(rows, columns=None if rows else ["record", "format", *FEATURES]), skipped


def measure_synthetic(synth_cfg, n: int, render_cfg=None) -> pd.DataFrame:
    """The first `n` ECGs the corpus would write for `synth_cfg` (its sites, noise and labels), measured."""
    from dataclasses import replace

    from heartbeit.data.synth.corpus import plan_corpus, simulate_plan

    # patients have 1..ecgs_per_patient_max ECGs: n patients always plan at least n ECGs
    plans = plan_corpus(replace(synth_cfg, n_patients=max(1, n)))[:n]
    sites = {s.name: s for s in synth_cfg.sites}
    rows = []
    for plan in plans:
        sim = simulate_plan(plan, sites[plan.site], synth_cfg.duration_s)
        rows.append({"record": plan.index, "site": plan.site, "lvef_le40": int(plan.lvef_le40),
                     "hcm": int(plan.hcm), "stemi": int(plan.stemi),
                     "normal": int(not (plan.lvef_le40 or plan.hcm or plan.stemi)),
                     **measure(sim.signals, sim.fs, render_cfg)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# the comparison


def _quantiles(x: np.ndarray) -> tuple[float, float, float]:
    if x.size == 0:
        return (math.nan,) * 3
    q = np.percentile(x, [10, 50, 90])
    return float(q[0]), float(q[1]), float(q[2])


def compare(real: pd.DataFrame, synthetic: pd.DataFrame) -> pd.DataFrame:
    """One row per (cohort, feature): distributions, reference, normalised distances, in-range flags."""
    rows = []
    for cohort in COHORTS:
        syn = synthetic if cohort == "all" else synthetic[synthetic["normal"] == 1]
        for feat in FEATURES:
            ref = REFERENCE_RANGES[feat]
            r_all = real[feat].to_numpy(dtype=np.float64) if feat in real else np.zeros(0)
            s_all = syn[feat].to_numpy(dtype=np.float64)
            r, s = r_all[np.isfinite(r_all)], s_all[np.isfinite(s_all)]
            r10, r50, r90 = _quantiles(r)
            s10, s50, s90 = _quantiles(s)
            iqr = float(np.subtract(*np.percentile(r, [75, 25]))) if r.size else math.nan
            scale = iqr if iqr > 0 else (ref.high - ref.low) / 4.0
            both = r.size > 0 and s.size > 0
            rows.append({
                "cohort": cohort, "feature": feat,
                "n_real": int(r.size), "real_nan": int(r_all.size - r.size),
                "real_p10": r10, "real_p50": r50, "real_p90": r90,
                "n_syn": int(s.size), "syn_nan": int(s_all.size - s.size),
                "syn_p10": s10, "syn_p50": s50, "syn_p90": s90,
                "ref_median": ref.median, "ref_low": ref.low, "ref_high": ref.high, "ref_kind": ref.kind,
                "d_median": abs(s50 - r50) / scale if both else math.nan,
                "w1": wasserstein_distance(r, s) / scale if both else math.nan,
                "real_in_syn_10_90": bool(both and s10 <= r50 <= s90),
                "ref_in_syn_10_90": bool(s.size and s10 <= ref.median <= s90),
            })
    return pd.DataFrame(rows)


def _fmt(v: float, feat: str) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:.2f}" if feat.endswith("_mv") else f"{v:.0f}"


def markdown_table(table: pd.DataFrame, cohort: str = "normal") -> str:
    """The README table: real median, synthetic 10/50/90 %, reference, distances, in range."""
    lines = ["| feature | real n | real median | synthetic 10 / 50 / 90 % | reference median (range) "
             "| d_median | W1/IQR | real median in syn 10–90 % | ref. median in syn 10–90 % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table[table["cohort"] == cohort].itertuples():
        f = row.feature
        lines.append(
            f"| {f} | {row.n_real} | {_fmt(row.real_p50, f)} | {_fmt(row.syn_p10, f)} / {_fmt(row.syn_p50, f)} / "
            f"{_fmt(row.syn_p90, f)} | {_fmt(row.ref_median, f)} ({_fmt(row.ref_low, f)}–{_fmt(row.ref_high, f)}, "
            f"{row.ref_kind}) | {row.d_median:.2f} | {row.w1:.2f} | {'yes' if row.real_in_syn_10_90 else 'NO'} "
            f"| {'yes' if row.ref_in_syn_10_90 else 'no'} |")
    return "\n".join(lines) + "\n"


def figure(real: pd.DataFrame, synthetic: pd.DataFrame, path: str | Path) -> Path:
    """Box plots per feature: real, synthetic normal, synthetic all; the reference range shaded."""
    from matplotlib.figure import Figure

    from heartbeit.eval.plots import save_png

    cols = 6
    rows = math.ceil(len(FEATURES) / cols)
    fig = Figure(figsize=(3.0 * cols, 2.6 * rows))
    groups = (("real", real), ("syn normal", synthetic[synthetic["normal"] == 1]), ("syn all", synthetic))
    for k, feat in enumerate(FEATURES):
        ax = fig.add_subplot(rows, cols, k + 1)
        ref = REFERENCE_RANGES[feat]
        ax.axhspan(ref.low, ref.high, color="tab:green", alpha=0.15, lw=0)
        ax.axhline(ref.median, color="tab:green", lw=1)
        data = [g[feat].to_numpy(dtype=np.float64) for _, g in groups]
        data = [d[np.isfinite(d)] if d.size else np.zeros(0) for d in data]
        ax.boxplot([d if d.size else [np.nan] for d in data], whis=(10, 90), showfliers=True,
                   flierprops={"markersize": 2})
        ax.set_xticks([1, 2, 3], [name for name, _ in groups], fontsize=7)
        ax.set_title(feat, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Real vs synthetic ECG features (boxes 25-75 %, whiskers 10-90 %; green: published reference)",
                 fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def write_outputs(out: str | Path, real: pd.DataFrame, synthetic: pd.DataFrame, skipped: Counter,
                  info: dict) -> dict:
    """realism.csv/.json/.md, realism.png and the per-record features (real by index and format only)."""
    from heartbeit.utils.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = compare(real, synthetic)
    atomic_write_text(out / "realism.csv", table.to_csv(index=False, float_format="%.4g"))
    atomic_write_text(out / "features_real.csv", real.to_csv(index=False, float_format="%.4g"))
    atomic_write_text(out / "features_synthetic.csv", synthetic.to_csv(index=False, float_format="%.4g"))
    md = ["# Synthetic vs real ECG features", "",
          f"Real: {len(real)} records ({_counts(real, 'format')}), skipped: {dict(skipped) or 'none'}. "
          f"Synthetic: {len(synthetic)} ECGs, {int(synthetic['normal'].sum()) if len(synthetic) else 0} normal.",
          "", "## Normal synthetic ECGs (no LVEF <= 40 %, HCM or STEMI label)", "", markdown_table(table, "normal"),
          "## All synthetic ECGs", "", markdown_table(table, "all"),
          "d_median = |median_syn - median_real| / IQR_real; W1/IQR = 1-D Wasserstein distance / IQR_real. "
          "Delineator: heartbeit/eval/delineate.py; references: heartbeit/eval/realism.py.", ""]
    atomic_write_text(out / "realism.md", "\n".join(md))
    figure(real, synthetic, out / "realism.png")
    normal = table[table["cohort"] == "normal"]
    summary = {
        **info,
        "real_records": len(real), "real_by_format": _counts(real, "format"), "real_skipped": dict(skipped),
        "synthetic_ecgs": len(synthetic), "synthetic_normal": int(synthetic["normal"].sum()) if len(synthetic) else 0,
        "features": list(FEATURES),
        "all_real_medians_in_synthetic_10_90": bool(normal["real_in_syn_10_90"].all()),
        "out_of_range": normal.loc[~normal["real_in_syn_10_90"], "feature"].tolist(),
        "table": table.to_dict(orient="records"),
    }
    atomic_write_json(out / "realism.json", _finite(summary))
    return summary


def _counts(df: pd.DataFrame, col: str) -> dict:
    return {str(k): int(v) for k, v in df[col].value_counts().sort_index().items()} if len(df) else {}


def _finite(obj):
    """JSON has no NaN: write null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj
