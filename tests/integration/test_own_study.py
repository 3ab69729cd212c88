"""Your own study end to end at tiny size: a CinC-style WFDB collection (synthetic ECGs in
the real layout: `#Age/#Sex/#Dx` SNOMED headers, annotation files beside each record) -> ingest with header
labels -> render with a declared task -> one matrix cell on it -> export -> predict with --labels; and the
model folder's bad inputs (another version, no config, an image size mismatch)."""
from __future__ import annotations

import json
import math
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

from helpers.data_ingest.crafted import ecg, write_wfdb
from heartbeit.config import ConfigError, load_config, write_resolved
from heartbeit.data.corpus import read_metadata
from heartbeit.data.ingest.stage import run_ingest
from heartbeit.data.render.stage import render_corpus
from heartbeit.data.splits import build_manifest, fraction_column

KEY = b"0123456789abcdef0123456789abcdef"
AF, SNR, LVH = "164889003", "426783006", "164873001"


def write_cinc_collection(root, n: int = 36, seed: int = 300) -> dict[str, float]:
    """CinC-layout records (`JS<nnnnn>.hea/.dat`, `#Age/#Sex/#Dx`) + an annotation file each, one broken
    record (truncated signal); returns {record: af label}."""
    truth = {}
    for i in range(n):
        name = f"JS{i:05d}"
        af = float(i % 3 == 0)
        dx = ",".join([AF if af else SNR] + ([LVH] if i % 4 == 0 else []))
        write_wfdb(root, name, ecg(seed + i, fs=500), fs=500,
                   comments=[f"Age: {40 + i % 40}", f"Sex: {'Male' if i % 2 else 'Female'}", f"Dx: {dx}",
                             "Rx: Unknown", "Hx: Unknown", "Sx: Unknown"])
        (root / f"{name}.atr").write_bytes(b"<" + bytes(range(40)))
        (root / f"{name}.qrs1").write_bytes(bytes(range(30)))
        truth[name] = af
    dat = root / f"JS{n - 1:05d}.dat"
    dat.write_bytes(dat.read_bytes()[:1000])  # refused at predict and ingest alike: truncated
    truth.pop(f"JS{n - 1:05d}")
    return truth


def test_declared_task_config_and_manifest():
    cfg = load_config("ci", overrides=["render.tasks.afib.column=af", "render.tasks.ef50.column=lvef",
                                       "render.tasks.ef50.positive=< 50", "matrix.tasks=[stemi, afib]"])
    assert list(cfg.render.tasks) == ["afib", "ef50"] and cfg.matrix.tasks == ["stemi", "afib"]
    with pytest.raises(ConfigError, match="matrix.tasks"):
        load_config("ci", overrides=["matrix.tasks=[afib]"])
    with pytest.raises(ConfigError, match="render.tasks.x"):
        load_config("ci", overrides=["render.tasks.x.column=af", "render.tasks.x.positive=about 3"])
    with pytest.raises(ConfigError, match=r"render: tasks\.hcm"):
        load_config("ci", overrides=["render.tasks.hcm.column=af"])
    rng = np.random.default_rng(0)
    n = 200
    meta = pd.DataFrame({"ecg_uid": [f"e{i:04d}" for i in range(n)], "patient_hash": [f"p{i // 2}" for i in range(n)],
                         "site": "a", "af": np.where(rng.random(n) < 0.2, 1.0, 0.0),
                         "lvef": np.where(rng.random(n) < 0.3, np.nan, rng.uniform(20, 70, n))})
    man = build_manifest(meta, cfg.render).set_index("ecg_uid")
    meta = meta.set_index("ecg_uid").loc[man.index]
    assert (man["afib"] == meta["af"]).all()
    assert (man["ef50"].isna() == meta["lvef"].isna()).all()
    assert (man.loc[meta["lvef"] < 50, "ef50"] == 1).all() and (man.loc[meta["lvef"] >= 50, "ef50"] == 0).all()
    train = man[man.split == "train"]
    # the declared task's own labelled pool, stratified: 100 % = every labelled training ECG
    full, small = train[fraction_column(1.0, "ef50")], train[fraction_column(0.1, "ef50")]
    assert full[train["ef50"].notna()].all() and not small[train["ef50"].isna() & ~full].any()
    picked = train[small & train["ef50"].notna()]
    assert 0 < picked["ef50"].sum() < len(picked) < train["ef50"].notna().sum()


@pytest.mark.slow
def test_own_study_end_to_end(tmp_path):
    from heartbeit.commands.matrix import CellTrainer
    from heartbeit.matrix import plan_cells, run_cells
    from heartbeit.modelio import ModelDirError, export_cell, load_model_dir
    from heartbeit.predict import run_predict

    truth = write_cinc_collection(tmp_path / "cinc")
    work = tmp_path / "run"
    cfg = load_config("ci", overrides=[
        f"workdir={work}", "render.tasks.afib.column=af", "matrix.tasks=[afib]",
        "matrix.architectures=[vit_micro_patch8_64]", "matrix.probe_architectures=[vit_micro_patch8_64]",
        "matrix.fractions=[1.0]", "matrix.epochs=1", "matrix.ablation_label_fraction=null",
        "matrix.jobs=1", "matrix.draws=1", "render.external_sites=[]", "render.val_fraction=0.3",
        "render.test_fraction=0.3", "render.fractions=[1.0]", "render.wave_hz=0", "ingest.label_key=record"])
    corpus = work / "corpus"
    summary = run_ingest([tmp_path / "cinc"], corpus, cfg.ingest, KEY, progress=False)
    assert summary["skipped"] == {"annotation": 2 * (len(truth) + 1)}
    assert summary["by_reason"] == {"truncated": 1} and summary["n_accepted"] == len(truth)
    assert read_metadata(corpus)["af"].sum() == sum(truth.values())
    images = work / "images"
    render_corpus(corpus, images, cfg.render, progress=False)
    assert json.loads((images / "index.json").read_text())["tasks"] == ["lvef_le40", "hcm", "stemi", "afib"]
    matrix_dir = work / "matrix"
    write_resolved(cfg, matrix_dir)
    cells = plan_cells(cfg.matrix, images, None)
    assert [(c.task, c.kind) for c in cells] == [("afib", "finetune"), ("afib", "probe")]
    counts = run_cells(cells, matrix_dir / "cells", CellTrainer(images, cfg, None), jobs=1)
    assert counts["failed"] == 0
    cell_dir = matrix_dir / "cells" / cells[0].cell_id
    # the report: tables, figures and saliency for the declared task, fine-tuned and probed
    import subprocess
    import sys
    from pathlib import Path

    results = work / "results"
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "report", "--profile", "ci", "--config",
                           str(matrix_dir / "config.resolved.yaml"), "--out", str(results), "--set",
                           "report.bootstrap=20", "--set", "report.wasserstein_pairs=5"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    auroc = pd.read_csv(results / "tables" / "metrics_long.csv")
    assert set(auroc.task) == {"afib"} and {"random", "random, linear probe"} <= set(auroc.init)
    assert (results / "figures" / "fraction_afib.png").is_file()
    assert (results / "saliency" / "lead_importance_afib.csv").is_file()
    probe = json.loads((matrix_dir / "cells" / cells[1].cell_id / "cell.json").read_text())
    assert probe["kind"] == "probe" and probe["init"] == "random, linear probe" and probe["probe_C"] > 0
    # embed: one row of backbone features per rendered ECG
    from heartbeit.train.probe import embed_images

    emb = embed_images(images, tmp_path / "emb.parquet", "vit_micro_patch8_64", img_size=64)
    feats = pd.read_parquet(tmp_path / "emb.parquet")
    assert emb["ecgs"] == len(feats) == len(truth) and emb["features"] == 64 and feats.ecg_uid.is_unique
    assert np.isfinite(feats.filter(like="f").to_numpy()).all()

    model_dir = tmp_path / "model"
    config = export_cell(cell_dir, model_dir)
    assert config["tasks"] == ["afib"] and config["outputs"][1]["name"] == "p_afib"
    assert 0 <= config["threshold"]["value"] <= 1 and config["image_size"] == 64
    card = (model_dir / "README.md").read_text()
    assert "load_model_dir" in card and "Youden" in card and "| test |" in card
    from safetensors.torch import load_file

    from heartbeit.models.zoo import build_classifier
    m = build_classifier(config["architecture"], 2, config["image_size"])  # built from validated fields only
    m.load_state_dict(load_file(str(model_dir / "model.safetensors")))  # the weights load strictly

    # predict with --labels: the user's own labels keyed by record name (af column); where the CSV and the
    # header disagree the CSV wins (JS00001: header sinus rhythm, CSV af=1)
    rows = ["record,af"] + [f"{k},{1 if k == 'JS00001' else int(v)}" for k, v in truth.items()]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "secure" / "pred.csv"
    res = run_predict([str(tmp_path / "cinc")], model_dir, out, KEY, labels_csv=str(tmp_path / "labels.csv"),
                      label_key="record", saliency_dir=str(tmp_path / "secure" / "sal"), progress=False,
                      batch_size=8)
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["source", "ecg_uid", "p_afib", "afib_pred"] and len(pred) == len(truth)
    assert sorted(pred.source) == sorted(f"{k}.hea" for k in truth)
    assert ((pred.p_afib >= config["threshold"]["value"]) == pred.afib_pred.astype(bool)).all()
    rejects = pd.read_csv(tmp_path / "secure" / "pred.rejects.csv")
    assert rejects.reason.tolist() == ["truncated"]
    for p in (out, tmp_path / "secure" / "pred.rejects.csv", tmp_path / "secure" / "pred.metrics.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    metrics = json.loads((tmp_path / "secure" / "pred.metrics.json").read_text())
    assert metrics["counts"]["n"] == len(truth) and metrics["counts"]["unlabelled"] == 0
    assert metrics["counts"]["tp"] + metrics["counts"]["fn"] == sum(truth.values()) + 1
    for name in ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv"):
        v = metrics[name]
        assert (v["low"] <= v["value"] <= v["high"]) or v["reason"], (name, v)
    sal = np.load(next((tmp_path / "secure" / "sal").glob("*.npz")))
    assert sal["map"].shape == (64, 64) and str(sal["peak_lead"]) != ""
    # the same ECGs scored in the corpus and by predict get the same ecg_uid (same ingest, same key)
    assert set(pred.ecg_uid) == set(read_metadata(corpus).ecg_uid)

    # bad model folders: another version, no config, an image size mismatch (tests/unit/test_model_hardening.py has
    # the crafted suite)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    cfg_json = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg_json, "heartbeit_version": "0.0.1"}))
    with pytest.raises(ModelDirError, match='exported by heartbeit "0.0.1"'):
        load_model_dir(other)
    (other / "config.json").write_text(json.dumps({**cfg_json, "image_size": 96,
                                                   "render": {**cfg_json["render"], "image_size": 96}}))
    with pytest.raises(ModelDirError, match="image size mismatch"):
        load_model_dir(other)
    (other / "config.json").unlink()
    with pytest.raises(ModelDirError, match="config.json: missing"):
        load_model_dir(other)
    assert math.isfinite(res["threshold"])


def test_linear_probe_folds_into_the_classifier_head():
    import timm
    import torch
    from sklearn.linear_model import LogisticRegression

    import heartbeit.models.zoo  # noqa: F401
    from heartbeit.train.finetune import Batch
    from heartbeit.train.probe import backbone_features, fold_into_head

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=2, in_chans=1).eval()
    images = (torch.rand(40, 1, 32, 32) * 255).to(torch.uint8)
    y = np.arange(40) % 2
    images[y == 1, :, :8] = 255  # separable
    f, labels, _ = backbone_features(model, [Batch(images, torch.as_tensor(y), [{}] * 40)], 0.5, 0.25, torch.device("cpu"))
    mu, sigma = f.mean(0), f.std(0) + 1e-6
    clf = LogisticRegression(C=0.1, max_iter=2000).fit((f - mu) / sigma, labels)
    fold_into_head(model, "resnet10t", clf.coef_[0], float(clf.intercept_[0]), mu, sigma)
    with torch.no_grad():
        p = torch.softmax(model((images.float() / 255 - 0.5) / 0.25), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(p, clf.predict_proba((f - mu) / sigma)[:, 1], atol=1e-4)


def test_plan_refuses_a_task_the_images_are_not_labelled_for(tmp_path):
    from heartbeit.config import MatrixConfig
    from heartbeit.matrix import plan_cells

    (tmp_path / "index.json").write_text(json.dumps({"tasks": ["lvef_le40", "hcm", "stemi"]}))
    with pytest.raises(ValueError, match=r"matrix.tasks \['afib'\].*render.tasks"):
        plan_cells(MatrixConfig(architectures=["resnet18"], tasks=["stemi", "afib"]), tmp_path, None)
    cells = plan_cells(MatrixConfig(architectures=["resnet18"], probe_architectures=["resnet18"], tasks=["stemi"], seeds=[0],
                                    fractions=[1.0]), tmp_path, None)
    finetune = plan_cells(MatrixConfig(architectures=["resnet18"], tasks=["stemi"], seeds=[0], fractions=[1.0]), tmp_path, None)
    assert [c.kind for c in cells] == ["finetune", "probe"]
    assert cells[0].cell_id == finetune[0].cell_id != cells[1].cell_id  # probes leave fine-tuning ids alone
