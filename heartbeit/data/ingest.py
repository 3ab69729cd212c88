"""Ingest: input files -> de-identified corpus (WebDataset shards + metadata.parquet) + rejects ledger.

Top to bottom:
1. `list_inputs` walks the inputs in sorted order. WFDB signal files named by a header and array sidecars
   are companions, not inputs; documentation/CSV files are skipped; every other file is an input.
2. Each input is read by a worker (`process_file`): format sniffed by content (or forced), read into an
   ECGRecord, labels joined, quality-gated, cropped/resampled/quantised, de-identified. It returns a row
   and an int16 waveform, or a (reason, detail) reject. Workers run in a process pool over chunks; results
   come back in input order (`imap`), so the output does not depend on the number of workers.
3. The main process drops duplicate recordings (same keyed waveform hash as an earlier input), fills
   shards of `shard_size` samples, and after every shard writes a ledger entry (rows, rejects, how many
   inputs are done). An interrupted run resumes from the ledger; a finished run is renamed into place.
   A rerun with the same inputs, config and key is a no-op.
4. Slurm arrays: `slice_inputs` gives task i of N a contiguous block of the sorted listing; each task
   writes a complete part corpus; `merge_parts` joins them (renumbering shards, dropping duplicates across
   tasks) into the same layout."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from heartbeit.config import IngestConfig, dump_yaml
from heartbeit.utils.io import atomic_write_json, atomic_write_text, code_version, sha256_file

from . import deid
from .arrays import ArrayDefaults, read_array, sniff_array
from .corpus import SHARD_DIR, ShardWriter, iter_shard, list_shards, sample_json, shard_name, write_shard, npy_bytes
from .labels import TASK_COLUMNS, join_labels, load_labels
from .muse import parse_muse
from .ptbxl import ScpTaskMap, ptbxl_labels
from .quality import check_signals, to_corpus
from .reasons import IngestError, Reason
from .wfdb_io import looks_like_wfdb_header, read_wfdb, signal_files

log = logging.getLogger("heartbeit.ingest")

FORMATS = ("auto", "muse", "wfdb", "npz", "npy", "mat")
SKIP_SUFFIXES = {".csv", ".json", ".md", ".txt", ".yaml", ".yml", ".dtd", ".pdf", ".html", ".py", ".sh",
                 ".tsv", ".rst", ".log", ".key"}
SKIP_NAMES = {"RECORDS", "ANNOTATORS", "SHA256SUMS.txt", "LICENSE", "README"}
REJECT_COLUMNS = ["source_path", "reason", "detail", "format"]
PARTS_SUFFIX = ".parts"


# ---- listing ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputFile:
    path: str  # absolute
    rel: str  # relative to its input root (prefixed by the root's name when several roots are given)


def _is_skipped(p: Path) -> bool:
    return (p.name.startswith(".") or p.suffix.lower() in SKIP_SUFFIXES or p.name in SKIP_NAMES
            or p.name.upper().startswith(("LICENSE", "README")))


def list_inputs(inputs: list[str | Path]) -> list[InputFile]:
    """Every input file in a deterministic order (sorted relative paths, roots in the order given)."""
    roots = [Path(p).resolve() for p in inputs]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(str(root))
    out: list[InputFile] = []
    prefix_roots = len(roots) > 1
    for root in roots:
        if root.is_file():
            out.append(InputFile(str(root), root.name if not prefix_roots else f"{root.parent.name}/{root.name}"))
            continue
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(Path(dirpath) / f for f in filenames)
        claimed = set()
        for f in files:
            if f.suffix.lower() == ".hea":
                claimed.update(signal_files(f))
        for f in sorted(files):
            if f in claimed or _is_skipped(f):
                continue
            rel = f.relative_to(root).as_posix()
            out.append(InputFile(str(f), f"{root.name}/{rel}" if prefix_roots else rel))
    return out


def slice_inputs(files: list, task: int, count: int) -> list:
    """Task `task` of `count` takes the contiguous block [task*L//count, (task+1)*L//count)."""
    if not 0 <= task < count:
        raise ValueError(f"array task {task} outside 0..{count - 1}")
    n = len(files)
    return files[task * n // count:(task + 1) * n // count]


# ---- one file -----------------------------------------------------------------------------------------

@dataclass
class Context:
    cfg: IngestConfig
    key: bytes
    labels: dict | None
    label_key: str
    fmt: str
    array_defaults: ArrayDefaults
    scp_map: ScpTaskMap


_CTX: Context | None = None


def _init_worker(ctx: Context) -> None:
    global _CTX
    _CTX = ctx
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def detect_format(path: Path, head: bytes) -> str | None:
    """By content: XML -> muse, numpy/MATLAB magic -> array kind, WFDB record line -> wfdb."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<"):
        return "muse"
    kind = sniff_array(head)
    if kind:
        return kind
    if path.suffix.lower() == ".hea" or (b"\x00" not in head and looks_like_wfdb_header(head)):
        return "wfdb"
    return None


def resolve_format(item: InputFile, ctx: Context) -> str:
    """The format to read `item` as: forced by --format, else sniffed from its first bytes."""
    path = Path(item.path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise IngestError(Reason.UNREADABLE, f"{item.rel}: cannot read ({type(exc).__name__})") from None
    if size > ctx.cfg.max_file_mb * 1024 * 1024:
        raise IngestError(Reason.UNSUPPORTED, f"{item.rel}: {size} bytes is larger than any 12-lead ECG file")
    if not head:
        raise IngestError(Reason.UNREADABLE, f"{item.rel}: empty file")
    fmt = ctx.fmt if ctx.fmt != "auto" else detect_format(path, head)
    if fmt is None:
        hint = " (a WFDB signal file without its .hea header?)" if path.suffix.lower() in (".dat", ".mat") else ""
        raise IngestError(Reason.UNREADABLE, f"{item.rel}: not a recognised ECG format{hint}")
    return fmt


def read_record(item: InputFile, ctx: Context, fmt: str | None = None):
    """Read one input into an ECGRecord (IngestError on bad input)."""
    fmt = fmt or resolve_format(item, ctx)
    path = Path(item.path)
    if fmt == "muse":
        record = parse_muse(path.read_bytes(), item.rel, ctx.cfg.waveform)
    elif fmt == "wfdb":
        record = read_wfdb(path, name=item.rel)
    else:
        record = read_array(path, kind=fmt, defaults=ctx.array_defaults, name=item.rel)
    if not record.meta.get("site"):
        record.meta["site"] = path.parent.name  # exports without a site field: the folder they sit in
    return record


def process_file(item: InputFile, ctx: Context | None = None):
    """-> ("ok", row, int16 [12, n]) or ("reject", rel, format, reason, detail). Never raises."""
    ctx = ctx or _CTX
    fmt = "unknown"
    try:
        fmt = resolve_format(item, ctx)
        record = read_record(item, ctx, fmt)
        check_signals(record.signals, record.fs, item.rel, ctx.cfg)
        wave = to_corpus(record.signals, record.fs, ctx.cfg, item.rel)
        # A PTB-XL record's labels come from its SCP statements only: its ecg_id / patient_id are small
        # integers that a hospital label file's accession / MRN keys could match by accident.
        labels = ({t: math.nan for t in TASK_COLUMNS} if "scp_codes" in record.meta
                  else join_labels(record.meta, ctx.labels, ctx.label_key))
        for task, value in ptbxl_labels(record.meta, ctx.scp_map).items():
            if math.isnan(labels.get(task, math.nan)):
                labels[task] = value
        uid = deid.ecg_uid(ctx.key, hashlib.sha256(wave.tobytes()).digest() + str(wave.shape).encode())
        row = deid.deidentify(record.meta, labels, uid, ctx.key, ctx.cfg.date_policy, ctx.cfg.date_shift_max_days)
        row.update(format=fmt, fs=float(ctx.cfg.corpus_fs), n_samples=int(wave.shape[1]),
                   source_fs=float(record.fs))
        return ("ok", row, wave)
    except IngestError as exc:
        return ("reject", item.rel, fmt, exc.reason.value, exc.detail)
    except (MemoryError, RecursionError) as exc:
        return ("reject", item.rel, fmt, Reason.MALFORMED.value, f"{item.rel}: file exhausts reader resources "
                                                                 f"({type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop the run; the text may hold identifiers
        return ("reject", item.rel, fmt, Reason.MALFORMED.value,
                f"{item.rel}: unexpected {type(exc).__name__} while reading")


# ---- the run ------------------------------------------------------------------------------------------

def _fingerprint(files: list[InputFile], cfg: IngestConfig, key: bytes, labels_csv: str | None, fmt: str,
                 array_defaults: ArrayDefaults, label_key: str, extra: dict | None = None) -> str:
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f.path)
        h.update(f"{f.rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    settings = {"cfg": asdict(cfg), "key": deid.key_fingerprint(key), "fmt": fmt, "label_key": label_key,
                "arrays": asdict(array_defaults), "labels": sha256_file(labels_csv) if labels_csv else "",
                "extra": extra or {}}
    settings["cfg"].pop("workers", None)  # worker count never changes the output
    settings["cfg"].pop("chunk_size", None)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _rows_frame(rows: list[dict]) -> pd.DataFrame:
    base = ["ecg_uid", "patient_hash", "site", "format", "device", "fs", "source_fs", "n_samples", "sex", "age",
            "age_band", "year", *TASK_COLUMNS, "shard"]
    df = pd.DataFrame(rows)
    for col in base:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64" if col not in ("ecg_uid", "patient_hash", "site", "format",
                                                                "device", "sex", "age_band", "shard") else "object")
    extra = sorted(c for c in df.columns if c not in base)
    df = df[base + extra]
    str_cols = ["ecg_uid", "patient_hash", "site", "format", "device", "sex", "age_band", "shard"]
    if "acquisition_date" in df.columns:
        str_cols.append("acquisition_date")
    for col in str_cols:
        df[col] = df[col].fillna("").astype(str)
    for col in df.columns:
        if col not in str_cols:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["n_samples"] = df["n_samples"].astype("int64")
    return df.sort_values(["shard", "ecg_uid"], kind="stable").reset_index(drop=True)


def _summary(rows: list[dict], rejects: list[dict], n_inputs: int, cfg: IngestConfig, n_shards: int) -> dict:
    by_format: dict[str, dict[str, int]] = {}
    for r in rows:
        by_format.setdefault(r["format"], {"accepted": 0, "rejected": 0})["accepted"] += 1
    for r in rejects:
        by_format.setdefault(r["format"], {"accepted": 0, "rejected": 0})["rejected"] += 1
    labelled = {t: int(sum(1 for r in rows if not math.isnan(r.get(t, math.nan)))) for t in TASK_COLUMNS}
    return {
        "n_inputs": n_inputs,
        "n_accepted": len(rows),
        "n_rejected": len(rejects),
        "n_patients": len({r["patient_hash"] for r in rows}),
        "n_shards": n_shards,
        "corpus_fs": cfg.corpus_fs,
        "by_format": dict(sorted(by_format.items())),
        "by_site": dict(sorted(Counter(r["site"] for r in rows).items())),
        "by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "labelled": labelled,
    }


def format_summary(summary: dict) -> str:
    lines = [f"ingest: {summary['n_inputs']} inputs -> {summary['n_accepted']} ECGs "
             f"({summary['n_patients']} patients, {summary['n_shards']} shards), {summary['n_rejected']} rejected"]
    for fmt, c in summary["by_format"].items():
        lines.append(f"  format {fmt:8s} accepted {c['accepted']:7d}  rejected {c['rejected']:7d}")
    for site, n in summary["by_site"].items():
        lines.append(f"  site   {site:20s} {n:7d}")
    for reason, n in summary["by_reason"].items():
        lines.append(f"  reject {reason:22s} {n:7d}")
    return "\n".join(lines)


def _finish(tmp: Path, out: Path, rows: list[dict], rejects: list[dict], n_inputs: int, cfg: IngestConfig,
            fingerprint: str, run_cfg, extra_manifest: dict | None = None,
            sources: dict[str, str] | None = None) -> dict:
    meta = _rows_frame(rows)
    meta.to_parquet(tmp / "metadata.parquet", index=False)
    rej = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    rej.astype(str).sort_values("source_path", kind="stable").reset_index(drop=True).to_parquet(
        tmp / "rejects.parquet", index=False)
    if sources is not None:  # array parts only: lets the merge name the file of a cross-task duplicate
        pd.DataFrame(sorted(sources.items()), columns=["ecg_uid", "source_path"]).to_parquet(
            tmp / "sources.parquet", index=False)
    n_shards = len(list_shards(tmp))
    summary = _summary(rows, rejects, n_inputs, cfg, n_shards)
    atomic_write_json(tmp / "summary.json", summary)
    atomic_write_text(tmp / "config.resolved.yaml", dump_yaml(run_cfg if run_cfg is not None else cfg))
    manifest = {"fingerprint": fingerprint, "code_version": code_version(), "n_inputs": n_inputs,
                "shards": {p.name: sha256_file(p) for p in list_shards(tmp)}, **(extra_manifest or {})}
    atomic_write_json(tmp / "manifest.json", manifest)
    shutil.rmtree(tmp / "ledger", ignore_errors=True)
    _publish_modes(tmp)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return summary


def _publish_modes(root: Path) -> None:
    """Temp files are created 0600; the corpus is shared data (the key file is not in it): 0644/0755 - umask."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755 & ~umask)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644 & ~umask)


def _load_ledger(tmp: Path) -> tuple[int, list[dict], list[dict], int, dict[str, str]]:
    """(inputs done, rows, rejects, next shard index, sources) from a partial run's ledger."""
    done, rows, rejects, next_shard, sources = 0, [], [], 0, {}
    for entry_path in sorted((tmp / "ledger").glob("entry-*.json")):
        entry = json.loads(entry_path.read_text())
        shard = entry.get("shard")
        if shard and not (tmp / SHARD_DIR / shard).is_file():
            break  # ledger written after its shard; a missing shard means the entry is not trustworthy
        done = entry["end"]
        rows += entry["rows"]
        rejects += entry["rejects"]
        sources.update(entry["sources"])
        next_shard = entry["next_shard"]
    # Shards beyond the ledger (written, then interrupted before their entry) are redone.
    for extra in list_shards(tmp):
        if extra.name >= shard_name(next_shard):
            extra.unlink()
    return done, rows, rejects, next_shard, sources


def _json_rows(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def _unjson_rows(rows: list[dict]) -> list[dict]:
    return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows]


def run_ingest(inputs: list[str | Path], out: str | Path, cfg: IngestConfig, key: bytes,
               labels_csv: str | None = None, label_key: str | None = None, fmt: str = "auto",
               array_defaults: ArrayDefaults | None = None, workers: int = 1, run_cfg=None,
               array_task: tuple[int, int] | None = None, overwrite: bool = False, progress: bool = True,
               on_shard: Callable[[str], None] | None = None) -> dict:
    """Ingest `inputs` into corpus directory `out`; returns the summary dict. See the module docstring."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    label_key = label_key or cfg.label_key
    array_defaults = array_defaults or ArrayDefaults(cfg.array_fs, cfg.array_units, list(cfg.array_leads))
    files = list_inputs(inputs)
    extra_manifest = {}
    if array_task is not None:
        task, count = array_task
        extra_manifest = {"array": {"task": task, "count": count, "n_listed": len(files),
                                    "listing": _fingerprint(files, cfg, key, labels_csv, fmt, array_defaults,
                                                            label_key)}}
        files = slice_inputs(files, task, count)
    fingerprint = _fingerprint(files, cfg, key, labels_csv, fmt, array_defaults, label_key, extra_manifest)

    existing = _read_manifest(out) if out.exists() else None
    if existing is not None and existing.get("fingerprint") == fingerprint:
        summary = json.loads((out / "summary.json").read_text())
        log.info("%s is up to date with its inputs; nothing to do", out)
        return {**summary, "up_to_date": True}
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists and was made from other inputs/settings; pass --overwrite to replace it")

    tmp = out.with_name(f".{out.name}.partial")
    partial = _read_manifest_partial(tmp)
    if partial != fingerprint:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "ledger").mkdir(parents=True)
        atomic_write_text(tmp / "ledger" / "fingerprint", fingerprint)
    start, rows, rejects, next_shard, sources = _load_ledger(tmp)
    if start:
        log.info("resuming %s: %d of %d inputs already done", out, start, len(files))
    rows, rejects = _unjson_rows(rows), list(rejects)
    seen = {r["ecg_uid"] for r in rows}
    labels = load_labels(labels_csv, label_key) if labels_csv else None
    ctx = Context(cfg, key, labels, label_key, fmt, array_defaults, ScpTaskMap.from_config(cfg))
    writer = ShardWriter(tmp, cfg.shard_size, start_index=next_shard)
    pending_rows: list[dict] = []
    pending_rejects: list[dict] = []
    pending_sources: dict[str, str] = {}

    def record_entry(end: int, shard: tuple[str, list[dict]] | None) -> None:
        shard_rows = shard[1] if shard else []
        entry = {"end": end, "shard": shard[0] if shard else None, "rows": _json_rows(shard_rows),
                 "rejects": pending_rejects[:], "next_shard": writer.index,
                 "sources": {r["ecg_uid"]: pending_sources[r["ecg_uid"]] for r in shard_rows}}
        atomic_write_json(tmp / "ledger" / f"entry-{end:012d}.json", entry)
        rejects.extend(pending_rejects)
        pending_rejects.clear()
        for r in shard_rows:
            sources[r["ecg_uid"]] = pending_sources.pop(r["ecg_uid"])
        if shard:
            rows.extend(shard[1])
            if on_shard:
                on_shard(shard[0])

    todo = files[start:]
    t0 = time.perf_counter()
    n_workers = max(1, min(workers, len(todo) or 1))
    pool = get_context("spawn" if os.name != "posix" else "fork").Pool(
        n_workers, initializer=_init_worker, initargs=(ctx,)) if n_workers > 1 else None
    try:
        results = (pool.imap(process_file, todo, chunksize=cfg.chunk_size) if pool
                   else (process_file(item, ctx) for item in todo))
        bar = _progress(len(files), start, progress)
        for i, result in enumerate(results, start=start):
            bar.update(1)
            if result[0] == "reject":
                _, rel, rfmt, reason, detail = result
                pending_rejects.append({"source_path": rel, "reason": reason, "detail": detail, "format": rfmt})
                log.debug("rejected %s: %s", rel, reason)
                continue
            _, row, wave = result
            if row["ecg_uid"] in seen:
                pending_rejects.append({"source_path": files[i].rel, "reason": Reason.DUPLICATE_RECORDING.value,
                                        "detail": f"{files[i].rel}: same waveform as an earlier input",
                                        "format": row["format"]})
                continue
            seen.add(row["ecg_uid"])
            pending_sources[row["ecg_uid"]] = files[i].rel
            done = writer.add(row, wave)
            if done:
                record_entry(i + 1, done)
        bar.close()
    finally:
        if pool:
            pool.terminate()
            pool.join()
    record_entry(len(files), writer.flush())
    elapsed = time.perf_counter() - t0
    summary = _finish(tmp, out, rows, rejects, len(files), cfg, fingerprint, run_cfg, extra_manifest,
                      sources if array_task is not None else None)
    log.info("ingested %d files in %.1f s (%.1f files/s, %d workers)", len(todo), elapsed,
             len(todo) / max(elapsed, 1e-9), n_workers)
    return summary


def _read_manifest_partial(tmp: Path) -> str | None:
    try:
        return (tmp / "ledger" / "fingerprint").read_text().strip()
    except OSError:
        return None


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="file", desc="ingest", dynamic_ncols=True, smoothing=0.1)


# ---- Slurm array parts --------------------------------------------------------------------------------

def part_dir(out: str | Path, task: int) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTS_SUFFIX) / f"task-{task:05d}"


def merge_parts(out: str | Path, cfg: IngestConfig, run_cfg=None, overwrite: bool = False) -> dict:
    """Join the part corpora of a Slurm array (`<out>.parts/task-*/`) into `out`.

    Parts are taken in task order, so the result keeps the global input order; a recording that an earlier
    task already holds is moved to rejects (its shard is rewritten without it), and shards are renumbered."""
    out = Path(out)
    parts_root = out.with_name(out.name + PARTS_SUFFIX)
    parts = sorted(parts_root.glob("task-*"))
    if not parts:
        raise FileNotFoundError(f"no array parts under {parts_root}")
    manifests = [_read_manifest(p) for p in parts]
    if any(m is None or "array" not in m for m in manifests):
        bad = [p.name for p, m in zip(parts, manifests) if m is None or "array" not in m]
        raise RuntimeError(f"array parts not finished: {', '.join(bad)}")
    count = manifests[0]["array"]["count"]
    listing = manifests[0]["array"]["listing"]
    tasks = sorted(m["array"]["task"] for m in manifests)
    if tasks != list(range(count)) or any(m["array"]["listing"] != listing for m in manifests):
        raise RuntimeError(f"array parts incomplete or from different inputs: have tasks {tasks} of {count}")
    fingerprint = hashlib.sha256(("merge\0" + "\0".join(m["fingerprint"] for m in manifests)).encode()).hexdigest()
    existing = _read_manifest(out) if out.exists() else None
    if existing is not None and existing.get("fingerprint") == fingerprint:
        return {**json.loads((out / "summary.json").read_text()), "up_to_date": True}
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")

    tmp = out.with_name(f".{out.name}.merging")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / SHARD_DIR).mkdir(parents=True)
    rows: list[dict] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    next_index = 0
    n_inputs = 0
    for part in parts:
        meta = pd.read_parquet(part / "metadata.parquet")
        rej = pd.read_parquet(part / "rejects.parquet")
        sources = pd.read_parquet(part / "sources.parquet").set_index("ecg_uid")["source_path"].to_dict()
        n_inputs += json.loads((part / "summary.json").read_text())["n_inputs"]
        rejects += rej.to_dict("records")
        part_rows = meta.to_dict("records")
        dup = {r["ecg_uid"] for r in part_rows if r["ecg_uid"] in seen}
        for r in part_rows:
            if r["ecg_uid"] in dup:
                src = sources.get(r["ecg_uid"], "")
                rejects.append({"source_path": src, "reason": Reason.DUPLICATE_RECORDING.value,
                                "detail": f"{src}: same waveform as an input of an earlier array task",
                                "format": r["format"]})
        renames: dict[str, str] = {}
        for shard in list_shards(part):
            new = shard_name(next_index)
            next_index += 1
            renames[shard.name] = new
            members = list(iter_shard(shard))
            if any(uid in dup for uid, _, _ in members):
                kept = [(uid, m, s) for uid, m, s in members if uid not in dup]
                if not kept:
                    next_index -= 1
                    renames[shard.name] = ""
                    continue
                write_shard(tmp / SHARD_DIR / new, [x for uid, m, s in kept for x in
                                                    ((f"{uid}.signal.npy", npy_bytes(s)),
                                                     (f"{uid}.json", json.dumps(m, sort_keys=True,
                                                                                separators=(",", ":")).encode()))])
            else:
                try:
                    os.link(shard, tmp / SHARD_DIR / new)  # parts and corpus share a file system
                except OSError:
                    shutil.copyfile(shard, tmp / SHARD_DIR / new)
        for r in part_rows:
            if r["ecg_uid"] in dup:
                continue
            seen.add(r["ecg_uid"])
            rows.append(dict(r, shard=renames[r["shard"]]))
    summary = _finish(tmp, out, rows, rejects, n_inputs, cfg, fingerprint, run_cfg,
                      {"merged_from": len(parts)})
    return summary
