"""Hospital scale: time, peak memory and growth exponent of the planning and reporting stages on
synthetic metadata, manifests and prediction sets, each against the implementation it replaced (same run).

Stages (each measurement in a fresh process, so its peak RSS is its own; the RSS of a process that only
imported the same modules is given as `idle_rss_mb`):

  splits          build_manifest: patient-level splits and nested stratified fractions
  shard_plan      plan_shards: keyed shard assignment
  render_task     one Slurm array task's planning overhead. Baseline (the old render_corpus): every task
                  rebuilt the manifest, the shard plan and the per-ECG job dicts of the whole corpus, then
                  kept 1/N. Now: `heartbeit render --plan-only` plans once (`render_plan_once`) and a task
                  reads plan.json and its own slice. The corpus tar walk (index_corpus: one header per
                  member) is measured on a real small corpus per ECG and added to the baseline and to the
                  plan-once figure (say so: it is not run at every size).
  matrix_plan     plan_cells of the paper's matrix on the synthetic manifest (fingerprints the manifest)
  loader_plan     one cell's loader planning (manifest read, 1 % subset, epoch plan, subset selection)
                  per process; baseline: today's reads of the whole manifest per cell (set-up + each len())
  cell_eval       one cell's evaluation (pooled + per site, 3 sites): DeLong, AUPRC bootstrap (2,000
                  resamples in full mode), calibration. Baseline: the same with the old bootstrap
                  (bench/_bootstrap_v1.py); the CI bounds of both are compared
  bootstrap_1e6   the AUPRC bootstrap alone at n = 10^6 (full mode), old vs new, and their CI bounds
  loader_subset   a 1 % training cell's epoch (5,000 / 50,000 synthetic 64 px PNG samples): bytes read and time
                  per delivered ECG through the member-offset index vs streaming every shard whole and
                  filtering (the loader without an index), and whether the batches are identical

Quick (CI): <= 3x10^4 rows / predictions. Full (by hand, recorded): planning to 10^6 rows, predictions to
10^6; figures at 8.5x10^6 rows are extrapolated from the fitted exponent (marked "extrapolated"). Smoke
(HEARTBEIT_BENCH_SMOKE=1, tests): every stage at a few thousand rows, measured in this process (its figures say
nothing; it shows that every stage still runs on the current code).

    PYTHONPATH=. .venv/bin/python bench/scale.py [--quick] [--json OUT]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PAPER_ECGS = 8.5e6
ARRAY_TASKS = 100
SHARD_SIZE = 1000
# the stages run() measures: planning ones on the synthetic manifests, evaluation ones on prediction sets
PLANNING_STAGES = ("splits", "shard_plan", "render_task_old", "render_plan_once", "render_task_new", "matrix_plan",
                   "loader_plan_old", "loader_plan_new")
EVAL_STAGES = ("cell_eval_old", "cell_eval_new")


# ------------------------------------------------------------------------------------------- synthetic


def synthetic_metadata(n: int, seed: int = 0) -> pd.DataFrame:
    """Corpus metadata of n ECGs: ~3 ECGs per patient, 5 sites (one external), labels with gaps."""
    rng = np.random.default_rng(seed)
    patients = max(1, n // 3)
    pid = rng.integers(0, patients, n)
    site_of_patient = rng.choice(["hosp_a", "hosp_b", "hosp_c", "hosp_d", "hosp_ext"], patients,
                                 p=[0.3, 0.3, 0.2, 0.1, 0.1])
    out = pd.DataFrame({
        "ecg_uid": [f"e{i:09d}" for i in range(n)],
        "patient_hash": [f"p{p:09d}" for p in pid],
        "site": site_of_patient[pid],
        "sex": rng.choice(["F", "M"], n), "age_band": rng.choice(["18-39", "40-59", "60-79", "80+"], n),
        "fs": np.full(n, 500.0), "n_samples": np.full(n, 5000),
    })
    for task, prevalence in (("lvef_le40", 0.15), ("hcm", 0.02), ("stemi", 0.05)):
        label = (rng.random(n) < prevalence).astype(float)
        label[rng.random(n) < 0.1] = np.nan
        out[task] = label
    return out


def synthetic_locations(meta: pd.DataFrame) -> pd.DataFrame:
    n = len(meta)
    return pd.DataFrame({"ecg_uid": meta["ecg_uid"], "corpus_tar": [f"/corpus/shards/corpus-{i // 1000:06d}.tar"
                                                                    for i in range(n)],
                         "offset": np.arange(n) * 121_856 + 512, "size": np.full(n, 120_128)})


def synthetic_predictions(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, max(1, n // 3), n)
    y = (rng.random(n) < 0.1).astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 2)))
    return pd.DataFrame({"ecg_uid": [f"e{i:09d}" for i in range(n)], "patient_hash": [f"p{p}" for p in pid],
                         "site": np.array(["hosp_a", "hosp_b", "hosp_c"])[pid % 3], "split": "test",
                         "label": y, "score": score})


def render_cfg():
    from heartbeit.config import RenderConfig

    return RenderConfig(shard_size=SHARD_SIZE, external_sites=["hosp_ext"])


# ---------------------------------------------------------------------------------------- measurements


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _stage(name: str, work: str, n: int, resamples: int = 0) -> dict:
    """Run in a fresh process: one measurement. Returns seconds, peak RSS (MB) and figures. The baselines'
    patches are undone on return, so that smoke mode can run every stage in one process."""
    with contextlib.ExitStack() as patches:
        return _measure_stage(name, Path(work), n, resamples, patches)


def _measure_stage(name: str, work: Path, n: int, resamples: int, patches: contextlib.ExitStack) -> dict:
    from unittest import mock

    extra: dict = {}
    # every stage imports the same modules first (torch comes with the loader), so that peak RSS minus the
    # idle process's RSS is the stage's own memory, and no import is timed
    import heartbeit.data.loading.loader  # noqa: F401
    import heartbeit.data.render.plan  # noqa: F401
    import heartbeit.data.render.stage  # noqa: F401
    import heartbeit.eval.metrics  # noqa: F401
    import heartbeit.matrix  # noqa: F401
    if name == "idle":
        return {"s": 0.0, "rss_mb": _peak_mb()}
    t0 = time.perf_counter()
    if name == "splits":
        from heartbeit.data.splits import build_manifest

        meta = pd.read_parquet(work / f"corpus-{n}" / "metadata.parquet")
        t0 = time.perf_counter()
        build_manifest(meta, render_cfg())
    elif name == "shard_plan":
        from heartbeit.data.render.plan import plan_shards

        man = pd.read_parquet(work / f"manifest-{n}.parquet")
        t0 = time.perf_counter()
        plan_shards(man.drop(columns=["key", "shard"]), SHARD_SIZE, 0)
    elif name == "render_task_old":
        from heartbeit.data.render import stage as shards
        from heartbeit.data.splits import build_manifest

        cfg = render_cfg()
        t0 = time.perf_counter()  # the old task read the metadata itself: timed
        meta = pd.read_parquet(work / f"corpus-{n}" / "metadata.parquet")
        plan = shards.plan_shards(build_manifest(meta, cfg), cfg.shard_size, cfg.shard_seed)
        jobs = shards.build_jobs(plan, synthetic_locations(meta), cfg)
        mine = [j for i, j in enumerate(jobs) if i % ARRAY_TASKS == 0]
        extra["shards_of_task"] = len(mine)
    elif name in ("render_plan_once", "render_task_new"):
        from heartbeit.data.render import plan as render_plan, stage as shards

        cfg = render_cfg()
        corpus, out = work / f"corpus-{n}", work / f"images-{n}"
        if name == "render_plan_once":
            meta = pd.read_parquet(corpus / "metadata.parquet")
            locations = synthetic_locations(meta)
            del meta
            # the tar walk is measured apart (index_corpus_per_ecg)
            patches.enter_context(mock.patch.object(render_plan, "index_corpus", lambda _dir: locations))
            t0 = time.perf_counter()
            render_plan.write_plan(corpus, out, cfg, ARRAY_TASKS)
        else:
            t0 = time.perf_counter()
            record = render_plan.read_plan(out, render_plan.source_digest(corpus, cfg), ARRAY_TASKS)
            assert record is not None, "plan missing"
            mine = shards.build_jobs(render_plan.task_rows(out, 0), None, cfg)
            extra["shards_of_task"] = len(mine)
    elif name == "matrix_plan":
        from heartbeit.config import MatrixConfig
        from heartbeit.matrix import plan_cells

        images = work / f"images-{n}"
        mcfg = MatrixConfig(architectures=["heartbeit_base_patch16_224", "vit_base_patch16_224", "resnet152",
                                           "efficientnet_b4"], fractions=[0.01, 0.1, 0.25, 0.5, 1.0],
                            seeds=[0, 1, 2], draws=3, draws_below=0.25)
        t0 = time.perf_counter()
        extra["cells"] = len(plan_cells(mcfg, images, None))
    elif name in ("loader_plan_old", "loader_plan_new"):
        # one 1 % cell's loader planning for 2 epochs: its set-up (manifest, training draw), then per epoch
        # the subset selection and the epoch plan behind len(), over 4 epochs. The old loader read the whole
        # manifest in every epoch plan and filtered it again per epoch; the new one reads it once per process
        # and filters it once per loader (dealing.SplitSelection).
        from heartbeit.data.loading import dealing
        from heartbeit.data import members
        from heartbeit.data.splits import training_draw

        images = work / f"images-{n}"
        old = name == "loader_plan_old"
        reads = [0]
        if old:
            def uncached(images_dir):
                reads[0] += 1
                return pd.read_parquet(Path(images_dir) / "manifest.parquet")

            patches.enter_context(mock.patch.object(members, "read_manifest", uncached))
        t0 = time.perf_counter()
        man = members.read_manifest(images)
        subset = frozenset(man.loc[(man["split"] == "train") & training_draw(man, "stemi", 0.01, 1, 0)
                                   & man["stemi"].notna(), "ecg_uid"].astype(str))
        if old:  # every epoch: a new stream (its byte-range keys) and an epoch plan, each filtering the manifest
            for epoch in range(4):
                dealing.wanted_keys(images, "train", None, "stemi", subset)
                dealing.epoch_plan(images, "train", 1, 2, epoch=epoch, task="stemi", subset=subset)
        else:  # the cell's loader resolves the filter once; an epoch only permutes the shards
            selection = dealing.SplitSelection(images, "train", None, "stemi", subset)
            for epoch in range(4):
                selection.plan(1, 2, epoch=epoch)
        extra["manifest_reads"] = reads[0] if old else members._manifest.cache_info().misses
        extra["subset"] = len(subset)
    elif name in ("cell_eval_old", "cell_eval_new"):
        from heartbeit.eval import cell_scoring

        preds = pd.read_parquet(work / f"predictions-{n}.parquet")
        if name == "cell_eval_old":
            import _bootstrap_v1

            patches.enter_context(mock.patch.object(cell_scoring, "bootstrap_distribution",
                                                    _bootstrap_v1.bootstrap_distribution))
        t0 = time.perf_counter()
        rows = cell_scoring.cell_metrics(preds, n_resamples=resamples, seed=0)
        extra["ci"] = [[r["auprc_trapz_low"], r["auprc_trapz_high"], r["auprc_ap_low"], r["auprc_ap_high"]]
                       for r in rows]
    elif name in ("bootstrap_old", "bootstrap_new"):
        from heartbeit.eval import metrics

        preds = pd.read_parquet(work / f"predictions-{n}.parquet")
        y, s = preds["label"].to_numpy(), preds["score"].to_numpy()
        patients = preds["patient_hash"].to_numpy()
        fn = metrics.bootstrap_distribution
        if name == "bootstrap_old":
            import _bootstrap_v1

            fn = _bootstrap_v1.bootstrap_distribution
        t0 = time.perf_counter()
        reps = fn(y, s, metrics=("ap", "trapz"), n_resamples=resamples, seed=0, clusters=patients)
        extra["ci"] = [list(metrics.percentile_interval(reps[k])[:2]) for k in ("trapz", "ap")]
    else:
        raise ValueError(name)
    return {"s": time.perf_counter() - t0, "rss_mb": _peak_mb(), **extra}


def measure(name: str, work: Path, n: int, resamples: int = 0) -> dict:
    """One stage in a fresh interpreter (`bench/scale.py --stage`; a file path, so it works however this
    module was loaded, e.g. by `heartbeit bench`); in this process in smoke mode."""
    import subprocess

    from heartbeit.benchsuite import smoke

    if smoke():
        return _stage(name, str(work), n, resamples)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "SCALE_RESAMPLES": str(resamples), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    result_file = work / f"stage-{name}-{n}.json"
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage", name, "--work", str(work),
                    "--n", str(n), "--json", str(result_file)], env=env, check=True)
    out = json.loads(result_file.read_text())
    print(f"  {name:<18} n={n:>9,}  {out['s']:9.3f} s  {out['rss_mb']:8.0f} MB", flush=True)
    return out


def index_corpus_per_ecg(work: Path, n: int = 2000) -> float:
    """Seconds per ECG of the corpus tar walk (index_corpus) on a real corpus of n tiny members."""
    import io

    from heartbeit.data.corpus import write_shard
    from heartbeit.data.render.plan import index_corpus

    corpus = work / "walk"
    for i in range(0, n, 1000):
        members = []
        for j in range(i, min(n, i + 1000)):
            buf = io.BytesIO()
            np.save(buf, np.zeros((12, 10), np.int16))
            members += [(f"e{j:09d}.signal.npy", buf.getvalue()), (f"e{j:09d}.json", b"{}")]
        write_shard(corpus / "shards" / f"corpus-{i // 1000:06d}.tar", members)
    t = time.perf_counter()
    assert len(index_corpus(corpus)) == n
    return (time.perf_counter() - t) / n


def loader_subset(work: Path, n: int, fraction: float = 0.01) -> dict:
    """A 1 % training cell's epoch over n synthetic 64 px PNG samples in shards of 1,000: bytes read and
    seconds per delivered ECG through the member-offset index, against streaming every shard whole and
    filtering (the loader without an index, as before), and whether the batches are identical."""
    from heartbeit.data import members
    from heartbeit.data.corpus import write_shard
    from heartbeit.data.loading.loader import ImageLoader, make_image_dataset
    from heartbeit.data.shard_format import encode_image

    rng = np.random.default_rng(0)
    images = work / f"loader-{n}"
    keys = [f"e{i:09d}" for i in range(n)]
    chosen = rng.random(n) < fraction
    rows, shards = [], []
    for start in range(0, n, SHARD_SIZE):
        name = f"train/train-{start // SHARD_SIZE:06d}.tar"
        part = []
        for i in range(start, min(n, start + SHARD_SIZE)):
            img = np.where(rng.random((64, 64)) < 0.04, 255, 0).astype(np.uint8)
            meta = {"ecg_uid": keys[i], "labels": {"stemi": float(i % 7 == 0)}, "fractions": [1.0]}
            part += [(f"{keys[i]}.png", encode_image(img, "png")), (f"{keys[i]}.json", json.dumps(meta).encode())]
            rows.append({"ecg_uid": keys[i], "key": keys[i], "split": "train", "shard": name, "stemi": float(i % 7 == 0)})
        write_shard(images / name, part)
        members.write_member_index(images / name)
        shards.append({"name": name, "count": min(n, start + SHARD_SIZE) - start})
    pd.DataFrame(rows).to_parquet(images / "manifest.parquet", index=False)
    (images / "index.json").write_text(json.dumps({"splits": {"train": {"count": n, "shards": shards}},
                                                   "image_ext": "png", "wave_hz": 0}))
    subset = frozenset(k for k, c in zip(keys, chosen) if c)
    split_bytes = sum((images / s["name"]).stat().st_size for s in shards)
    read = {"bytes": 0}
    real_open = open

    class Counting:
        def __init__(self, path, mode="r"):
            self.fh = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def seek(self, pos):
            return self.fh.seek(pos)

        def read(self, size=-1):
            data = self.fh.read(size)
            read["bytes"] += len(data)
            return data

    members.open = Counting  # the module's reads only
    out = {}
    try:
        for how in ("indexed", "whole"):
            if how == "whole":  # no index: every shard streamed and filtered, as the loader did before
                members.load_member_index, saved = (lambda tar: None), members.load_member_index
            read["bytes"] = 0
            t = time.perf_counter()
            ds = make_image_dataset(images, "train", task="stemi", batch_size=32, subset=subset, seed=1)
            batches = [(b["ecg_uid"], b["image"].numpy().tobytes()) for b in ImageLoader(ds)]
            out[how] = {"s": time.perf_counter() - t, "bytes": read["bytes"], "batches": batches}
            if how == "whole":
                members.load_member_index = saved
    finally:
        del members.open
    delivered = sum(len(u) for u, _ in out["indexed"]["batches"])
    return {"samples": n, "subset": len(subset), "delivered": delivered, "split_bytes": split_bytes,
            "indexed_bytes": out["indexed"]["bytes"], "whole_bytes": out["whole"]["bytes"],
            "indexed_share_of_split_bytes": out["indexed"]["bytes"] / split_bytes,
            "indexed_ms_per_delivered_ecg": 1e3 * out["indexed"]["s"] / max(delivered, 1),
            "whole_ms_per_delivered_ecg": 1e3 * out["whole"]["s"] / max(delivered, 1),
            "subset_read_speedup": out["whole"]["s"] / out["indexed"]["s"],
            "batches_identical": out["indexed"]["batches"] == out["whole"]["batches"]}


def exponent(ns: list[int], ts: list[float]) -> float | None:
    """Least-squares slope of log t on log n (None with fewer than two usable points)."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, ts) if t > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def extrapolate(ns: list[int], ts: list[float], target: float) -> float | None:
    b = exponent(ns, ts)
    return None if b is None else float(ts[-1] * (target / ns[-1]) ** b)


# ------------------------------------------------------------------------------------------------- run


def _prepare(work: Path, n: int) -> None:
    from heartbeit.data.render.plan import plan_shards
    from heartbeit.data.splits import build_manifest

    corpus = work / f"corpus-{n}"
    corpus.mkdir(parents=True, exist_ok=True)
    meta = synthetic_metadata(n)
    meta.to_parquet(corpus / "metadata.parquet", index=False)
    man = plan_shards(build_manifest(meta, render_cfg()), SHARD_SIZE, 0)
    man.to_parquet(work / f"manifest-{n}.parquet", index=False)
    images = work / f"images-{n}"  # what the loader and the matrix planner read: manifest + index.json
    images.mkdir()
    man.to_parquet(images / "manifest.parquet", index=False)
    rendered = man[man["shard"] != ""]
    splits = {}
    for (split, shard), count in rendered.groupby(["split", "shard"]).size().items():
        entry = splits.setdefault(split, {"count": 0, "shards": []})
        entry["count"] += int(count)
        entry["shards"].append({"name": shard, "count": int(count)})
    (images / "index.json").write_text(json.dumps({"splits": splits, "image_ext": "png", "wave_hz": 0}))


def _series(name: str, work: Path, sizes: list[int], **kw) -> dict:
    runs = {n: measure(name, work, n, **kw) for n in sizes}
    ts, rss = [runs[n]["s"] for n in sizes], [runs[n]["rss_mb"] for n in sizes]
    return {"sizes": sizes, "s": ts, "rss_mb": rss, "exponent": exponent(sizes, ts),
            "runs": {str(n): runs[n] for n in sizes}}


def _at_paper(series: dict, idle_mb: float, extra_per_row: float = 0.0) -> dict:
    """Time and peak RSS at 8.5 M rows: measured when the series reaches it, else extrapolated with the
    fitted exponents (RSS: of the excess over an idle interpreter with the same imports)."""
    sizes, ts, rss = series["sizes"], series["s"], series["rss_mb"]
    if sizes[-1] >= PAPER_ECGS:
        return {"s": ts[-1] + extra_per_row * PAPER_ECGS, "rss_mb": rss[-1], "how": "measured"}
    excess = [max(r - idle_mb, 1.0) for r in rss]
    return {"s": extrapolate(sizes, ts, PAPER_ECGS) + extra_per_row * PAPER_ECGS,
            "rss_mb": idle_mb + extrapolate(sizes, excess, PAPER_ECGS),
            "how": f"extrapolated from n <= {sizes[-1]:,}"}


def summarise(out: dict) -> dict:
    """The headline figures from the measured stages (also after `--stages` replaced some)."""
    stages, walk, idle = out["stages"], out["index_corpus_s_per_ecg"], out["idle_rss_mb"]
    old_task = _at_paper(stages["render_task_old"], idle, walk)
    new_task = _at_paper(stages["render_task_new"], idle)
    once = _at_paper(stages["render_plan_once"], idle, walk)
    out["render_per_task_at_8.5M"] = {"old": old_task, "new": new_task, "plan_once": once,
                                      "note": "old and plan_once include the corpus tar walk at its measured "
                                              "per-ECG cost; new is a task's slice of a 100-task array; RSS "
                                              "includes the idle interpreter (with torch)"}
    out["render_task_overhead_ratio"] = old_task["s"] / max(new_task["s"], 1e-9)
    out["render_array_overhead_core_hours_old_vs_new"] = [old_task["s"] * ARRAY_TASKS / 3600,
                                                          (once["s"] + new_task["s"] * ARRAY_TASKS) / 3600]
    out["planning_at_8.5M"] = {name: _at_paper(stages[name], idle) for name in
                               ("splits", "shard_plan", "matrix_plan", "loader_plan_old", "loader_plan_new")}
    n_eval = stages["cell_eval_new"]["sizes"][-1]
    ce_old, ce_new = stages["cell_eval_old"]["runs"][str(n_eval)], stages["cell_eval_new"]["runs"][str(n_eval)]
    out["cell_eval_speedup"] = ce_old["s"] / ce_new["s"]
    out["cell_eval_max_ci_diff"] = float(np.nanmax(np.abs(np.array(ce_old["ci"]) - np.array(ce_new["ci"]))))
    if "bootstrap_old" in stages:
        b_old, b_new = stages["bootstrap_old"]["runs"]["1000000"], stages["bootstrap_new"]["runs"]["1000000"]
        out["bootstrap_1e6_speedup"] = b_old["s"] / b_new["s"]
        out["bootstrap_1e6_max_ci_diff"] = float(np.max(np.abs(np.array(b_old["ci"]) - np.array(b_new["ci"]))))
    out["cell_eval_fit"] = {k: {"s_at_largest": stages[k]["s"][-1], "n_largest": n_eval,
                                "exponent": stages[k]["exponent"]} for k in ("cell_eval_old", "cell_eval_new")}
    out["headline"] = {"metric": f"one array task's planning overhead at 8.5M ECGs, s ({new_task['how']})",
                       "value": new_task["s"], "baseline": old_task["s"],
                       "baseline_name": "every task plans the whole stage",
                       "ratio": out["render_task_overhead_ratio"]}
    return out


def run(quick: bool) -> dict:
    from heartbeit.benchsuite import smoke

    sizes = [10_000, 30_000] if quick else [100_000, 300_000, 1_000_000]
    pred_sizes = [10_000, 30_000] if quick else [10_000, 100_000, 1_000_000]
    resamples = 200 if quick else 2000
    walk_n, subset_n = (2000, 5_000) if quick else (20_000, 50_000)
    mode = "quick" if quick else "full"
    if smoke():  # quick's stages (no 10^6 bootstrap) at the smallest sizes that deal whole shards
        quick = True
        sizes, pred_sizes, resamples, walk_n, subset_n, mode = [4000, 6000], [1000, 2000], 20, 200, 1000, "smoke"
    out: dict = {"mode": mode, "array_tasks": ARRAY_TASKS, "shard_size": SHARD_SIZE,
                 "resamples": resamples, "paper_ecgs": PAPER_ECGS}
    with tempfile.TemporaryDirectory(prefix="heartbeit-scale-") as tmp:
        work = Path(tmp)
        for n in sorted(set(sizes + pred_sizes)):
            if n in sizes:
                _prepare(work, n)
            if n in pred_sizes:
                synthetic_predictions(n).to_parquet(work / f"predictions-{n}.parquet", index=False)
        out["idle_rss_mb"] = measure("idle", work, 0)["rss_mb"]
        walk = index_corpus_per_ecg(work, walk_n)
        out["index_corpus_s_per_ecg"] = walk
        stages = {}
        for name in PLANNING_STAGES:
            stages[name] = _series(name, work, sizes)
        for name in EVAL_STAGES:
            stages[name] = _series(name, work, pred_sizes, resamples=resamples)
        out["loader_subset_1pct"] = loader_subset(work, subset_n)
        print(f"  loader 1 % cell: {out['loader_subset_1pct']['indexed_share_of_split_bytes']:.2%} of the "
              f"split's bytes read, {out['loader_subset_1pct']['subset_read_speedup']:.1f}x quicker, batches "
              f"identical: {out['loader_subset_1pct']['batches_identical']}", flush=True)
        if not quick:
            stages["bootstrap_old"] = _series("bootstrap_old", work, [1_000_000], resamples=resamples)
            stages["bootstrap_new"] = _series("bootstrap_new", work, [1_000_000], resamples=resamples)
    out["stages"] = stages
    return summarise(out)


def main() -> int:
    from heartbeit.benchsuite import print_figures

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # one measurement (a child of run())
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stages", default=None, help="with --json of an earlier run: measure these planning "
                   "stages again (comma-separated) and replace them in that file")
    args = p.parse_args()
    if args.stage:
        result = _stage(args.stage, args.work, args.n, int(os.environ.get("SCALE_RESAMPLES", "0")))
        Path(args.json).write_text(json.dumps(result, default=float))
        return 0
    if args.stages:
        figures = json.loads(Path(args.json).read_text())
        sizes = figures["stages"]["splits"]["sizes"]
        with tempfile.TemporaryDirectory(prefix="heartbeit-scale-") as tmp:
            for n in sizes:
                _prepare(Path(tmp), n)
            for name in args.stages.split(","):
                figures["stages"][name] = _series(name, Path(tmp), sizes)
        Path(args.json).write_text(json.dumps(summarise(figures), indent=2, default=str))
        return 0
    figures = run(args.quick)
    print_figures({k: v for k, v in figures.items() if k != "stages"}, None)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
