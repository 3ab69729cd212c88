"""What a model folder may hold, read as untrusted input (`predict`, `embed --model`) and written as
publishable output (`export`): the one schema both directions go through.

A model folder is made to leave the hospital, and one received from elsewhere is read inside a secure zone.
So nothing in it is trusted and nothing reaches it by default:
- **Reading bounded.** config.json and model.safetensors must be regular files inside the folder (not
  symbolic links), config.json at most MAX_CONFIG_BYTES of UTF-8 JSON (an object; no NaN/Infinity, no key
  twice, nesting at most MAX_JSON_DEPTH), the weights at most MAX_WEIGHTS_BYTES with a safetensors header of
  at most MAX_HEADER_BYTES whose every tensor lies inside the file (`read_safetensors`).
- **An allow-list.** `validate_config` knows every key of FORMAT with its type and range and refuses any
  other key; code builds the model from validated fields only (architecture, image size), never from
  arguments passed through. The render settings are bounded (image size <= MAX_IMAGE_SIZE, duration, rates),
  ingest settings are the IngestConfig fields of INGEST_FIELDS (no key path, no site map), and its resource
  bounds may only tighten the installed defaults (`effective_ingest`).
- **Small counts withheld.** Every count is an integer >= k (`suppression.min_count`, default
  `report.export_min_count` = 10) or a marker: `"< k"` for a count below k and WITHHELD for one that would
  give a count below k away by subtraction (`class_counts`, `confusion`)."""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from heartbeit.records import MODEL_CARD as CARD, MODEL_CONFIG as CONFIG, MODEL_WEIGHTS as WEIGHTS
from heartbeit.utils.text import safe_text

FORMAT = "heartbeit-model/2"
# Earlier formats: what changed, so the refusal can say what to do.
OLD_FORMATS = {"heartbeit-model/1": "format 1 published exact small counts and the site map, and passed its "
                                    "timm arguments through"}
FILES = (CONFIG, WEIGHTS, CARD)  # everything a model folder holds

MAX_CONFIG_BYTES = 1 << 20
MAX_JSON_DEPTH = 16
MAX_WEIGHTS_BYTES = 2 << 30  # BEiT-B/16 in float32 is 0.35 GB
MAX_HEADER_BYTES = 8 << 20  # a ResNet-152 header is ~40 kB
MAX_IMAGE_SIZE = 512  # the paper draws 224 px; 512 px is 5x the pixels and stays within a batch's memory
WITHHELD = "withheld"
WEIGHTS_METADATA = {"format": "pt"}  # the only safetensors metadata an export writes or a reader accepts
SPLITS = ("test", "external")
METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")
COUNT_KEYS = ("n", "n_pos", "n_neg", "tp", "fp", "fn", "tn")
THRESHOLD_METHOD = "Youden's J on the validation split of the selected epoch"
INPUT_NOTE = {"image": "uint8 image / 255", "wave": "waveform in mV"}
INIT = re.compile(r"(pretrained|imagenet|random)(, linear probe)?")
REASON = re.compile(r"[a-z_]{0,40}")
VERSION = re.compile(r"[0-9A-Za-z.+_-]{1,64}")
ARCH = re.compile(r"[a-z0-9_]{1,64}")
# IngestConfig fields an input pipeline needs; the rest describe building a corpus and stay out.
INGEST_EXCLUDED = ("key_file", "site_map", "workers", "chunk_size", "shard_size", "lock_wait_s")
# Ingest bounds that protect memory and time: a model folder may lower them, never raise them.
INGEST_UPPER_BOUNDS = ("max_file_mb", "max_decompressed_mb", "max_xml_elements", "max_fs")
# Regex features that can backtrack without bound (nested repetition); a model folder's patterns avoid them.
UNBOUNDED_REGEX = re.compile(r"[*+{]")
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class ModelDirError(ValueError):
    """A model folder that cannot be used (or a cell that cannot be exported); the message says why."""


def ingest_fields() -> tuple[str, ...]:
    from dataclasses import fields

    from heartbeit.config import IngestConfig

    return tuple(f.name for f in fields(IngestConfig) if f.name not in INGEST_EXCLUDED)


# ---- bounded reading ------------------------------------------------------------------------------------

def read_bounded(path: Path, limit: int, folder: Path) -> bytes:
    """The bytes of `path`, a regular file directly inside `folder` (not a link), at most `limit` bytes."""
    what = f"{safe_text(folder)}: {path.name}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelDirError(f"{what}: missing - not a model folder (make one with `heartbeit export`)") from None
    except OSError as exc:
        raise ModelDirError(f"{what}: cannot be read ({type(exc).__name__})") from None
    if stat.S_ISLNK(st.st_mode):
        raise ModelDirError(f"{what}: is a symbolic link; a model folder holds its own files")
    if not stat.S_ISREG(st.st_mode):
        raise ModelDirError(f"{what}: not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ModelDirError(f"{what}: cannot be read ({type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())  # the file opened, not the one looked at (it may have been swapped)
        if not stat.S_ISREG(st.st_mode):
            raise ModelDirError(f"{what}: not a regular file")
        if st.st_size > limit:
            raise ModelDirError(f"{what}: {st.st_size} bytes, over the {limit}-byte bound")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ModelDirError(f"{what}: over the {limit}-byte bound")
    return data


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _no_repeats(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {safe_text(k, 40)!r} appears twice")
        out[k] = v
    return out


def _depth(value: Any) -> int:
    """Nesting depth, without recursion (a value nested just below the interpreter's limit must not raise)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


def parse_json(data: bytes, what: str, allow_nan: bool = False) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity (unless `allow_nan`: a cell record's own NaN metrics), no repeated
    key, nesting <= MAX_JSON_DEPTH."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=None if allow_nan else _no_constants,
                           object_pairs_hook=_no_repeats)
    except UnicodeDecodeError:
        raise ModelDirError(f"{what}: not UTF-8 text") from None
    except RecursionError:
        raise ModelDirError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, big integers, NaN, repeated keys
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelDirError(f"{what}: not valid JSON ({safe_text(first, 120)})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ModelDirError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# ---- the schema -----------------------------------------------------------------------------------------

class _Check:
    """Key-naming checks: every failure says which key of config.json and what is wrong with it."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, problem: str):
        raise ModelDirError(f"{self.where}: config.json {key or 'top level'}: {problem}")

    def obj(self, v, key: str, required: tuple | list, optional: tuple = ()) -> dict:
        if not isinstance(v, dict):
            self.fail(key, f"expected an object, got {_kind(v)}")
        extra = [k for k in v if k not in required and k not in optional]
        if extra:
            self.fail(f"{key + '.' if key else ''}{safe_text(extra[0], 40)}", "not a field of this format "
                      f"({FORMAT} allows {', '.join(required)})")
        for k in required:
            if k not in v:
                self.fail(f"{key + '.' if key else ''}{k}", "missing")
        return v

    def num(self, v, key: str, lo: float, hi: float, integer: bool = False, lo_open: bool = False):
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type:
            self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {_kind(v)}")
        if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
            self.fail(key, f"{safe_text(v, 40)} outside {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return v

    def text(self, v, key: str, pattern: re.Pattern, hint: str) -> str:
        if not isinstance(v, str) or not pattern.fullmatch(v):
            self.fail(key, f"expected {hint}, got {_kind(v)}")
        return v

    def equal(self, v, key: str, expected) -> None:
        if v != expected:
            self.fail(key, f"expected {safe_text(json.dumps(expected), 120)}, got {_kind(v)}")

    def count(self, v, key: str, k: int) -> None:
        if isinstance(v, str) and v in (f"< {k}", WITHHELD):
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < k:
            self.fail(key, f"expected a count >= {k} (suppression.min_count) or '< {k}' / '{WITHHELD}', "
                           f"got {_kind(v)}")


def _kind(v) -> str:
    if isinstance(v, (dict, list)):
        return f"a JSON {'object' if isinstance(v, dict) else 'array'}"
    return safe_text(json.dumps(v) if isinstance(v, (str, int, float, bool)) or v is None else type(v).__name__, 60)


def outputs_of(task: str) -> list[dict]:
    return [{"index": 0, "meaning": f"not {task} (softmax probability)"},
            {"index": 1, "name": f"p_{task}", "meaning": f"probability of {task} (softmax)"}]


def decision_of(task: str) -> str:
    return f"{task}_pred = 1 when p_{task} >= value"


def check_architecture(arch, modality, chk: _Check) -> None:
    """A family of the matrix (models/families.py), registered with timm, in the modality it declares."""
    import timm

    from heartbeit.models import zoo
    from heartbeit.models.families import FAMILY_ORDER, arch_family

    chk.text(arch, "architecture", ARCH, "an architecture name")
    if arch_family(arch) not in FAMILY_ORDER or not timm.is_model(arch):
        chk.fail("architecture", f"{arch!r} is not an architecture of the benchmark (families: "
                                 f"{', '.join(FAMILY_ORDER)})")
    if modality != zoo.input_modality(arch):
        chk.fail("modality", f"{safe_text(modality, 20)!r} contradicts {arch} (takes {zoo.input_modality(arch)!r})")


def _check_render(render, image_size: int, chk: _Check) -> None:
    from heartbeit.config import ConfigError, RenderConfig, from_dict
    from heartbeit.data.render.plan import RENDER_FIELDS

    chk.obj(render, "render", RENDER_FIELDS)
    try:
        rcfg = from_dict(RenderConfig, render, prefix="render")
    except ConfigError as exc:
        chk.fail("render", safe_text(exc))
    if rcfg.image_size != image_size:
        chk.fail("render.image_size", f"{rcfg.image_size} differs from image_size {image_size}")
    for name, lo, hi in (("duration_s", 1.0, 60.0), ("resample_hz", 0, 2000), ("wave_hz", 0, 2000),
                         ("line_width", 0.0, 16.0), ("filter_order", 1, 12), ("baseline_fs", 0.0, 1000.0)):
        chk.num(getattr(rcfg, name), f"render.{name}", lo, hi)
    if 0 < rcfg.resample_hz < 50:
        chk.fail("render.resample_hz", f"{rcfg.resample_hz} Hz: 0 (the corpus rate) or at least 50 Hz")
    if 0 < rcfg.baseline_fs < 10:
        chk.fail("render.baseline_fs", f"{rcfg.baseline_fs:g} Hz: 0 (full rate) or at least 10 Hz")
    for i, w in enumerate(rcfg.median_windows_s):
        chk.num(w, f"render.median_windows_s[{i}]", 0.0, 5.0, lo_open=True)
    lo, hi = rcfg.bandpass_hz
    if not 0 < lo < hi <= 500:
        chk.fail("render.bandpass_hz", f"need 0 < low < high <= 500 Hz, got {lo:g}-{hi:g}")


def _check_ingest(ingest, chk: _Check) -> None:
    from heartbeit.config import ConfigError, IngestConfig, from_dict

    chk.obj(ingest, "ingest", ingest_fields())
    try:
        icfg = from_dict(IngestConfig, ingest, prefix="ingest")
    except ConfigError as exc:
        chk.fail("ingest", safe_text(exc))
    chk.num(icfg.corpus_fs, "ingest.corpus_fs", 50, 2000, integer=True)
    chk.num(icfg.duration_s, "ingest.duration_s", 1.0, 60.0)
    for name, limit in (("label_columns", 32), ("array_leads", 12), ("ptbxl_stemi_codes", 64),
                        ("ptbxl_stemi_stadia", 16)):
        if len(getattr(icfg, name)) > limit:
            chk.fail(f"ingest.{name}", f"more than {limit} entries")
    for table in ("dx_codes", "dx_patterns"):
        for label, items in getattr(icfg, table).items():
            if len(items) > 32 or any(len(p) > 120 for p in items):
                chk.fail(f"ingest.{table}.{label}", "more than 32 entries or an entry over 120 characters")
            if table == "dx_patterns" and any(UNBOUNDED_REGEX.search(p) for p in items):
                chk.fail(f"ingest.{table}.{label}", "a pattern with '*', '+' or '{' (repetition can take "
                                                   "unbounded time on crafted text); use literal alternatives")


def validate_config(config, where: str) -> dict:
    """`config` (parsed config.json) checked against FORMAT; returns it. ModelDirError names the key."""
    from heartbeit import __version__
    from heartbeit.config import PROFILES
    from heartbeit.config.core import ConfigError
    from heartbeit.config.render import LAYOUTS
    from heartbeit.config.tasks import TASK_NAME, TaskSpec
    from heartbeit.models import zoo

    chk = _Check(where)
    if not isinstance(config, dict):
        chk.fail("", f"expected an object, got {_kind(config)}")
    fmt = config.get("format")
    if isinstance(fmt, str) and fmt in OLD_FORMATS:
        raise ModelDirError(f"{where}: written by an earlier `heartbeit export` ({fmt}: {OLD_FORMATS[fmt]}); this "
                            f"heartbeit reads {FORMAT}: re-export the cell (heartbeit export CELL_DIR --out DIR "
                            "--overwrite)")
    if fmt != FORMAT:
        raise ModelDirError(f"{where}: format {_kind(fmt)} is not a heartbeit model folder format; this heartbeit "
                            f"reads {FORMAT}")
    if config.get("heartbeit_version") != __version__:
        raise ModelDirError(f"{where}: exported by heartbeit {_kind(config.get('heartbeit_version'))}, this is "
                            f"{__version__}; re-export the cell with this version")
    chk.obj(config, "", ("format", "heartbeit_version", "code_version", "architecture", "modality", "image_size",
                         "layout", "render", "ingest", "normalization", "tasks", "task_definitions", "outputs",
                         "threshold", "cell", "metrics", "suppression"))
    chk.text(config["code_version"], "code_version", VERSION, "a version string")
    check_architecture(config["architecture"], config["modality"], chk)
    arch = config["architecture"]
    size = chk.num(config["image_size"], "image_size", 16, MAX_IMAGE_SIZE, integer=True)
    if config["layout"] not in LAYOUTS:
        chk.fail("layout", f"expected one of {', '.join(LAYOUTS)}, got {_kind(config['layout'])}")
    _check_render(config["render"], size, chk)
    if config["render"]["layout"] != config["layout"]:
        chk.fail("render.layout", "differs from layout")
    _check_ingest(config["ingest"], chk)
    rate = config["render"]["resample_hz"] or config["ingest"]["corpus_fs"]
    if config["render"]["bandpass_hz"][0] >= rate / 2:
        chk.fail("render.bandpass_hz", f"low edge at or above the Nyquist frequency of {rate} Hz")
    norm = chk.obj(config["normalization"], "normalization", ("mean", "std", "input"))
    mean, std = zoo.normalization(arch)
    for name, expected in (("mean", mean), ("std", std)):
        chk.num(norm[name], f"normalization.{name}", -10.0, 10.0)
        if abs(norm[name] - expected) > 1e-6:
            chk.fail(f"normalization.{name}", f"{norm[name]!r} is not {arch}'s ({expected!r})")
    chk.equal(norm["input"], "normalization.input", INPUT_NOTE[config["modality"]])
    tasks = config["tasks"]
    if not isinstance(tasks, list) or len(tasks) != 1:
        chk.fail("tasks", f"expected a list of one task, got {_kind(tasks)}")
    task = chk.text(tasks[0], "tasks[0]", TASK_NAME, "a task name (lower-case letters, digits, '_')")
    defs = chk.obj(config["task_definitions"], "task_definitions", (task,))
    d = chk.obj(defs[task], f"task_definitions.{task}", ("column", "positive"))
    chk.text(d["column"], f"task_definitions.{task}.column", TASK_NAME, "a label column name")
    try:
        TaskSpec(d["column"], d["positive"] if isinstance(d["positive"], str) else "?").validate()
    except ConfigError as exc:
        chk.fail(f"task_definitions.{task}.positive", safe_text(exc))
    chk.equal(config["outputs"], "outputs", outputs_of(task))
    supp = chk.obj(config["suppression"], "suppression", ("min_count",))
    k = chk.num(supp["min_count"], "suppression.min_count", 1, 1000, integer=True)
    thr = chk.obj(config["threshold"], "threshold", ("value", "method", "n_val", "n_val_pos", "decision"))
    chk.num(thr["value"], "threshold.value", 0.0, 1.0)
    chk.equal(thr["method"], "threshold.method", THRESHOLD_METHOD)
    chk.equal(thr["decision"], "threshold.decision", decision_of(task))
    chk.count(thr["n_val"], "threshold.n_val", k)
    chk.count(thr["n_val_pos"], "threshold.n_val_pos", k)
    cell = chk.obj(config["cell"], "cell", ("cell_id", "kind", "fraction", "seed", "draw", "selected_epoch",
                                            "n_train", "n_train_pos", "init", "epochs", "profile"))
    chk.text(cell["cell_id"], "cell.cell_id", re.compile(r"[0-9a-f]{8,64}"), "a hexadecimal cell id")
    if cell["kind"] not in ("finetune", "probe"):
        chk.fail("cell.kind", f"expected finetune or probe, got {_kind(cell['kind'])}")
    chk.num(cell["fraction"], "cell.fraction", 0.0, 1.0, lo_open=True)
    for name, lo, hi in (("seed", 0, 2 ** 32), ("draw", 0, 10_000), ("selected_epoch", -1, 100_000),
                         ("epochs", 0, 100_000)):
        chk.num(cell[name], f"cell.{name}", lo, hi, integer=True)
    chk.count(cell["n_train"], "cell.n_train", k)
    chk.count(cell["n_train_pos"], "cell.n_train_pos", k)
    chk.text(cell["init"], "cell.init", INIT, "pretrained, imagenet or random (', linear probe')")
    if cell["profile"] not in (*PROFILES, "custom"):
        chk.fail("cell.profile", f"expected one of {', '.join(PROFILES)} or custom, got {_kind(cell['profile'])}")
    metrics = chk.obj(config["metrics"], "metrics", (), SPLITS)
    for split, m in metrics.items():
        chk.obj(m, f"metrics.{split}", (*METRICS, "counts"))
        for name in METRICS:
            v = chk.obj(m[name], f"metrics.{split}.{name}", ("value", "low", "high", "reason"))
            for part in ("value", "low", "high"):
                if v[part] is not None:
                    chk.num(v[part], f"metrics.{split}.{name}.{part}", 0.0, 1.0)
            chk.text(v["reason"], f"metrics.{split}.{name}.reason", REASON, "a reason code")
        counts = chk.obj(m["counts"], f"metrics.{split}.counts", COUNT_KEYS)
        for name in COUNT_KEYS:
            chk.count(counts[name], f"metrics.{split}.counts.{name}", k)
    return config


def effective_ingest(config: dict):
    """The IngestConfig predict reads files with: the model's settings, its resource bounds capped at the
    installed defaults, the corpus-building fields (INGEST_EXCLUDED) at their defaults."""
    from heartbeit.config import IngestConfig, from_dict

    icfg = from_dict(IngestConfig, config["ingest"], prefix="ingest")
    installed = IngestConfig()
    for name in INGEST_UPPER_BOUNDS:
        setattr(icfg, name, min(getattr(icfg, name), getattr(installed, name)))
    return icfg


# ---- small counts ---------------------------------------------------------------------------------------

def _shown(x: int, k: int):
    return int(x) if x >= k else f"< {k}"


def class_counts(n: int, n_pos: int, k: int) -> tuple:
    """(n, n_pos, n_neg) as published: a class count only when both classes hold >= k (else one of them
    with the total gives the small one away); the total when it is >= k."""
    n_neg = n - n_pos
    if n_pos >= k and n_neg >= k:
        return int(n), int(n_pos), int(n_neg)
    return _shown(n, k), (f"< {k}" if n_pos < k else WITHHELD), (f"< {k}" if n_neg < k else WITHHELD)


def confusion(counts: dict, k: int) -> dict:
    """The confusion matrix as published: its four cells only when every one is >= k (rates and class
    counts would otherwise give a small cell away by subtraction)."""
    cells = {c: int(counts[c]) for c in ("tp", "fp", "fn", "tn")}
    n, n_pos, n_neg = class_counts(sum(cells.values()), cells["tp"] + cells["fn"], k)
    if min(cells.values()) >= k:
        shown = dict(cells)
    else:
        shown = {c: (f"< {k}" if v < k else WITHHELD) for c, v in cells.items()}
    return {"n": n, "n_pos": n_pos, "n_neg": n_neg, **shown}


def publish_metrics(metrics: dict, k: int) -> dict:
    """threshold_metrics' output for publication: counts by `confusion`; the rates at the threshold only
    when all four cells are >= k, AUROC/AUPRC only when both classes are; reasons as their codes only
    (their text carries counts); NaN as null."""
    counts = metrics["counts"]
    cells_ok = min(int(counts[c]) for c in ("tp", "fp", "fn", "tn")) >= k
    pos, neg = int(counts["tp"]) + int(counts["fn"]), int(counts["fp"]) + int(counts["tn"])
    out = {}
    for name in METRICS:
        m = metrics[name]
        allowed = (pos >= k and neg >= k) if name in ("auroc", "auprc") else cells_ok
        if not allowed:
            out[name] = {"value": None, "low": None, "high": None, "reason": WITHHELD}
            continue
        out[name] = {part: (None if m[part] is None or not math.isfinite(m[part]) else float(m[part]))
                     for part in ("value", "low", "high")}
        out[name]["reason"] = str(m.get("reason") or "").split(":")[0].strip()
    out["counts"] = confusion(counts, k)
    return out


# ---- weights --------------------------------------------------------------------------------------------

def read_safetensors(path: Path, folder: Path) -> dict:
    """{name: tensor} of a safetensors file read with bounds: the file regular and inside `folder`, its
    header length, dtypes, shapes and offsets checked before any tensor is built; only WEIGHTS_METADATA."""
    from safetensors.torch import load

    what = f"{safe_text(folder)}: {path.name}"
    data = read_bounded(path, MAX_WEIGHTS_BYTES, folder)
    if len(data) < 10:
        raise ModelDirError(f"{what}: not a safetensors file ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(data) or data[8:9] != b"{":
        raise ModelDirError(f"{what}: not a safetensors file (header of {n} bytes in a file of {len(data)}; "
                            "a pickled checkpoint under this name?)")
    header = parse_json(data[8:8 + n], f"{what} header")
    if not isinstance(header, dict):
        raise ModelDirError(f"{what}: safetensors header is not an object")
    meta = header.pop("__metadata__", None)
    if meta not in (None, WEIGHTS_METADATA):
        raise ModelDirError(f"{what}: safetensors metadata {_kind(meta)} is not allowed (only "
                            f"{json.dumps(WEIGHTS_METADATA)})")
    body = len(data) - 8 - n
    spans = []
    for name, entry in header.items():
        label = f"{what}: tensor {safe_text(name, 60)!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelDirError(f"{label}: malformed header entry")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES or not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape):
            raise ModelDirError(f"{label}: unsupported dtype or shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ModelDirError(f"{label}: malformed data offsets")
        size = DTYPES[entry["dtype"]] * math.prod(shape)
        if not 0 <= offsets[0] <= offsets[1] <= body or offsets[1] - offsets[0] != size:
            raise ModelDirError(f"{label}: data offsets outside the file or not its size")
        spans.append(tuple(offsets))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise ModelDirError(f"{what}: tensors overlap")
    try:
        return load(data)
    except Exception as exc:  # noqa: BLE001 - the library's own parse of what passed our checks
        raise ModelDirError(f"{what}: not a readable safetensors file ({type(exc).__name__})") from None
