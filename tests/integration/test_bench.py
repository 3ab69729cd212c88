"""The benchmark suite: runner (discovery, isolation, failure reporting, records, SUMMARY.md), the `heartbeit
bench` CLI, a tiny train_step run, and the scaling plan's model. No timing is asserted anywhere."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from heartbeit import benchsuite
from heartbeit.cli import main

ROOT = Path(__file__).resolve().parents[2]

OK_BENCH = '''
import time


def run(quick):
    start = time.perf_counter()
    base = sum(i * i for i in range(20000))
    t_base = time.perf_counter() - start
    print("fake bench prints its table")
    return {"quick": quick, "base_s": t_base, "ours_speedup_vs_loop": 3.0, "nested": {"ratio_a_vs_b": 0.5},
            "headline": {"metric": "fake ops/s", "value": 30.0, "baseline": 10.0, "ratio": 3.0}}
'''
NO_HEADLINE = '''
def run(quick):
    return {"x_vs_y": 2.0, "plain": 1}
'''
CRASH = '''
def run(quick):
    raise RuntimeError("boom in the benchmark")
'''
NOT_A_BENCH = '''
def plan(args):
    return 1
'''


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def fake_bench(tmp_path: Path) -> Path:
    d = tmp_path / "bench"
    d.mkdir()
    (d / "okbench.py").write_text(OK_BENCH)
    (d / "nohead.py").write_text(NO_HEADLINE)
    (d / "crash.py").write_text(CRASH)
    (d / "plan.py").write_text(NOT_A_BENCH)
    (d / "_helper.py").write_text(OK_BENCH)
    return d


def test_discovery_finds_run_quick_modules_only(fake_bench):
    assert benchsuite.discover(fake_bench) == ["crash", "nohead", "okbench"]
    real = benchsuite.discover(benchsuite.BENCH_DIR)
    assert {"train_step", "e2e", "metrics", "render", "loader"} <= set(real) and "plan" not in real
    assert real.index("metrics") < real.index("train_step") < real.index("e2e")  # long ones last


def test_suite_writes_records_and_summary_and_survives_a_crash(fake_bench, tmp_path):
    out = tmp_path / "results"
    records = benchsuite.run_suite(None, quick=True, out_dir=out, bench_dir=fake_bench, timeout_s=120,
                                   command="heartbeit bench --quick")
    by = {r["name"]: r for r in records}
    assert set(by) == {"crash", "nohead", "okbench"}
    assert by["crash"]["status"] == "failed" and "boom in the benchmark" in by["crash"]["error"]
    ok = json.loads((out / "okbench.json").read_text())
    assert ok["status"] == "ok" and ok["quick"] is True and ok["figures"]["quick"] is True
    assert ok["headline"]["ratio"] == 3.0
    assert ok["ratios"] == {"ours_speedup_vs_loop": 3.0, "nested.ratio_a_vs_b": 0.5}
    for key in ("machine", "versions", "command", "git_revision", "date", "wall_s"):
        assert ok[key] is not None, key
    assert ok["machine"]["cores"] >= 1 and ok["versions"]["torch"] and ok["command"] == "heartbeit bench --quick"
    nohead = json.loads((out / "nohead.json").read_text())
    assert nohead["headline"]["metric"] == "x_vs_y"  # first ratio stands in when a module has no headline
    summary = (out / "SUMMARY.md").read_text()
    assert "| okbench | ok | fake ops/s | 30 | 10 | 3 |" in summary
    assert "| crash | FAILED: exit 1" in summary
    assert "`ours_speedup_vs_loop` = 3" in summary


def test_only_refreshes_one_row_and_keeps_the_others(fake_bench, tmp_path):
    out = tmp_path / "results"
    benchsuite.run_suite(["nohead"], quick=True, out_dir=out, bench_dir=fake_bench, timeout_s=120)
    benchsuite.run_suite(["okbench"], quick=False, out_dir=out, bench_dir=fake_bench, timeout_s=120)
    summary = (out / "SUMMARY.md").read_text()
    assert "| nohead | ok |" in summary and "| okbench | ok |" in summary and "| full |" in summary
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchsuite.run_suite(["nope"], out_dir=out, bench_dir=fake_bench)


def test_timeout_is_a_reported_failure(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    (d / "slow.py").write_text("import time\n\ndef run(quick):\n    time.sleep(30)\n    return {}\n")
    (rec,) = benchsuite.run_suite(None, out_dir=tmp_path / "r", bench_dir=d, timeout_s=2)
    assert rec["status"] == "failed" and "timed out" in rec["error"]


def test_cli_runs_only_and_exits_nonzero_when_one_fails(fake_bench, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["bench", "--quick", "--only", "okbench", "--bench-dir", str(fake_bench), "--out", str(out)])
    assert rc == 0 and (out / "okbench.json").is_file() and (out / "SUMMARY.md").is_file()
    printed = capsys.readouterr().out
    assert "ratio 3" in printed and "ours_speedup_vs_loop: 3" in printed
    assert main(["bench", "--only", "crash,okbench", "--bench-dir", str(fake_bench), "--out", str(out)]) == 1
    assert main(["bench", "--list", "--bench-dir", str(fake_bench)]) == 0
    assert main(["bench", "--only", "nope", "--bench-dir", str(fake_bench), "--out", str(out)]) == 2


def test_jsonable_handles_numpy_and_nan():
    import numpy as np

    got = benchsuite.jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), 4: (1, 2)})
    assert got == {"a": 1.5, "b": [0, 1, 2], "c": None, "4": [1, 2]}
    json.dumps(got)


def test_train_step_tiny_mode_runs_one_model(monkeypatch):
    monkeypatch.setenv("HEARTBEIT_BENCH_TINY", "1")
    monkeypatch.setenv("HEARTBEIT_PEAK_TFLOPS", "1.0")
    train_step = _load("train_step")
    fig = train_step.run(True)
    (label,) = fig["models"]
    row = fig["models"][label]
    assert label == "vit_micro_patch8_64" and row["train_gflops_per_image"] > 0
    assert {"eager_fp32", "eager_bf16", "eager_fp32_math_attention"} <= set(row["variants"])
    base = row["variants"]["eager_fp32"]
    assert base["speedup_vs_eager_fp32"] == 1.0 and base["images_per_s"] > 0 and 0 < base["mfu"] < 1
    assert fig["peak_tflops"] == {"fp32": 1.0, "bf16": 1.0}  # the env var wins over the CPU estimate
    assert fig["headline"]["baseline"] == base["images_per_s"]


def test_train_step_variants_and_compile_choice(monkeypatch):
    import torch

    ts = _load("train_step")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [v[0] for v in ts.variants("resnet18", cpu, False)] == [
        "eager_fp32", "eager_bf16", "eager_fp32_channels_last", "eager_bf16_channels_last"]
    assert ts.variants("vit_micro_patch8_64", cuda, True, quick=False)[-2:] == [
        ("compile_bf16", "bf16", False, True), ("compile_fp32", "fp32", False, True)]
    assert [v[0] for v in ts.variants("mim", cpu, False)] == [
        "eager_fp32", "eager_bf16", "eager_fp32_math_attention", "eager_fp32_online_tokenizer"]
    monkeypatch.delenv("HEARTBEIT_BENCH_COMPILE", raising=False)
    assert ts.compile_targets(ts.CI_MODELS, cpu, quick=True) == set()
    assert ts.compile_targets(ts.CI_MODELS, cpu, quick=False) == {"mim"}
    assert ts.compile_targets(ts.PAPER_MODELS, cuda, quick=True) == set(ts.PAPER_MODELS) | {"mim"}
    monkeypatch.setenv("HEARTBEIT_BENCH_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="HEARTBEIT_BENCH_COMPILE"):
        ts.compile_targets(ts.CI_MODELS, cpu, quick=True)


def test_train_step_flops_match_the_reference_count():
    ts = _load("train_step")
    # ResNet-18 at 224: 1.82 GMACs -> 3.6 GFLOPs forward (timm's figure for 3 channels; 1 channel is a bit less)
    fwd = ts.classifier_forward_flops("resnet18", 224)
    assert 3.3e9 < fwd < 3.7e9


def test_e2e_reads_an_existing_run_json(tmp_path, monkeypatch):
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"profile": "ci", "stages_s": {"render": 3.0, "synth": 1.0, "total": 4.0},
                                    "complete": False}))
    monkeypatch.setenv("HEARTBEIT_BENCH_E2E_RUN_JSON", str(run_json))
    fig = _load("e2e").run(True)
    assert list(fig["stages_s"]) == ["synth", "render"]  # pipeline order
    assert fig["stage_share_of_total"] == {"synth": 0.25, "render": 0.75}
    assert fig["headline"]["value"] == 4.0 and fig["headline"]["ratio"] == 0.75
    assert fig["source"].startswith("existing")


# ------------------------------------------------------------------------------------------- scaling plan
def _plan_args(tmp_path: Path, **kw) -> argparse.Namespace:
    plan = _load("plan")
    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    args = parser.parse_args(["--from", str(tmp_path / "none"), "--out", str(tmp_path / "plan")])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_plan_is_monotone_and_states_assumptions(tmp_path):
    plan = _load("plan")
    result = plan.run_plan(_plan_args(tmp_path))
    rows = result["scenarios"]["1x"]["rows"]
    for z in plan.ZERO_STAGES:
        days = [r["wall_days"] for r in rows if r["zero_stage"] == z]
        assert all(a > b for a, b in zip(days, days[1:])), f"more GPUs must take less time (ZeRO-{z})"
    by = {(r["nodes"], r["zero_stage"]): r for r in rows}
    for n in plan.NODE_COUNTS:
        assert by[(n, 3)]["network_s_per_step"] >= by[(n, 1)]["network_s_per_step"]
        assert by[(n, 3)]["traffic_mb_per_gpu_per_step"] >= by[(n, 1)]["traffic_mb_per_gpu_per_step"]
        assert by[(n, 3)]["model_state_gib_per_gpu"] <= by[(n, 1)]["model_state_gib_per_gpu"]
    ten = result["scenarios"]["10x"]["rows"]
    assert all(b["wall_days"] == pytest.approx(10 * a["wall_days"]) for a, b in zip(rows, ten))
    # nothing measured in an empty --from: every rate is a stated assumption, in the JSON and the Markdown
    assert all(result["sources"][k].startswith("ASSUMED") for k in (
        "gpu_images_per_s", "loader_images_per_s_per_core", "render_images_per_s_per_core"))
    md = (tmp_path / "plan" / "plan.md").read_text()
    assert "ASSUMED: 45% MFU" in md and "Nodes needed" in md
    assert json.loads((tmp_path / "plan" / "plan.json").read_text())["inputs"]["ecgs"] == 8.5e6
    # assumed rate = MFU x peak / FLOPs per image
    inp = result["inputs"]
    assert inp["gpu_images_per_s"] == pytest.approx(0.45 * 989e12 / inp["train_flops_per_image"])
    assert 100e9 < inp["train_flops_per_image"] < 115e9  # BEiT-B/16 MIM with precomputed tokens (~108 G)


def test_plan_uses_measured_records(tmp_path):
    plan = _load("plan")
    rec_dir = tmp_path / "rec"
    (rec_dir / "h100").mkdir(parents=True)
    base = {"kind": benchsuite.RECORD_KIND, "status": "ok", "machine": {"cpu_model": "x"}, "date": "2026-01-01"}
    label = f"pretrain_mim:{plan.PAPER_MIM[0]}"
    (rec_dir / "h100" / "train_step.json").write_text(json.dumps({**base, "name": "train_step", "figures": {
        "device": "NVIDIA H100 80GB HBM3", "batch_size": 128, "models": {label: {
            "best_variant": "compile_bf16", "variants": {"compile_bf16": {"images_per_s": 2000.0}}}}}}))
    (rec_dir / "loader.json").write_text(json.dumps({**base, "name": "loader", "figures": {
        "cores": 2, "stream_2_workers_img_per_s": 500.0}}))
    args = _plan_args(tmp_path)
    args.from_dir = str(rec_dir)
    result = plan.run_plan(args)
    assert result["inputs"]["gpu_images_per_s"] == 2000.0 and result["sources"]["gpu_images_per_s"].startswith("measured")
    assert result["inputs"]["loader_images_per_s_per_core"] == 250.0
    one = next(r for r in result["scenarios"]["1x"]["rows"] if r["nodes"] == 1 and r["zero_stage"] == 1)
    assert one["loader_cores_per_node"] >= 8 + 8 * 64 / one["step_s"] / 250.0
    args.gpu = "a100"  # an H100 measurement does not stand in for an A100
    assert plan.run_plan(args)["sources"]["gpu_images_per_s"].startswith("ASSUMED")


def test_cli_plan(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["bench", "plan", "--gpu", "a100", "--ecgs", "1e6", "--epochs", "10", "--from", str(tmp_path),
                 "--out", str(out)]) == 0
    assert "A100" in capsys.readouterr().out and (out / "plan.md").is_file()


def test_suite_runs_a_real_benchmark_module(tmp_path):
    """bench/e2e.py through the runner (subprocess, record, summary), on a given run.json: no pipeline run."""
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"profile": "ci", "stages_s": {"synth": 2.0, "ingest": 6.0, "total": 8.0}}))
    (rec,) = benchsuite.run_suite(["e2e"], out_dir=tmp_path / "r", timeout_s=120,
                                  env={"HEARTBEIT_BENCH_E2E_RUN_JSON": str(run_json)})
    assert rec["status"] == "ok", rec["error"]
    assert rec["ratios"] == {"stage_share_of_total.synth": 0.25, "stage_share_of_total.ingest": 0.75}
    assert "| e2e | ok |" in (tmp_path / "r" / "SUMMARY.md").read_text()


def test_busy_machine_is_flagged():
    assert benchsuite.is_busy({"cores": 2, "load_avg_1_5_15": [1.0, 1, 1], "load_avg_after": [3.5, 2, 1]})
    assert not benchsuite.is_busy({"cores": 2, "load_avg_1_5_15": [1.0, 1, 1], "load_avg_after": [2.0, 2, 1]})


def test_train_step_mim_variants_run():
    import torch

    ts = _load("train_step")
    cpu = torch.device("cpu")
    for math_attn, online in ((True, False), (False, True)):
        ts.mim_step(*ts.CI_MIM, 64, 2, cpu, "fp32", False, math_attn, online)()
    # the paper's tokenizer stand-in gives BEiT-B/16's 14x14 token grid
    tok = ts._random_tokenizer(8192, 224, 16, cpu)
    assert tok.encode(torch.zeros(1, 1, 224, 224, dtype=torch.uint8)).shape == (1, 14, 14)


def test_every_benchmark_imports_and_exposes_run_quick():
    """A benchmark broken at import time fails here, in CI, without running the whole suite."""
    import inspect

    for name in benchsuite.discover():
        module = _load(name)
        params = list(inspect.signature(module.run).parameters)
        assert params[0] == "quick", name


@pytest.mark.slow
def test_quick_suite_runs_green_in_smoke_mode(tmp_path):
    """`heartbeit bench --quick`'s whole list (discovered, in its order, each in a fresh interpreter) at the
    smoke sizes: a benchmark broken by a change elsewhere (a moved input, a renamed argument) fails here
    instead of in the next recorded run. Figures are not looked at, only that each benchmark finishes."""
    records = benchsuite.run_suite(None, quick=True, out_dir=tmp_path, timeout_s=300,
                                   env={benchsuite.SMOKE_ENV: "1", "OMP_NUM_THREADS": "1"})
    assert [r["name"] for r in records] == benchsuite.discover()
    assert {r["name"]: r["error"] for r in records if r["status"] != "ok"} == {}
    assert all(r["smoke"] and r["headline"] for r in records)
    assert "| smoke |" in (tmp_path / "SUMMARY.md").read_text()
    machine = records[0]["machine"]  # named as utils.machine names it (numerics depend on the ISA)
    assert machine["cpu_model"] and "isa_flags" in machine and "torch_cpu_capability" in machine


def test_loader_benchmark_runs_every_setup_at_a_small_size():
    """bench/loader.py end to end at 64 px, one repeat: every loader set-up, its ceiling, the consumer-overlap
    pair and the headline are there (figures only; no timing is asserted)."""
    fig = _load("loader").run(True, size=64, repeats=1)
    cores = fig["cores"]
    for key in ("stream_0_workers_img_per_s", f"stream_0_workers_{cores}_threads_img_per_s",
                f"raw_png_decode_ceiling_{cores}_cores_img_per_s", "stream_0_workers_1_threads_with_step_img_per_s",
                f"stream_0_workers_{cores}_threads_with_step_img_per_s"):
        assert fig[key] > 0, key
    assert fig["consumer_step_ms"] > 0 and fig["headline"]["ratio"] > 0
    assert fig["headline"]["baseline"] == fig[f"raw_png_decode_ceiling_{cores}_cores_img_per_s"]


# --------------------------------------------------------------------------------------- hospital scale
def _scale_record(tmp_path: Path) -> Path:
    recs = tmp_path / "recs"
    recs.mkdir()
    figures = {"resamples": 2000, "idle_rss_mb": 900.0,
               "cell_eval_fit": {"cell_eval_old": {"s_at_largest": 400.0, "n_largest": 1_000_000, "exponent": 1.0},
                                 "cell_eval_new": {"s_at_largest": 80.0, "n_largest": 1_000_000, "exponent": 1.0}},
               "render_per_task_at_8.5M": {"old": {"s": 1000.0, "rss_mb": 11000.0, "how": "x"},
                                           "new": {"s": 10.0, "rss_mb": 1200.0, "how": "extrapolated"},
                                           "plan_once": {"s": 1100.0, "rss_mb": 9000.0, "how": "x"}}}
    rec = {"kind": benchsuite.RECORD_KIND, "name": "scale", "status": "ok", "figures": figures, "quick": False,
           "machine": {"cpu_model": "test cpu"}, "date": "2026-12-05T00:00:00"}
    (recs / "scale.json").write_text(json.dumps(rec))
    return recs


def test_plan_projects_the_report_and_render_array_from_the_scale_record(tmp_path):
    plan = _load("plan")
    args = _plan_args(tmp_path, from_dir=str(_scale_record(tmp_path)), report_cells=64, report_test_n=3e5,
                      report_cores=32)
    hs = plan.run_plan(args)["hospital_scale"]
    assert hs["cell_eval_s_new"] == pytest.approx(24.0) and hs["cell_eval_s_old"] == pytest.approx(120.0)
    assert hs["report_hours_new"] == pytest.approx(2 * 24.0 / 3600)  # 64 cells on 32 cores: two rounds
    assert hs["report_hours_old_serial"] == pytest.approx(64 * 120.0 / 3600)
    md = (tmp_path / "plan" / "plan.md").read_text()
    assert "Hospital scale" in md and "32-core node" in md
    # without a scale record the section is absent, not invented
    assert plan.run_plan(_plan_args(tmp_path))["hospital_scale"] is None


def test_scale_stages_undo_their_baseline_patches(tmp_path):
    """Smoke mode measures every stage in one process: an old-implementation stage must not leave its
    patch behind for the new one."""
    from heartbeit.data import members

    scale = _load("scale")
    scale.synthetic_predictions(500).to_parquet(tmp_path / "predictions-500.parquet", index=False)
    scale._prepare(tmp_path, 4000)  # enough training shards for the stage's two loader workers
    read_manifest = members.read_manifest
    assert scale._stage("loader_plan_old", str(tmp_path), 4000)["manifest_reads"] >= 1
    assert members.read_manifest is read_manifest
    from heartbeit.eval import cell_scoring

    bootstrap = cell_scoring.bootstrap_distribution
    scale._stage("cell_eval_old", str(tmp_path), 500, resamples=5)
    assert cell_scoring.bootstrap_distribution is bootstrap


def test_scale_bench_measures_in_fresh_processes(tmp_path):
    scale = _load("scale")
    assert scale.exponent([10, 100, 1000], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert scale.extrapolate([10, 100], [1.0, 4.0], 1000) == pytest.approx(16.0)
    scale.synthetic_predictions(3000).to_parquet(tmp_path / "predictions-3000.parquet", index=False)
    old = scale.measure("cell_eval_old", tmp_path, 3000, resamples=50)
    new = scale.measure("cell_eval_new", tmp_path, 3000, resamples=50)
    assert old["s"] > 0 and new["rss_mb"] > 0 and len(old["ci"]) == len(new["ci"]) == 4  # pooled + 3 sites
    assert abs(np.array(old["ci"]) - np.array(new["ci"])).max() < 0.05  # same intervals up to resampling noise
