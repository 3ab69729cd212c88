"""One small real study with identifiers planted in every input channel, for the model-folder tests:
crafted MUSE / WFDB / npz files under folders named after a patient, free text and site text naming them, a
labels CSV keyed by accession numbers, a key file and labels path that name them, a site map keyed by their
clinic -> ingest -> render (64 px) -> one fine-tuned cell (real training, 1 epoch) -> `heartbeit export`.
Built once per test session (about 8 s) and shared by the test modules that need a cell or a model folder."""
from __future__ import annotations

from pathlib import Path

from helpers.data_ingest.crafted import (SECRET_DOB, SECRET_LOCATION, SECRET_OPERATOR, ecg, muse_bytes, write_npz,
                                 write_wfdb)

NAME_FIRST, NAME_LAST = "PERPETUA", "GOLDTHWAITE"
MRN = "MRN5510223"
ACC = "ACCX8123"
CLINIC = f"Clinic {NAME_LAST} Street"
# every string planted, and each must be absent from every byte a model folder publishes
PLANTED = [NAME_FIRST, NAME_LAST, MRN, ACC, CLINIC, SECRET_DOB, SECRET_LOCATION, SECRET_OPERATOR, "hosp_perpetua"]
KEY = b"m" * 32

_BUILT: dict = {}


def write_planted_inputs(root: Path, n: int = 30) -> Path:
    """n ECGs (npz, MUSE, WFDB in turn) under `root`/<a patient's name>/ with identifiers in their text, and
    labels.csv (accession -> stemi) beside `root`; returns the labels CSV."""
    below = root / f"{NAME_FIRST}_{NAME_LAST}_visits"
    rows = ["accession,stemi"]
    for i in range(n):
        signals = ecg(700 + i, scale=1.0 + 0.4 * (i % 2))
        if i % 3 == 0:
            write_npz(below, f"{MRN}_{i:02d}", signals, sidecar={
                "site": CLINIC, "accession": f"{ACC}{i:02d}", "mrn": f"{MRN}{i:02d}", "first_name": NAME_FIRST,
                "last_name": NAME_LAST})
        elif i % 3 == 1:
            (below / f"{NAME_LAST}_{i:02d}.xml").write_bytes(muse_bytes(
                signals, mrn=f"{MRN}{i:02d}", accession=f"{ACC}{i:02d}", first=NAME_FIRST, last=NAME_LAST,
                site=CLINIC))
        else:
            write_wfdb(below, f"rec_{NAME_LAST}_{i:02d}", signals, comments=[
                f"Patient ID: {MRN}{i:02d}", f"Name: {NAME_FIRST} {NAME_LAST}", "Age: 61", "Sex: Male"])
        rows.append(f"{ACC}{i:02d},{i % 2}")
    labels = root.parent / f"labels_{NAME_LAST}.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def trained_cell(tmp_path_factory) -> dict:
    """{cell_dir, work, inputs, labels, model, config}: the planted study and its exported model folder."""
    if _BUILT:
        return _BUILT
    from heartbeit.commands.matrix import CellTrainer
    from heartbeit.config import load_config, write_resolved
    from heartbeit.data.ingest.stage import run_ingest
    from heartbeit.data.render.stage import render_corpus
    from heartbeit.matrix import plan_cells, run_cells
    from heartbeit.modelio import export_cell

    base = tmp_path_factory.mktemp("planted") / f"{MRN}_{NAME_LAST}"
    inputs = base / "hosp_perpetua"
    labels = write_planted_inputs(inputs)
    work = base / "run"
    key_file = base / f"secret_{NAME_LAST}" / "deid.key"
    cfg = load_config("ci", overrides=[
        f"workdir={work}", "matrix.tasks=[stemi]", "matrix.architectures=[vit_micro_patch8_64]",
        "matrix.probe_architectures=[]", "matrix.fractions=[1.0]", "matrix.epochs=1",
        "matrix.ablation_label_fraction=null", "matrix.jobs=1", "matrix.draws=1", "render.external_sites=[]",
        "render.val_fraction=0.3", "render.test_fraction=0.3", "render.fractions=[1.0]", "render.wave_hz=0",
        "ingest.corpus_fs=250", f"input_dirs=[{inputs}]", f"labels_csv={labels}", f"ingest.key_file={key_file}",
        f"ingest.site_map={{'{CLINIC}': clinic_a}}"])
    summary = run_ingest([inputs], work / "corpus", cfg.ingest, KEY, labels_csv=str(labels), progress=False)
    assert summary["n_accepted"] == 30, summary
    render_corpus(work / "corpus", work / "images", cfg.render, progress=False)
    write_resolved(cfg, work / "matrix")
    cells = plan_cells(cfg.matrix, work / "images", None)
    counts = run_cells(cells[:1], work / "matrix" / "cells", CellTrainer(work / "images", cfg, None), jobs=1)
    assert counts["failed"] == 0, counts
    cell_dir = work / "matrix" / "cells" / cells[0].cell_id
    model = base / "export" / "model"
    config = export_cell(cell_dir, model)
    _BUILT.update(cell_dir=cell_dir, work=work, inputs=inputs, labels=labels, model=model, config=config)
    return _BUILT
