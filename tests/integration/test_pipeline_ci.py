"""The whole study at ci scale, run once per test session: `heartbeit run --profile ci`.

Checks the acceptance items of the matrix: every cell completes, a second invocation recomputes
nothing, and a matrix killed mid-run finishes only the missing cells with metrics identical to an
uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

HEARTBEIT = [sys.executable, "-m", "heartbeit"]


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("ci_run")
    results = work / "results"
    t0 = time.time()
    proc = subprocess.run([*HEARTBEIT, "run", "--profile", "ci", "--workdir", str(work), "--no-progress",
                           "--set", f"results_dir={results}"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"work": work, "results": results, "seconds": time.time() - t0, "stdout": proc.stdout}


def _plan(work):
    return json.loads((work / "matrix" / "plan.json").read_text())["cells"]


def test_every_stage_and_cell_completes(ci_run):
    work = ci_run["work"]
    run = json.loads((work / "run.json").read_text())
    assert run["complete"] is True
    for stage in ("synth", "ingest", "render", "tokenizer", "pretrain", "matrix"):
        assert stage in run["stages_s"]
    # where the time went: the compute table, also committed beside the results as <profile>_run.json/.md
    compute = run["compute"]
    assert compute["pretrain"]["steps"] == 30 and compute["pretrain"]["images"] == 30 * 16
    assert compute["matrix"]["resnet18"]["cells"] == (5 + 1) * 3
    assert all(row["train_images"] > 0 and row["cell_seconds"] > 0 for row in compute["matrix"].values())
    assert json.loads((ci_run["results"] / "ci_run.json").read_text())["stages_s"] == run["stages_s"]
    assert "| resnet18 | 18 |" in (ci_run["results"] / "ci_run.md").read_text()
    cells = _plan(work)
    # (architectures + the HeartBEiT linear probe) x (fractions + a second draw at 1%) x tasks (one seed in ci)
    # + the pretraining ablation: HeartBEiT from the 50 % export (step 15 of 30) at 10 % labels, per task
    ablation = [c for c in cells if c["pretrain_step"] is not None]
    assert len(cells) == (6 + 1) * (5 + 1) * 3 + 3 and cells[-3:] == ablation
    assert {(c["arch"], c["fraction"], c["pretrain_step"], c["pretrain_fraction"]) for c in ablation} == \
        {("heartbeit_micro_patch8_64", 0.1, 15, 0.5)}
    assert sum(c["kind"] == "probe" and c["arch"] == "heartbeit_micro_patch8_64" for c in cells) == (5 + 1) * 3
    archs = {c["arch"] for c in cells}
    assert archs == {"heartbeit_micro_patch8_64", "vit_micro_patch8_64", "efficientnet_b0", "tf_efficientnet_lite0",
                     "resnet18", "signal_xresnet1d_tiny"}
    assert {(c["fraction"], c["draw"]) for c in cells} == {(0.01, 0), (0.01, 1), (0.1, 0), (0.25, 0), (0.5, 0),
                                                           (1.0, 0)}
    for c in cells:
        d = work / "matrix" / "cells" / c["cell_id"]
        assert (d / "complete.json").is_file(), c
        pred = pd.read_parquet(d / "predictions.parquet")
        assert set(pred["split"]) <= {"test", "external"} and "test" in set(pred["split"])
        meta = json.loads((d / "cell.json").read_text())
        # what truly loaded, and a sanity verdict for every cell
        assert "verdicts" in meta["sanity"] and meta["precision"] in ("bf16", "fp32")
        if c["arch"] == "tf_efficientnet_lite0":  # the offline ImageNet baseline, converted on first use
            assert meta["init"] == "imagenet" and meta["weights"]["file"] == "tf_efficientnet_lite0.safetensors"
            assert meta["weights"]["new_tensors"] == ["classifier.bias", "classifier.weight"]
        elif c["arch"].startswith("heartbeit"):
            assert meta["init"] == ("pretrained, linear probe" if c["kind"] == "probe" else "pretrained")
            assert meta["weights"]["tensors_loaded"] > 0
            step = c["pretrain_step"]  # the export it truly fine-tuned: the ablation's own, or the final one
            assert meta["weights"]["file"] == f"heartbeit-micro_patch8_64{f'-step{step}' if step else ''}.safetensors"
        else:
            assert meta["init"] == "random"
    # the STEMI task is scored at the external sites too
    stemi = [c for c in cells if c["task"] == "stemi"]
    pred = pd.read_parquet(work / "matrix" / "cells" / stemi[0]["cell_id"] / "predictions.parquet")
    assert "external" in set(pred["split"])


def test_second_invocation_recomputes_nothing(ci_run):
    work = ci_run["work"]
    cells_dir = work / "matrix" / "cells"
    before = {p: p.stat().st_mtime_ns for p in cells_dir.glob("*/complete.json")}
    export = next((work / "pretrain").glob("heartbeit-*.safetensors"))
    export_mtime = export.stat().st_mtime_ns
    proc = subprocess.run([*HEARTBEIT, "run", "--profile", "ci", "--workdir", str(work), "--no-progress",
                           "--set", f"results_dir={ci_run['results']}"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = {p: p.stat().st_mtime_ns for p in cells_dir.glob("*/complete.json")}
    assert after == before
    assert export.stat().st_mtime_ns == export_mtime


def test_killed_matrix_resumes_to_identical_metrics(ci_run, tmp_path):
    work = ci_run["work"]
    subset = "0-5"
    # a fresh matrix directory with the same plan, run in a process we kill after two cells
    mdir = tmp_path / "matrix"
    mdir.mkdir()
    shutil.copy(work / "matrix" / "plan.json", mdir / "plan.json")
    argv = [*HEARTBEIT, "matrix", "run", "--profile", "ci", "--workdir", str(work), "--matrix-dir", str(mdir),
            "--cells", subset]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 300
    while time.time() < deadline and len(list((mdir / "cells").glob("*/complete.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # its cell workers die with it: nothing completes after the kill
    done_before = {p.parent.name for p in (mdir / "cells").glob("*/complete.json")}
    time.sleep(5)
    assert {p.parent.name for p in (mdir / "cells").glob("*/complete.json")} == done_before
    assert 2 <= len(done_before) < 6
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{6 - len(done_before)} ran, {len(done_before)} already done" in proc.stdout
    for c in _plan(work)[:6]:
        ours = pd.read_parquet(mdir / "cells" / c["cell_id"] / "predictions.parquet")
        ref = pd.read_parquet(work / "matrix" / "cells" / c["cell_id"] / "predictions.parquet")
        pd.testing.assert_frame_equal(ours, ref, check_exact=True)


def test_report_has_the_signal_baseline_and_the_repeated_draws(ci_run):
    results = ci_run["results"]
    long = pd.read_parquet(results / "tables" / "metrics_long.parquet")
    for task in ("lvef_le40", "hcm", "stemi"):
        part = long[long["task"] == task]
        assert "signal_xresnet1d_tiny" in set(part["arch"])
        assert set(part[part["fraction"] == 0.01]["draw"]) == {0, 1}
        table = (results / "tables" / f"auroc_{task}_internal.md").read_text()
        assert "signal_xresnet1d_tiny" in table
        assert (results / "tables" / f"image_vs_signal_{task}_internal.csv").is_file()
        assert (results / "figures" / f"fraction_{task}.png").is_file()
    report = (results / "REPORT.md").read_text()
    section = report[report.index("Image vs signal: does drawing"):]
    assert "(p=" in section or "(p<" in section
    assert "Do the differences survive repeated draws?" in report
    assert "Brier score / ECE" in report and "by site, sex and age band" in report
    assert "### Does pretraining cause the gain?" in report
    ablation = pd.read_csv(results / "tables" / "ablation_auroc.csv")
    assert sorted(ablation["Task"]) == ["hcm", "lvef_le40", "stemi"]
    assert list(ablation.columns[3:]) == ["0 (random ViT)", "50% (step 15)", "100% (final export)"]


def test_report_shows_sanity_weights_and_holm(ci_run):
    results = ci_run["results"]
    report = (results / "REPORT.md").read_text()
    assert "### Cell sanity" in report and "Verdicts per model" in report
    assert "tf_efficientnet_lite0.safetensors" in report  # what truly loaded
    assert "Holm-adjusted" in report
    summary = json.loads((results / "report.json").read_text())
    # the benchmark's cells; the pretraining ablation's are reported in their own section
    assert summary["sanity"]["cells"] == sum(c["pretrain_step"] is None for c in _plan(ci_run["work"]))
    status = subprocess.run([*HEARTBEIT, "matrix", "status", "--profile", "ci", "--workdir", str(ci_run["work"])],
                            capture_output=True, text=True, env=_env())
    assert status.returncode == 0 and "sanity of done cells:" in status.stdout
