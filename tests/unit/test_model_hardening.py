"""predict, export and `embed --model` under attack: a crafted suite by class - model folders
(config.json structure, schema, bounds; the weights file), predict's arguments and outputs, labels and
duplicates, export targets, embed - plus a seeded fuzz over model-folder JSON. Every refusal must be a
ModelDirError / one line on stderr with exit code 2, never a traceback, a lost file or a silent wrong result."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from helpers.data_ingest.crafted import ecg, write_npz
from heartbeit.config import IngestConfig
from heartbeit.modelio import ModelDirError, load_model_dir, read_model_config
from heartbeit.modelschema import MAX_IMAGE_SIZE, effective_ingest
from helpers.model_fixtures import trained_cell


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    return trained_cell(tmp_path_factory)


@pytest.fixture(scope="module")
def ecgs(tmp_path_factory) -> Path:
    """Three plausible ECGs to score (arrays with a sidecar, keyed by accession)."""
    root = tmp_path_factory.mktemp("score") / "ecgs"
    for i in range(3):
        write_npz(root, f"e{i}", ecg(900 + i), sidecar={"accession": f"K{i}", "mrn": f"P{i}"})
    return root


@pytest.fixture
def folder(study, tmp_path) -> Path:
    """A copy of the good model folder, to damage."""
    dst = tmp_path / "model"
    shutil.copytree(study["model"], dst)
    return dst


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`heartbeit ARGV` in this process: (exit code, stdout, stderr)."""
    import logging

    from heartbeit.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    finally:
        root = logging.getLogger("heartbeit")  # the console handler was bound to this test's captured stderr
        for h in [h for h in root.handlers if getattr(h, "_heartbeit", False)]:
            root.removeHandler(h)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_refusal(rc: int, err: str, command: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"heartbeit {command}")]
    assert len(lines) == 1, err
    return lines[0]


def edit(folder: Path, change) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


# ---- class 1: config.json as a file ---------------------------------------------------------------------------

def _raw(data: bytes):
    return lambda folder: (folder / "config.json").write_bytes(data)


def _replace_file(kind: str):
    def go(folder: Path):
        path = folder / "config.json"
        text = path.read_bytes()
        path.unlink()
        if kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            outside = folder.parent / "elsewhere.json"
            outside.write_bytes(text)
            path.symlink_to(outside)
    return go


FILE_CASES = {
    "missing": (lambda f: (f / "config.json").unlink(), "config.json: missing"),
    "a folder": (_replace_file("folder"), "not a regular file"),
    "a fifo": (_replace_file("fifo"), "not a regular file"),
    "a symlink": (_replace_file("symlink"), "symbolic link"),
    "oversized": (_raw(b"{" + b" " * (1 << 20) + b"}"), "over the"),
    "not utf-8": (_raw(b'{"format": "\xff\xfe"}'), "not UTF-8"),
    "truncated": (_raw(b'{"format": "heartbeit-model/2", "arch'), "not valid JSON"),
    "an array": (_raw(b"[1, 2, 3]"), "top level: expected an object"),
    "deeply nested": (_raw(b"[" * 100_000 + b"]" * 100_000), "nested deeper|not valid JSON"),
    "nested near the recursion limit": (_raw(b"[" * 950 + b"]" * 950), "nested deeper"),
    "NaN literal": (_raw(b'{"format": NaN}'), "NaN is not JSON"),
    "repeated key": (_raw(b'{"format": "a", "format": "heartbeit-model/2"}'), "appears twice"),
    "huge integer": (_raw(b'{"image_size": ' + b"9" * 5000 + b"}"), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_config_file_that_cannot_be_read_safely(case, folder):
    damage, message = FILE_CASES[case]
    damage(folder)
    with pytest.raises(ModelDirError, match=message):
        load_model_dir(folder)


# ---- class 2: config.json against the schema ------------------------------------------------------------------

def _set(path: str, value):
    def change(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return change


_DELETE = object()
SCHEMA_CASES = {
    "old format": (_set("format", "heartbeit-model/1"), "earlier `heartbeit export`.*re-export"),
    "unknown format": (_set("format", "something/9"), "not a heartbeit model folder format"),
    "other version": (_set("heartbeit_version", "0.0.1"), "exported by heartbeit \"0.0.1\""),
    "timm kwargs passed through": (_set("model_kwargs", {"checkpoint_path": "/etc/passwd"}), "model_kwargs: not a field"),
    "missing block": (_set("render", _DELETE), "render: missing"),
    "no task": (_set("tasks", []), "tasks: expected a list of one task"),
    "threshold not a number": (_set("threshold.value", "abc"), "threshold.value: expected a number"),
    "threshold out of range": (_set("threshold.value", 1.5), "threshold.value: 1.5 outside"),
    "bool as image size": (_set("image_size", True), "image_size: expected an integer"),
    "modality contradicts architecture": (_set("modality", "wave"), "modality.*contradicts"),
    "architecture outside the benchmark": (_set("architecture", "mobilenetv3_small_100"), "not an architecture of"),
    "architecture as code": (_set("architecture", "__import__('os')"), "expected an architecture name"),
    "image size 8000 px": (_set("image_size", 8000), f"image_size: 8000 outside \\[16, {MAX_IMAGE_SIZE}\\]"),
    "render size disagrees": (_set("render.image_size", 96), "render.image_size: 96 differs"),
    "render unknown key": (_set("render.shell", "rm -rf /"), "render.shell: not a field"),
    "render duration 1e9 s": (_set("render.duration_s", 1e9), "render.duration_s"),
    "ingest key path": (_set("ingest.key_file", "/etc/shadow"), "ingest.key_file: not a field"),
    "ingest site map": (_set("ingest.site_map", {"Clinic X": "a"}), "ingest.site_map: not a field"),
    "ingest backtracking regex": (_set("ingest.dx_patterns", {"af": ["(a+)+$"]}), "ingest.dx_patterns.af"),
    "ingest corpus rate 1 MHz": (_set("ingest.corpus_fs", 1_000_000), "ingest.corpus_fs"),
    "normalisation std 0": (_set("normalization.std", 0.0), "normalization.std"),
    "normalisation mean text": (_set("normalization.mean", "x"), "normalization.mean: expected a number"),
    "task rule": (_set("task_definitions.stemi.positive", "about 3"), "task_definitions.stemi.positive"),
    "outputs relabelled": (_set("outputs", [{"index": 0}]), "outputs: expected"),
    "exact small count": (_set("threshold.n_val_pos", 3), "threshold.n_val_pos: expected a count >= 10"),
    "suppression off": (_set("suppression.min_count", 0), "suppression.min_count"),
    "a site as a split": (_set("metrics.external:Hospital_X", {}), "not a field"),
    "profile names a patient": (_set("cell.profile", "MRN5510223"), "cell.profile"),
    "format as an object": (_set("format", {"v": 2}), "not a heartbeit model folder format"),
    "resample to 1 Hz": (_set("render.resample_hz", 1), "render.resample_hz"),
    "baseline at 1e-9 Hz": (_set("render.baseline_fs", 1e-9), "render.baseline_fs"),
    "band-pass above Nyquist": (_set("render.bandpass_hz", [200.0, 300.0]), "render.bandpass_hz"),
    "reason text with counts": (_set("metrics.test.auroc.reason", "one_class: n_pos=3"), "reason: expected a reason"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_config_refused_by_the_schema_names_the_key(case, folder):
    change, message = SCHEMA_CASES[case]
    edit(folder, change)
    with pytest.raises(ModelDirError, match=message):
        load_model_dir(folder)


def test_a_large_registered_architecture_is_refused_before_allocating(folder):
    """vit_giant is a family member registered with timm (1 B parameters, 4 GB to build): the shapes are
    compared on the meta device, so the mismatch costs nothing."""
    import resource

    edit(folder, _set("architecture", "vit_giant_patch14_224"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelDirError, match="do not fit vit_giant_patch14_224"):
        load_model_dir(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # kB: far below 4 GB


def test_image_size_must_equal_the_weights(folder):
    edit(folder, lambda c: (_set("image_size", 128)(c), _set("render.image_size", 128)(c)))
    with pytest.raises(ModelDirError, match="image size mismatch"):
        load_model_dir(folder)


def test_ingest_bounds_in_a_model_folder_only_tighten(folder):
    edit(folder, lambda c: c["ingest"].update(max_xml_elements=3_000_000, max_file_mb=4096.0, max_fs=1e6,
                                              max_decompressed_mb=1.0))
    icfg = effective_ingest(read_model_config(folder))
    installed = IngestConfig()
    assert icfg.max_xml_elements == installed.max_xml_elements and icfg.max_file_mb == installed.max_file_mb
    assert icfg.max_fs == installed.max_fs and icfg.max_decompressed_mb == 1.0  # lower: kept


# ---- class 3: the weights file --------------------------------------------------------------------------------

def _weights(kind: str):
    def go(folder: Path):
        w = folder / "model.safetensors"
        data = w.read_bytes()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        if kind == "missing":
            w.unlink()
        elif kind == "folder":
            w.unlink()
            w.mkdir()
        elif kind == "symlink outside":
            (folder.parent / "w.safetensors").write_bytes(data)
            w.unlink()
            w.symlink_to(folder.parent / "w.safetensors")
        elif kind == "pickle":
            import torch

            torch.save({"x": torch.zeros(2)}, w)
        elif kind == "truncated":
            w.write_bytes(data[: len(data) // 2])
        elif kind == "header length 1 TB":
            w.write_bytes((1 << 40).to_bytes(8, "little") + data[8:])
        elif kind == "offsets outside":
            name = next(k for k in header if k != "__metadata__")
            header[name]["data_offsets"] = [0, 10 ** 12]
            blob = json.dumps(header).encode()
            w.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + n:])
        elif kind in ("metadata", "nan", "missing tensor"):
            from safetensors.torch import load_file, save_file

            tensors = load_file(str(w))
            meta = {"format": "pt"}
            if kind == "metadata":
                meta["source"] = "/data/PERPETUA_GOLDTHWAITE/cell"
            elif kind == "nan":
                next(t for t in tensors.values() if t.is_floating_point()).view(-1)[0] = float("nan")
            else:
                tensors.pop(sorted(tensors)[0])
            save_file(tensors, str(w), metadata=meta)
    return go


WEIGHT_CASES = {
    "missing": "model.safetensors: missing", "folder": "not a regular file",
    "symlink outside": "symbolic link", "pickle": "not a safetensors file", "truncated": "not a safetensors file|outside",
    "header length 1 TB": "not a safetensors file", "offsets outside": "outside the file",
    "metadata": "metadata .* is not allowed", "nan": "NaN or infinite", "missing tensor": "do not fit",
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_weights_are_bounded_safetensors_inside_the_folder(case, folder):
    _weights(case)(folder)
    with pytest.raises(ModelDirError, match=WEIGHT_CASES[case]):
        load_model_dir(folder)


# ---- class 4: predict's arguments and outputs -------------------------------------------------------------------

def predict(capsys, study, ecgs, tmp_path, *extra: str, inputs: list | None = None, out: Path | None = None):
    key = tmp_path / "k" / "deid.key"
    return cli(capsys, "predict", *(inputs or [str(ecgs)]), "--model", str(study["model"]), "--out",
               str(out or tmp_path / "secure" / "pred.csv"), "--key", str(key), "--no-progress", *extra)


def test_predict_writes_private_outputs_atomically_and_refuses_to_replace_them(capsys, study, ecgs, tmp_path):
    rc, out, err = predict(capsys, study, ecgs, tmp_path)
    assert rc == 0, err
    secure = tmp_path / "secure"
    assert stat.S_IMODE(secure.stat().st_mode) == 0o700  # a folder predict creates is private
    assert stat.S_IMODE((secure / "pred.csv").stat().st_mode) == 0o600
    assert not [p for p in secure.iterdir() if p.name.startswith(".")]  # no temporary left behind
    before = (secure / "pred.csv").read_bytes()
    line = one_line_refusal(*predict(capsys, study, ecgs, tmp_path)[::2], "predict")
    assert "exists; pass --overwrite" in line and (secure / "pred.csv").read_bytes() == before
    (secure / "pred.csv").chmod(0o644)
    rc, _, err = predict(capsys, study, ecgs, tmp_path, "--overwrite")
    assert rc == 0 and stat.S_IMODE((secure / "pred.csv").stat().st_mode) == 0o600


@pytest.mark.parametrize("case", ["an input file", "inside the input", "a symlink", "a folder", "the model"])
def test_predict_out_never_destroys(case, capsys, study, ecgs, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    inputs = None
    if case == "an input file":
        single = tmp_path / "one.npz"
        shutil.copy(ecgs / "e0.npz", single)
        shutil.copy(ecgs / "e0.json", tmp_path / "one.json")
        out, inputs, keep = single, [str(single)], single
    elif case == "inside the input":
        out, keep = ecgs / "pred.csv", None
    elif case == "a symlink":
        out, keep = tmp_path / "link.csv", victim
        out.symlink_to(victim)
    elif case == "a folder":
        out, keep = tmp_path / "adir", None
        out.mkdir()
    else:
        out, keep = study["model"] / "pred.csv", None
    before = keep.read_bytes() if keep else None
    rc, _, err = predict(capsys, study, ecgs, tmp_path, "--overwrite", inputs=inputs, out=out)
    one_line_refusal(rc, err, "predict")
    if keep:
        assert keep.read_bytes() == before and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not (ecgs / "pred.csv").exists() and not (study["model"] / "pred.csv").exists()


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], "must be >= 1"), (["--batch-size", "-1"], "must be >= 1"),
    (["--workers", "0"], "must be >= 1"), (["--device", "tpu"], "use auto, cpu, cuda"),
    (["--label-column", "A;B"], "--label-column"),
])
def test_predict_bad_arguments_are_one_line(args, message, capsys, study, ecgs, tmp_path):
    rc, _, err = predict(capsys, study, ecgs, tmp_path, *args)
    assert rc == 2 and message in err and "Traceback" not in err


def test_predict_cuda_without_a_gpu(capsys, study, ecgs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_line_refusal(*predict(capsys, study, ecgs, tmp_path, "--device", "cuda")[::2], "predict")
    assert "no such CUDA GPU" in line


@pytest.mark.parametrize("case", ["a folder", "readable by others"])
def test_predict_key_file_problems_are_named_truly(case, capsys, study, ecgs, tmp_path):
    key = tmp_path / "keydir"
    key.mkdir()
    if case == "readable by others":
        key = tmp_path / "open.key"
        key.write_text("x" * 64)
        key.chmod(0o644)
    rc, _, err = cli(capsys, "predict", str(ecgs), "--model", str(study["model"]), "--out", str(tmp_path / "p.csv"),
                     "--key", str(key), "--no-progress")
    line = one_line_refusal(rc, err, "predict")
    assert ("not a regular file" if case == "a folder" else "readable by others") in line


def test_labels_must_be_zero_or_one_and_a_named_column(capsys, study, ecgs, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("accession,stemi,lvh\nK0,2,1\nK1,-1,0\nK2,1,1\n")
    rc, out, err = predict(capsys, study, ecgs, tmp_path, "--labels", str(csv))
    assert rc == 0, err
    m = json.loads((tmp_path / "secure" / "pred.metrics.json").read_text())
    assert m["counts"]["n"] == 1 and m["counts"]["refused_label"] == 2 and m["counts"]["csv_rows_refused"] == 2
    assert m["counts"]["tp"] + m["counts"]["fn"] == 1  # 2 and -1 never counted as negatives
    rc, out, err = predict(capsys, study, ecgs, tmp_path, "--labels", str(csv), "--label-column", "lvh",
                           "--overwrite")
    assert rc == 0, err
    m = json.loads((tmp_path / "secure" / "pred.metrics.json").read_text())
    assert m["labels"]["column"] == "lvh" and m["labels"]["differs_from_task"] and "not the model's task" in \
        m["labels"]["note"]
    assert m["counts"]["n"] == 3 and m["counts"]["tp"] + m["counts"]["fn"] == 2
    line = one_line_refusal(*predict(capsys, study, ecgs, tmp_path, "--labels", str(csv), "--label-column", "hcm",
                                     "--overwrite")[::2], "predict")
    assert "no column 'hcm'" in line
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)  # reading it would block forever
    line = one_line_refusal(*predict(capsys, study, ecgs, tmp_path, "--labels", str(fifo), "--overwrite")[::2],
                            "predict")
    assert "not a regular file" in line
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    line = one_line_refusal(*predict(capsys, study, ecgs, tmp_path, "--labels", str(empty), "--overwrite")[::2],
                            "predict")
    assert "empty" in line


def test_the_same_file_or_waveform_twice_is_scored_once(capsys, study, ecgs, tmp_path):
    root = tmp_path / "dups"
    shutil.copytree(ecgs, root)
    (root / "link.npz").symlink_to(root / "e0.npz")
    os.link(root / "e1.npz", root / "hard.npz")
    shutil.copy(root / "e2.npz", root / "copy.npz")
    shutil.copy(root / "e2.json", root / "copy.json")
    (root / "=cmd()|x.xml").write_bytes(b"not an ECG")  # refused under a name a spreadsheet would run
    rc, out, err = predict(capsys, study, ecgs, tmp_path, inputs=[str(root), str(root / "e0.npz")])
    assert rc == 0, err
    import pandas as pd

    pred = pd.read_csv(tmp_path / "secure" / "pred.csv")
    rej = pd.read_csv(tmp_path / "secure" / "pred.rejects.csv")
    assert len(pred) == 3 and pred.ecg_uid.is_unique
    assert rej.reason.value_counts().to_dict() == {"duplicate_input": 3, "duplicate_recording": 1, "unreadable": 1}
    assert "duplicate_input 3" in out
    formula = tmp_path / "formula"
    formula.mkdir()
    (formula / "=cmd()|x.xml").write_bytes(b"not an ECG")
    assert predict(capsys, study, ecgs, tmp_path, "--overwrite", inputs=[str(formula)])[0] == 0
    rej = pd.read_csv(tmp_path / "secure" / "pred.rejects.csv")
    assert rej.source.tolist() == ["'=cmd()|x.xml"] and rej.detail[0].startswith("'=")


def test_non_finite_scores_stop_the_run_before_writing(capsys, study, ecgs, tmp_path, monkeypatch):
    import heartbeit.predict as predict_mod

    real = predict_mod.model_inputs
    monkeypatch.setattr(predict_mod, "model_inputs", lambda w, c: real(w, c).astype(np.float32) * np.inf)
    line = one_line_refusal(*predict(capsys, study, ecgs, tmp_path)[::2], "predict")
    assert "NaN or infinite score" in line and not (tmp_path / "secure" / "pred.csv").exists()


def test_an_unexpected_error_is_one_line_with_a_hint(capsys, study, ecgs, tmp_path, monkeypatch):
    import heartbeit.predict as predict_mod

    def boom(*a, **k):
        raise KeyError("PERPETUA")

    monkeypatch.setattr(predict_mod, "run_predict", boom)
    rc, _, err = predict(capsys, study, ecgs, tmp_path)
    assert rc == 1 and err.strip().count("\n") == 0 and "--log-level DEBUG" in err and "PERPETUA" not in err
    rc, _, err = cli(capsys, "--log-level", "DEBUG", "predict", str(ecgs), "--model", str(study["model"]),
                     "--out", str(tmp_path / "p.csv"), "--key", str(tmp_path / "k.key"), "--no-progress")
    assert rc == 1 and "Traceback" in err


def test_predict_with_a_crafted_model_folder_is_one_line(capsys, folder, ecgs, tmp_path):
    edit(folder, _set("image_size", 40000))
    rc, _, err = cli(capsys, "predict", str(ecgs), "--model", str(folder), "--out", str(tmp_path / "p.csv"),
                     "--key", str(tmp_path / "k.key"), "--no-progress")
    assert "image_size: 40000 outside" in one_line_refusal(rc, err, "predict")


# ---- class 5: export targets ------------------------------------------------------------------------------------

def test_export_is_atomic_and_overwrite_replaces_a_model_folder_whole(capsys, study, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    shutil.copytree(study["model"], out)
    (out / "README.md").write_text("stale")
    line = one_line_refusal(*cli(capsys, "export", str(study["cell_dir"]), "--out", str(out))[::2], "export")
    assert "exists; pass --overwrite" in line
    rc, _, err = cli(capsys, "export", str(study["cell_dir"]), "--out", str(out), "--overwrite")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "stale" not in (out / "README.md").read_text()
    (out / "notes.txt").write_text("mine")  # no longer only a model folder: --overwrite refuses to delete it
    line = one_line_refusal(*cli(capsys, "export", str(study["cell_dir"]), "--out", str(out), "--overwrite")[::2],
                            "export")
    assert "model folders only" in line and (out / "notes.txt").read_text() == "mine"
    import heartbeit.modelcard as card

    monkeypatch.setattr(card, "model_card", lambda c: 1 / 0)
    fresh = tmp_path / "never"
    rc, _, err = cli(capsys, "export", str(study["cell_dir"]), "--out", str(fresh))
    assert rc == 1 and not fresh.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


@pytest.mark.parametrize("case", ["a file", "a symlink", "inside the cell", "holding the cell"])
def test_export_refuses_targets(case, capsys, study, tmp_path):
    if case == "a file":
        out = tmp_path / "f"
        out.write_text("x")
    elif case == "a symlink":
        out = tmp_path / "l"
        out.symlink_to(tmp_path)
    elif case == "inside the cell":
        out = study["cell_dir"] / "model"
    else:
        out = study["cell_dir"].parent
    rc, _, err = cli(capsys, "export", str(study["cell_dir"]), "--out", str(out), "--overwrite")
    one_line_refusal(rc, err, "export")
    assert study["cell_dir"].is_dir() and not (study["cell_dir"] / "model").exists()


# ---- class 6: embed --model -------------------------------------------------------------------------------------

def test_embed_with_a_model_folder(capsys, study, folder, tmp_path):
    images = study["work"] / "images"
    out = tmp_path / "f.parquet"
    rc, _, err = cli(capsys, "embed", "--model", str(study["model"]), "--images", str(images), "--out", str(out))
    assert rc == 0 and out.is_file(), err
    line = one_line_refusal(*cli(capsys, "embed", "--model", str(study["model"]), "--images", str(images), "--out",
                                 str(out))[::2], "embed")
    assert "exists" in line
    edit(folder, _set("ingest.site_map", {"x": "y"}))
    rc, _, err = cli(capsys, "embed", "--model", str(folder), "--images", str(images), "--out", str(tmp_path / "g"))
    assert "ingest.site_map" in one_line_refusal(rc, err, "embed")
    rc, _, err = cli(capsys, "embed", "--model", str(study["model"]), "--images", str(images), "--out",
                     str(images / "inside.parquet"))
    assert "inside an input" in one_line_refusal(rc, err, "embed")


# ---- a seeded fuzz over model-folder JSON -----------------------------------------------------------------------

def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutant(rng: np.random.Generator):
    choices = [None, True, -1, 0, 2 ** 63, 1e308, -1e308, 0.5, "", "x" * 5000, "\x1b[31mPERPETUA\n", "/etc/passwd",
               [], [1, "a"], {}, {"__class__": 1}, [[[[[]]]]], "heartbeit-model/2", 64, 224, "vit_giant_patch14_224"]
    return choices[int(rng.integers(len(choices)))]


NUMBERS = [0, 1, 2, 3, 9, 16, 17, 49, 50, 100, 511, 512, 513, 1000, 2000, 2001, 0.001, 0.5, 59.9, 60, 1e-9, -0.0]


def _shapes_input(checked: dict, good: dict) -> bool:
    """Whether an accepted mutation changed what turns an ECG into the model's input."""
    return checked["render"] != good["render"] or any(
        checked["ingest"][k] != good["ingest"][k] for k in ("corpus_fs", "duration_s"))


def test_every_field_swapped_for_every_kind_of_value(folder):
    """Systematically: each key of config.json (at any depth) replaced by each of a few values of every
    kind - refused with a ModelDirError, or accepted with an input pipeline that runs."""
    from heartbeit.predict import model_inputs

    good = json.loads((folder / "config.json").read_text())
    outcomes = {"refused": 0, "accepted": 0}
    for path in [p for p in _paths(good) if p and not isinstance(p[-1], int)]:
        for value in (None, "x", -1, 1e-9, 3, 1e308, [1.0, 2.0]):
            cfg = json.loads(json.dumps(good))
            node = cfg
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = value
            (folder / "config.json").write_text(json.dumps(cfg))
            try:
                checked = read_model_config(folder)
            except ModelDirError:
                outcomes["refused"] += 1
                continue
            outcomes["accepted"] += 1
            icfg = effective_ingest(checked)
            if _shapes_input(checked, good):
                wave = np.zeros((1, 12, int(icfg.corpus_fs * icfg.duration_s)), np.int16)
                assert np.isfinite(model_inputs(wave, checked).astype(np.float32)).all(), path
    assert outcomes["refused"] > 4 * outcomes["accepted"] > 0, outcomes


def test_fuzzed_model_folder_json_is_refused_or_valid(folder):
    """400 seeded mutations of config.json (a value replaced by another type or an extreme number, a key
    dropped or added, bytes flipped): each is a ModelDirError, or a config the schema accepts whose bounds
    hold and whose input pipeline turns ECGs into finite model inputs - never another exception."""
    from heartbeit.predict import model_inputs

    rng = np.random.default_rng(31)
    good = json.loads((folder / "config.json").read_text())
    paths = [p for p in _paths(good) if p]
    accepted = 0
    for i in range(400):
        cfg = json.loads(json.dumps(good))
        kind = i % 5
        if kind == 3:  # bytes flipped
            raw = bytearray(json.dumps(good).encode())
            for _ in range(int(rng.integers(1, 4))):
                raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
            data = bytes(raw)
        else:
            path = paths[int(rng.integers(len(paths)))]
            parent = cfg
            for p in path[:-1]:
                parent = parent[p]
            if kind == 0:
                parent[path[-1]] = _mutant(rng)
            elif kind == 4:
                parent[path[-1]] = NUMBERS[int(rng.integers(len(NUMBERS)))]
            elif kind == 1 and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[f"extra{i}"] = _mutant(rng)
            data = json.dumps(cfg).encode()
        (folder / "config.json").write_bytes(data)
        try:
            checked = read_model_config(folder)
        except ModelDirError:
            continue
        accepted += 1
        assert 16 <= checked["image_size"] <= MAX_IMAGE_SIZE
        icfg = effective_ingest(checked)
        assert icfg.max_xml_elements <= IngestConfig().max_xml_elements and icfg.max_file_mb <= 256
        if _shapes_input(checked, good):
            n = int(icfg.corpus_fs * icfg.duration_s)
            x = model_inputs(np.random.default_rng(i).normal(0, 300, (1, 12, n)).astype(np.int16), checked)
            assert np.isfinite(x.astype(np.float32)).all()
    (folder / "config.json").write_text(json.dumps(good))
    assert 0 < accepted < 200, accepted  # benign mutations (a threshold within range) pass; most are refused
    load_model_dir(folder)
