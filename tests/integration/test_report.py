"""`heartbeit report` end to end on fake matrix cells and a tiny image-shard folder in the render contract."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartbeit.config import load_config
from heartbeit.data.corpus import write_shard
from heartbeit.data.render.draw import render_batch
from heartbeit.data.render.plan import layout_record
from heartbeit.data.shard_format import encode_image, encode_wave, wave_for_storage
from heartbeit.data.signal import preprocess
from heartbeit.data.synth.ecg import simulate_ecg
from helpers.synthetic_cells import write_fake_cells
from heartbeit.utils.io import atomic_write_json

SIZE = 64
TASKS = ("lvef_le40", "hcm", "stemi")
FAKE_ARCHS = {"heartbeit_micro_patch8_64": "heartbeit", "resnet18": "resnet", "efficientnet_b0": "efficientnet",
              "signal_xresnet1d_tiny": "signal"}
WITH_WEIGHTS = ("heartbeit_micro_patch8_64", "resnet18", "signal_xresnet1d_tiny")
IMAGE_WITH_WEIGHTS = ("heartbeit_micro_patch8_64", "resnet18")
OVERRIDES = ["render.image_size=64", "report.bootstrap=50", "report.saliency_samples=1",
             "report.saliency_lead_samples=3", "report.territory_samples=2", "report.wasserstein_images=6",
             "report.wasserstein_pairs=8"]


def write_fake_images(root: Path, cfg, per_split: dict[str, int]) -> pd.DataFrame:
    """Render synthetic ECGs into `<split>/<split>-000000.tar` (+ manifest.parquet, layout.json)."""
    rows = []
    for split, n in per_split.items():
        members, signals = [], []
        for i in range(n):
            stemi = i % 2 == 0
            signals.append(simulate_ecg(1000 * len(rows) + i, fs=250, stemi_territory="anterior" if stemi else None,
                                        hcm=i % 3 == 0))
            key = f"{split}-ecg{i:03d}"
            labels = {"lvef_le40": int(i % 4 == 0), "hcm": int(i % 2 == 1), "stemi": int(stemi)}
            site = "hosp_ext" if split == "external" else ("hosp_a" if i % 2 else "hosp_b")
            rows.append({"ecg_uid": key, "patient_hash": f"p{split}{i // 2}", "site": site, "split": split,
                         **{t: float(v) for t, v in labels.items()}, "key": key,
                         "shard": f"{split}/{split}-000000.tar"})
            members.append((f"{key}.json", json.dumps({"ecg_uid": key, "split": split, "labels": labels}).encode()))
        images = render_batch(np.stack(signals), 250, size=SIZE)
        waves = wave_for_storage(preprocess(np.stack(signals), 250, cfg.render), 250, 100, 10.0)
        wave_members = list(members) + [(name.replace(".json", ".wave.npy"), encode_wave(w))
                                        for (name, _), w in zip(list(members), waves)]
        for (name, _), img in zip(list(members), images):
            members.append((name.replace(".json", ".png"), encode_image(img, "png")))
        write_shard(root / split / f"{split}-000000.tar", members)
        write_shard(root / split / f"{split}-000000.wave.tar", wave_members)
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(root / "manifest.parquet", index=False)
    atomic_write_json(root / "layout.json", layout_record(cfg.render))
    return manifest


def write_cells(cells_dir: Path, tasks=("hcm", "stemi"), weights=WITH_WEIGHTS) -> list[Path]:
    import timm
    import torch
    from safetensors.torch import save_file

    import heartbeit.models  # noqa: F401

    dirs = write_fake_cells(cells_dir, archs=FAKE_ARCHS, tasks=tasks, fractions=(0.1, 1.0), n_test=120,
                            n_external=60)
    for d in dirs:
        meta = json.loads((d / "cell.json").read_text())
        atomic_write_json(d / "complete.json", {"cell_id": meta["cell_id"]})
        if meta["arch"] in weights and meta["fraction"] == 1.0:
            torch.manual_seed(0)
            kw = {"img_size": SIZE} if meta["arch"].startswith("heartbeit") else {}
            kw["in_chans"] = 12 if meta["arch"].startswith("signal_") else 1
            model = timm.create_model(meta["arch"], pretrained=False, num_classes=2, **kw)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    return dirs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    cfg = load_config("ci", overrides=OVERRIDES + [f"workdir={root}"])
    write_fake_images(root / "images", cfg, {"train": 4, "test": 6, "external": 4})
    write_cells(root / "matrix" / "cells")
    # a measured seed spread: wide for HeartBEiT vs ResNet-18 on hcm, none elsewhere
    (root / "seed_spread.json").write_text(json.dumps({"by_arch": {
        "heartbeit_micro_patch8_64": {"hcm": {"range": 0.5}}, "resnet18": {"hcm": {"range": 0.5}}}}))
    return root


def _cfg(workdir: Path):
    return load_config("ci", overrides=OVERRIDES + [f"workdir={workdir}", f"results_dir={workdir}/results",
                                                    f"report.seed_spread_file={workdir}/seed_spread.json"])


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.fixture(scope="module")
def report(workdir) -> tuple[dict, Path]:
    from heartbeit.eval.report import run_report

    summary = run_report(_cfg(workdir), command="heartbeit report --profile ci")
    return summary, workdir / "results"


@pytest.mark.slow
def test_report_end_to_end(report):
    summary, out = report
    md = (out / "REPORT.md").read_text()
    html = (out / "REPORT.html").read_text()
    # every link resolves; the report embeds tables, figures, saliency, Wasserstein and the command
    links = _links(md)
    assert links and all((out / p).is_file() for p in links)
    assert "heartbeit report --profile ci" in md and "Profile **ci**" in md
    # differences inside the measured training-seed spread are marked, whatever their p-value
    assert summary["within_training_noise"] > 0 and "within training noise" in md
    for needle in ("AUROC [95% CI]", "fraction_stemi.png", "lead_time_", "overlays/", "territory",
                   "Wasserstein", "imagenet", "random", "pretrained", "ECGs per site and split"):
        assert needle in md, needle
    assert "<table>" in html and '<img src="figures/fraction_stemi.png"' in html and "<h2>" in html
    # tables in the three formats for each task; figures; Wasserstein
    for task in ("stemi", "hcm"):
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"auroc_{task}_internal.{ext}").is_file()
        assert (out / "saliency" / f"lead_importance_{task}.md").is_file()
    assert (out / "tables" / "wasserstein.md").is_file() and (out / "tables" / "data_counts.csv").is_file()
    assert (out / "figures" / "fraction_stemi.png").is_file()
    # saliency: Grad-CAM for both models with weights, FullGrad for the CNN only
    imp = pd.read_parquet(out / "saliency" / "lead_importance_long.parquet")
    assert set(imp["arch"]) == set(WITH_WEIGHTS)
    assert set(imp[imp["arch"] == "resnet18"]["method"]) == {"gradcam", "fullgrad"}
    assert set(imp[imp["arch"] == "heartbeit_micro_patch8_64"]["method"]) == {"gradcam"}
    # the signal model: input×gradient per lead of its waveform on the same positives (12 leads, chance 1/12)
    sig = imp[imp["arch"] == "signal_xresnet1d_tiny"]
    assert set(sig["method"]) == {"inputxgrad"} and len(sig) == 2 * 12 and (sig["area_share"] == 1 / 12).all()
    assert "signal_xresnet1d_tiny (random) input×gradient" in md
    sums = imp.groupby(["task", "arch", "method"])["mass_share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-9)
    assert (imp["n_images"] == 3).all()  # three positives of the test split per task
    assert len(list((out / "saliency" / "overlays").glob("*.png"))) == 2 * 3  # 2 tasks x (2 + 1 FullGrad) x 1
    # territory analysis on the best stemi model that kept its weights
    terr = pd.read_parquet(out / "saliency" / "territory_long.parquet")
    assert set(terr["territory"]) == {"anterior", "inferior", "lateral", "all"}
    assert terr["best"].sum() == 4 and (terr["ratio_mean"] >= 0).all()
    assert len(terr[terr["arch"] == "signal_xresnet1d_tiny"]) == 4  # compared on the same synthetic waveforms
    assert not terr[terr["arch"] == "signal_xresnet1d_tiny"]["best"].any()  # "best" is an image model
    best = summary["territory"]
    assert best["arch"] in IMAGE_WITH_WEIGHTS and best["territory_ratio"] == pytest.approx(
        terr[terr["best"] & (terr["territory"] == "all")]["ratio_mean"].iloc[0])
    # image vs signal: a paired table per task and evaluation set, with p-values, in the report and in tables/
    for task in ("stemi", "hcm"):
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"image_vs_signal_{task}_internal.{ext}").is_file()
    vs = pd.read_parquet(out / "tables" / "image_vs_signal_long.parquet")
    assert set(vs["arch"]) == {"signal_xresnet1d_tiny"} and set(vs["reference"]) == set(FAKE_ARCHS) - {
        "signal_xresnet1d_tiny"}
    assert vs["p"].between(0, 1).all()
    section = md[md.index("Image vs signal: does drawing"):]
    assert "stemi: ΔAUROC (image − signal)" in section and re.search(r"\(p[=<]0\.\d+\)", section)
    assert "Do the differences survive repeated draws?" in md and "single run" in md
    # calibration and subgroup tables in the report itself, not only linked
    assert "Brier score / ECE" in md and "by site, sex and age band" in md
    # what could not be built is said, not hidden
    assert any("efficientnet_b0" in p and "model.safetensors" in p for p in summary["problems"])
    assert not any("signal_xresnet1d" in p for p in summary["problems"])
    assert set(imp[imp["arch"] == "resnet18"]["resolution"]) == {"4x4", "pixel"}  # layer3 at 64 px: layer4 would be 2x2
    assert "heartbeit_micro_patch8_64 (pretrained) Grad-CAM 8x8" in md
    assert json.loads((out / "report.json").read_text())["cells"] == summary["cells"] == 16
    # no staging leftovers
    assert not [p for p in out.iterdir() if ".staging" in p.name or ".old-" in p.name]


@pytest.mark.slow
def test_report_is_deterministic_and_replaces_the_old_one(workdir, report):
    from heartbeit.eval.report import run_report

    _, out = report
    rels = ("REPORT.md", "tables/auroc_stemi_internal.md", "saliency/lead_importance_long.csv",
            "saliency/territory_long.csv", "saliency/lead_time_long.csv", "tables/wasserstein_long.csv")

    def without_code_version(data: bytes) -> bytes:  # the lead may commit between the two runs
        return re.sub(rb"code `[^`]*`", b"code `?`", data)

    first = {rel: without_code_version((out / rel).read_bytes()) for rel in rels}
    stale = out / "saliency" / "stale.png"
    stale.write_bytes(b"")
    run_report(_cfg(workdir), command="heartbeit report --profile ci")
    assert not stale.exists()  # the saliency part was swapped in whole
    for rel in rels:
        assert without_code_version((out / rel).read_bytes()) == first[rel], rel


def test_missing_inputs_give_a_clear_message(tmp_path, capsys):
    from heartbeit.cli import main

    rc = main(["report", "--profile", "ci", "--workdir", str(tmp_path / "nothing"), "--out", str(tmp_path / "res"),
               "--set", "report.bootstrap=20"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no finished matrix cells" in err and "run `heartbeit matrix run` first" in err
    md = (tmp_path / "res" / "REPORT.md").read_text()
    assert "Missing or left out" in md and "heartbeit render" in md
    assert "heartbeit report --profile ci --set report.bootstrap=20 --workdir" in md


def test_a_study_with_unfinished_cells_says_so_first(tmp_path, capsys):
    """The Slurm report job runs after the matrix whatever became of its cells; the report opens
    with the planned cells that did not finish, with each one's reason."""
    import json

    from heartbeit.cli import main
    from heartbeit.matrix import Cell, write_plan

    matrix = tmp_path / "w" / "matrix"
    cells = [Cell(i, f"{i:016x}", "resnet18", "stemi", 1.0, i) for i in range(2)]
    write_plan(cells, matrix / "plan.json")
    (matrix / "cells" / ".failed").mkdir(parents=True)
    (matrix / "cells" / ".failed" / f"{cells[1].cell_id}.json").write_text(json.dumps({"reason": "OutOfMemoryError: x"}))
    main(["report", "--profile", "ci", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "res"),
          "--set", "report.bootstrap=20"])
    md = (tmp_path / "res" / "REPORT.md").read_text()
    assert md.index("## Incomplete study") < md.index("## Missing or left out")
    assert "**2 of 2 planned cells did not finish" in md
    assert f"cell 1 `{cells[1].cell_id}` resnet18 stemi 1 seed1 draw0: failed (OutOfMemoryError: x)" in md
    assert json.loads((tmp_path / "res" / "report.json").read_text())["unfinished_cells"][0].startswith("cell 0 ")


def test_unfinished_and_damaged_cells_are_left_out(tmp_path):
    from heartbeit.eval.report_inputs import load_cells

    dirs = write_fake_cells(tmp_path, archs={"resnet18": "resnet"}, tasks=("stemi",), fractions=(0.1, 1.0),
                            n_test=40, n_external=20)
    atomic_write_json(dirs[0] / "complete.json", {})
    cellset = load_cells(tmp_path)
    assert len(cellset.cells) == 1 and any("without `complete.json`" in p for p in cellset.problems)
    atomic_write_json(dirs[1] / "complete.json", {})
    (dirs[1] / "predictions.parquet").write_bytes(b"not parquet")
    cellset = load_cells(tmp_path)
    assert len(cellset.cells) == 1 and any("unreadable" in p for p in cellset.problems)


def test_cell_model_that_does_not_match_is_named(tmp_path):
    import timm
    from safetensors.torch import save_file

    from heartbeit.eval.inference import load_cell_model

    model = timm.create_model("resnet18", pretrained=False, num_classes=2, in_chans=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    assert load_cell_model(tmp_path, "resnet18", SIZE) is not None
    with pytest.raises(ValueError, match="model.safetensors: cannot load the weights into resnet34"):
        load_cell_model(tmp_path, "resnet34", SIZE)


def test_command_line_reproduces_the_arguments():
    import argparse

    from heartbeit.commands.report import add_arguments, command_line

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--profile", "demo", "--set", "report.seed=3", "--cells", "c d", "--out", "r"])
    assert command_line(args) == "heartbeit report --profile demo --set report.seed=3 --cells 'c d' --out r"


@pytest.mark.parametrize("override", ["report.ci=1.5", "report.wasserstein_images=1", "report.saliency_split=dev",
                                      "report.min_n=0", "report.territory_samples=-1"])
def test_report_config_is_validated(override):
    from heartbeit.config import ConfigError

    with pytest.raises(ConfigError, match="report"):
        load_config("ci", overrides=[override])
