"""Ingest: input files -> de-identified corpus (WebDataset shards + metadata.parquet) + rejects ledger.

Top to bottom:
1. `list_inputs` (heartbeit.data.ingest.listing) walks the inputs in sorted order: every path becomes an input,
   a listing reject, a companion (WFDB signal file) or a counted skip. The key is chosen then: the public
   synthetic key for `heartbeit synth` output, the private key file otherwise (deid.key_for).
2. Each input is read by a worker (`process_file`): format sniffed by content (or forced), read into an
   ECGRecord, labels joined, quality-gated, cropped/resampled/quantised, de-identified. It returns a row
   and an int16 waveform, or a (reason, detail) reject. Workers run in a process pool over chunks; results
   come back in input order (`imap`), so the output does not depend on the number of workers.
3. The main process drops duplicate recordings (same keyed waveform hash as an earlier input), fills
   shards of `shard_size` samples, and after every shard writes a ledger entry (rows, rejects, how many
   inputs are done). An interrupted run resumes from the ledger; a finished run is renamed into place.
   A rerun with the same inputs, config and key is a no-op. A lock file (heartbeit.data.lock) keeps a
   second run off the same folder.
Privacy: everything that names input files (the rejects ledger with source paths, the file map of array
parts, the table behind site pseudonyms) goes to `<out>/private/` (0700). Logs and console name a problem
file by its opaque `reject_id`, which that ledger resolves.
4. Slurm arrays: `slice_inputs` gives task i of N a contiguous block of the sorted listing; each task
   writes a complete part corpus; `merge_parts` joins them (renumbering shards, dropping duplicates across
   tasks) into the same layout (heartbeit.data.ingest.merge)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from heartbeit.config import IngestConfig
from heartbeit.records import CORPUS_METADATA, CORPUS_SUMMARY
from heartbeit.utils.io import atomic_write_json, atomic_write_text, sha256_file

from heartbeit.data.ingest import deid
from heartbeit.data.ingest.amplitude import FLAG_COLUMN, check_amplitude_normalised, flagged_count, warning_text
from heartbeit.data.ingest.arrays import ArrayDefaults, read_array, sniff_array
from heartbeit.data.corpus import SHARD_DIR, ShardWriter
from heartbeit.data.ingest.header_labels import HeaderLabelMap
from heartbeit.data.ingest.labels import LabelTable, corpus_label_columns, join_labels, key_value, label_row, load_labels
from heartbeit.data.ingest.listing import InputFile, Listing, list_inputs, slice_inputs
from heartbeit.data.lock import DirLock
from heartbeit.data.ingest.muse import looks_like_utf16_xml, parse_muse
from heartbeit.data.ingest.pool import ordered_map
from heartbeit.data.ingest.publish import _complete, _finish, _read_manifest
from heartbeit.data.ingest.ptbxl import ScpTaskMap, ptbxl_labels
from heartbeit.data.ingest.quality import check_plausible_ecg, check_signals, to_corpus
from heartbeit.data.reasons import IngestError, Reason
from heartbeit.data.ingest.wfdb_io import looks_like_wfdb_header, read_wfdb

log = logging.getLogger("heartbeit.ingest")

FORMATS = ("auto", "muse", "wfdb", "npz", "npy", "mat")
PARTS_SUFFIX = ".parts"


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
    site_map: dict | None = None
    header_map: HeaderLabelMap | None = None
    label_columns: tuple[str, ...] = ()  # every label column of the corpus (labels.corpus_label_columns)


_CTX: Context | None = None


def _init_worker(ctx: Context) -> None:
    global _CTX
    _CTX = ctx
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def reject_id(key: bytes, rel: str) -> str:
    """The opaque name logs and console use for a problem file (private/rejects.parquet resolves it)."""
    return "r" + deid.keyed_hash(key, "reject", rel)[:11]


def detect_format(path: Path, head: bytes) -> str | None:
    """By content: XML -> muse, numpy/MATLAB magic -> array kind; a `.hea` -> wfdb. Only headers drive
    WFDB records: annotation files (`1.atr`, `1.i`, `1.v1`) are binary and may start with any byte, and
    listing skips those beside a header; a header-like text under another name is not guessed at."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<") or looks_like_utf16_xml(head):
        return "muse"
    kind = sniff_array(head)
    if kind:
        return kind
    if path.suffix.lower() == ".hea":
        return "wfdb"
    return None


def resolve_format(item: InputFile, ctx: Context) -> str:
    """The format to read `item` as: forced by --format, else sniffed from its first bytes."""
    path = Path(item.path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device swapped in after listing: opening it could block
            raise IngestError(Reason.UNREADABLE, f"{item.rel}: not a regular file")
        size = st.st_size
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise IngestError(Reason.UNREADABLE, f"{item.rel}: cannot read ({type(exc).__name__})") from None
    if size > ctx.cfg.max_file_mb * 1024 * 1024:
        raise IngestError(Reason.TOO_LARGE, f"{item.rel}: {size} bytes, over ingest.max_file_mb")
    if not head:
        raise IngestError(Reason.UNREADABLE, f"{item.rel}: empty file")
    fmt = ctx.fmt if ctx.fmt != "auto" else detect_format(path, head)
    if fmt is None:
        raise IngestError(Reason.UNREADABLE, f"{item.rel}: {_unknown_format_hint(path, head)}")
    return fmt


def _unknown_format_hint(path: Path, head: bytes) -> str:
    """Say what the file is when we can tell, so the reason is not a misleading 'unknown format'."""
    if path.suffix.lower() in (".dat", ".mat"):
        return "not a recognised ECG format (a WFDB signal file without its .hea header?)"
    if b"\x00" not in head and looks_like_wfdb_header(head):
        return "looks like a WFDB header but is not named .hea (only .hea files are read as WFDB records)"
    return "not a recognised ECG format"


def read_record(item: InputFile, ctx: Context, fmt: str | None = None):
    """Read one input into an ECGRecord (IngestError on bad input)."""
    fmt = fmt or resolve_format(item, ctx)
    path = Path(item.path)
    if fmt == "muse":
        record = parse_muse(path.read_bytes(), item.rel, ctx.cfg.waveform, max_elements=ctx.cfg.max_xml_elements)
    elif fmt == "wfdb":
        record = read_wfdb(path, name=item.rel, root=item.root or None,
                           max_bytes=int(ctx.cfg.max_decompressed_mb * 1024 * 1024))
    else:
        record = read_array(path, kind=fmt, defaults=ctx.array_defaults, name=item.rel,
                            max_bytes=int(ctx.cfg.max_decompressed_mb * 1024 * 1024))
    # The file stem (a WFDB record's name) for `ingest.label_key: record`; an identifier like an accession.
    record.meta.setdefault("record", path.stem)
    return record


def _root_site(item: InputFile, meta: dict) -> tuple[str, bool]:
    """(site label from outside the file, whether it wins over the file's own site text). A PTB-XL tree's
    folder (the one holding ptbxl_database.csv, documented to be named `ptbxl`) names the site when it is
    the input root or above it: never a folder name below the root."""
    ptbxl_dir = meta.pop("ptbxl_dir", None)
    if item.synthetic or item.site_given:
        return item.site, True
    if ptbxl_dir and item.root:
        d, root = Path(ptbxl_dir), Path(item.root)
        if d == root or d in root.parents:
            return d.name[:64], True
    return item.site, False


def process_file(item: InputFile, ctx: Context | None = None):
    """-> ("ok", row, int16 [12, n], private) or ("reject", rel, format, reason, detail). Never raises.
    `private` carries what only private/ (or predict's in-memory label join) may hold: the free text behind a
    site pseudonym, whether the labels CSV had a row for this record, and the record's label-key value."""
    ctx = ctx or _CTX
    fmt = "unknown"
    try:
        fmt = resolve_format(item, ctx)
        record = read_record(item, ctx, fmt)
        check_signals(record.signals, record.fs, item.rel, ctx.cfg)
        wave = to_corpus(record.signals, record.fs, ctx.cfg, item.rel)
        check_plausible_ecg(wave, ctx.cfg.corpus_fs, item.rel, ctx.cfg)
        normalised = check_amplitude_normalised(record.signals, item.rel, ctx.cfg)  # raises unless accepted
        # A PTB-XL record's labels come from its SCP statements only: its ecg_id / patient_id are small
        # integers that a hospital label file's accession / MRN keys could match by accident.
        labels = {t: math.nan for t in ctx.label_columns}
        if "scp_codes" not in record.meta:
            labels.update(join_labels(record.meta, ctx.labels, ctx.label_key))
        # Diagnoses the file itself states fill what the labels CSV leaves missing (the CSV wins).
        mapped = {**ptbxl_labels(record.meta, ctx.scp_map), **(ctx.header_map.labels(record.meta) if ctx.header_map else {})}
        for task, value in mapped.items():
            if math.isnan(labels.get(task, math.nan)):
                labels[task] = value
        matched = "scp_codes" not in record.meta and label_row(record.meta, ctx.labels, ctx.label_key) is not None
        uid = deid.ecg_uid(ctx.key, hashlib.sha256(wave.tobytes()).digest() + str(wave.shape).encode())
        fallback, declared = _root_site(item, record.meta)
        root_text = None
        if not fallback:  # a root that names no folder of its own (a file, '.'): a keyed pseudonym of its path
            root_text = f"input root {item.root}"
            fallback = deid.site_code(ctx.key, root_text)
        site, site_text = deid.resolve_site(record.meta.get("site", ""), fallback, declared, ctx.key,
                                            ctx.site_map or {})
        if root_text and site == fallback:
            site_text = root_text
        record.meta["site"] = site
        row = deid.deidentify(record.meta, labels, uid, ctx.key, ctx.cfg.date_policy, ctx.cfg.date_shift_max_days)
        row.update(format=fmt, fs=float(ctx.cfg.corpus_fs), n_samples=int(wave.shape[1]),
                   source_fs=float(record.fs))
        if ctx.cfg.amplitude_normalised == "accept":  # the column exists only where such records may be kept
            row[FLAG_COLUMN] = normalised
        return ("ok", row, wave, {"site_text": site_text, "label_matched": matched,
                                  "label_key_value": key_value(record.meta, ctx.label_key)})
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
        try:
            st = os.stat(f.path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:  # vanished since listing: it will be rejected; still part of what this run saw
            size, mtime = -1, -1
        h.update(f"{f.rel}\0{f.site}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    settings = {"cfg": asdict(cfg), "key": deid.key_fingerprint(key), "fmt": fmt, "label_key": label_key,
                "arrays": asdict(array_defaults), "labels": sha256_file(labels_csv) if labels_csv else "",
                "extra": extra or {}}
    for volatile in ("workers", "chunk_size", "lock_wait_s"):  # never change the output
        settings["cfg"].pop(volatile, None)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _load_ledger(tmp: Path) -> dict:
    """What a partial run's ledger holds: inputs done, rows, rejects, next shard, sources, site codes,
    label matches."""
    state = {"done": 0, "rows": [], "rejects": [], "next_shard": 0, "sources": {}, "site_codes": {}, "matched": 0}
    kept: set[str] = set()
    for entry_path in sorted((tmp / "ledger").glob("entry-*.json")):
        entry = json.loads(entry_path.read_text())
        shard = entry.get("shard")
        if shard and not (tmp / SHARD_DIR / shard).is_file():
            break  # ledger written after its shard; a missing shard means the entry is not trustworthy
        if shard:
            kept.add(shard)
        state["done"] = entry["end"]
        state["rows"] += entry["rows"]
        state["rejects"] += entry["rejects"]
        state["sources"].update(entry["sources"])
        state["site_codes"].update(entry.get("site_codes", {}))
        state["matched"] += entry.get("matched", 0)
        state["next_shard"] = entry["next_shard"]
    # Shards beyond the ledger (written, then interrupted before their entry) are redone; a killed writer's
    # temporary files go too, so nothing half-written is ever published.
    if (tmp / SHARD_DIR).is_dir():
        for extra in (tmp / SHARD_DIR).iterdir():
            if extra.name not in kept:
                extra.unlink()
    return state


def _json_rows(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def _unjson_rows(rows: list[dict]) -> list[dict]:
    return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows]


def _worker_died(item: InputFile):
    return ("reject", item.rel, "unknown", Reason.WORKER_DIED.value,
            f"{item.rel}: reading it killed the worker process (out of memory or a crash)")


def run_ingest(inputs: list[str | Path], out: str | Path, cfg: IngestConfig, key: bytes | str | Path,
               labels_csv: str | None = None, label_key: str | None = None, fmt: str = "auto",
               array_defaults: ArrayDefaults | None = None, workers: int = 1, run_cfg=None,
               array_task: tuple[int, int] | None = None, overwrite: bool = False, progress: bool = True,
               on_shard: Callable[[str], None] | None = None, sites: list[str] | None = None) -> dict:
    """Ingest `inputs` into corpus directory `out`; returns the summary dict. See the module docstring.
    `key`: the HMAC key itself, or the path of the private key file (then synthetic input gets the public
    key: deid.key_for). `sites`: one site label per input ("" = the root's own name)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    with DirLock(out, wait_s=cfg.lock_wait_s) as lock:
        return _run_locked(inputs, out, cfg, key, labels_csv, label_key or cfg.label_key, fmt,
                           array_defaults or ArrayDefaults(cfg.array_fs, cfg.array_units, list(cfg.array_leads)),
                           workers, run_cfg, array_task, overwrite, progress, on_shard, sites, lock)


def _run_locked(inputs, out: Path, cfg: IngestConfig, key, labels_csv, label_key: str, fmt: str,
                array_defaults: ArrayDefaults, workers: int, run_cfg, array_task, overwrite: bool, progress: bool,
                on_shard, sites, lock: DirLock) -> dict:
    listing: Listing = list_inputs(inputs, sites)
    key = deid.key_for(listing.synthetic, key) if isinstance(key, (str, Path)) else key
    deid.check_key(key, listing.synthetic)
    files = listing.files
    listing_rejects = [{"reject_id": reject_id(key, rel), "source_path": rel, "reason": reason, "detail": detail,
                        "format": "unknown"} for rel, reason, detail in listing.rejects]
    accounting = {"skipped": dict(listing.skipped), "companions": listing.companions}
    extra_manifest = {}
    if array_task is not None:
        task, count = array_task
        extra_manifest = {"array": {"task": task, "count": count, "n_listed": len(files),
                                    "listing": _fingerprint(files, cfg, key, labels_csv, fmt, array_defaults,
                                                            label_key)}}
        files = slice_inputs(files, task, count)
        if task:  # listing-level findings are reported once, by task 0
            listing_rejects, accounting = [], {"skipped": {}, "companions": 0}
    fingerprint = _fingerprint(files, cfg, key, labels_csv, fmt, array_defaults, label_key,
                               {**extra_manifest, "listing_rejects": [r["source_path"] for r in listing_rejects],
                                "accounting": accounting})

    existing = _read_manifest(out) if out.exists() else None
    if existing is not None and existing.get("fingerprint") == fingerprint and _complete(out, existing):
        summary = json.loads((out / CORPUS_SUMMARY).read_text())
        log.info("%s is up to date with its inputs; nothing to do", out)
        return {**summary, "up_to_date": True}
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists and was made from other inputs/settings; pass --overwrite to replace it")

    tmp = out.with_name(f".{out.name}.partial")
    if _read_manifest_partial(tmp) != fingerprint:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700, parents=True)  # holds source paths until the finish moves them to private/
        (tmp / "ledger").mkdir()
        atomic_write_text(tmp / "ledger" / "fingerprint", fingerprint)
    state = _load_ledger(tmp)
    start, next_shard, sources, site_codes = state["done"], state["next_shard"], state["sources"], state["site_codes"]
    if start:
        log.info("resuming %s: %d of %d inputs already done", out, start, len(files))
    rows, rejects = _unjson_rows(state["rows"]), list(state["rejects"])
    matched = [state["matched"]]
    seen = {r["ecg_uid"] for r in rows}
    labels: LabelTable | None = load_labels(labels_csv, label_key, cfg.label_columns) if labels_csv else None
    ctx = Context(cfg, key, labels, label_key, fmt, array_defaults, ScpTaskMap.from_config(cfg), dict(cfg.site_map),
                  HeaderLabelMap.from_config(cfg), corpus_label_columns(cfg))
    writer = ShardWriter(tmp, cfg.shard_size, start_index=next_shard)
    pending_rejects: list[dict] = [] if start else list(listing_rejects)
    pending_sources: dict[str, str] = {}
    pending_codes: dict[str, str] = {}
    pending_matched = [0]

    def record_entry(end: int, shard: tuple[str, list[dict]] | None) -> None:
        shard_rows = shard[1] if shard else []
        entry = {"end": end, "shard": shard[0] if shard else None, "rows": _json_rows(shard_rows),
                 "rejects": pending_rejects[:], "next_shard": writer.index,
                 "sources": {r["ecg_uid"]: pending_sources[r["ecg_uid"]] for r in shard_rows},
                 "site_codes": dict(pending_codes), "matched": pending_matched[0]}
        atomic_write_json(tmp / "ledger" / f"entry-{end:012d}.json", entry)
        rejects.extend(pending_rejects)
        pending_rejects.clear()
        site_codes.update(pending_codes)
        pending_codes.clear()
        matched[0] += pending_matched[0]
        pending_matched[0] = 0
        for r in shard_rows:
            sources[r["ecg_uid"]] = pending_sources.pop(r["ecg_uid"])
        if shard:
            rows.extend(shard[1])
            if on_shard:
                on_shard(shard[0])
        lock.touch()

    todo = files[start:]
    t0 = time.perf_counter()
    n_workers = max(1, min(workers, len(todo) or 1))
    results = ordered_map(process_file, todo, n_workers, cfg.chunk_size, _worker_died,
                          initializer=_init_worker, initargs=(ctx,))
    bar = _progress(len(files), start, progress)
    for i, result in enumerate(results, start=start):
        bar.update(1)
        if result[0] == "reject":
            _, rel, rfmt, reason, detail = result
            rid = reject_id(key, rel)
            pending_rejects.append({"reject_id": rid, "source_path": rel, "reason": reason, "detail": detail,
                                    "format": rfmt})
            log.debug("rejected %s: %s", rid, reason)
            continue
        _, row, wave, private = result
        if row["ecg_uid"] in seen:
            rid = reject_id(key, files[i].rel)
            pending_rejects.append({"reject_id": rid, "source_path": files[i].rel,
                                    "reason": Reason.DUPLICATE_RECORDING.value,
                                    "detail": f"{files[i].rel}: same waveform as an earlier input",
                                    "format": row["format"]})
            continue
        seen.add(row["ecg_uid"])
        pending_sources[row["ecg_uid"]] = files[i].rel
        pending_matched[0] += int(private["label_matched"])
        if private["site_text"]:
            pending_codes[row["site"]] = private["site_text"]
        done = writer.add(row, wave)
        if done:
            record_entry(i + 1, done)
    bar.close()
    record_entry(len(files), writer.flush())
    elapsed = time.perf_counter() - t0
    if labels is not None:
        accounting["labels_csv"] = {"rows": len(labels), "matched": matched[0],
                                    "conflicting_rows": labels.conflicting_rows}
        if labels.conflicting_rows:
            log.warning("labels CSV: %d rows give lvef and lvef_le40 that disagree; those labels are left missing",
                        labels.conflicting_rows)
        if matched[0] == 0 and files:
            log.warning("labels CSV: no record matched any of its %d rows on %r; every label is missing",
                        len(labels), label_key)
    if flagged_count(rows):
        log.warning("ingest: %s", warning_text(flagged_count(rows), CORPUS_METADATA))
    summary = _finish(tmp, out, rows, rejects, len(files) + len(listing_rejects), cfg, fingerprint, run_cfg, extra_manifest,
                      sources if array_task is not None else None, site_codes, accounting)
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


def part_dir(out: str | Path, task: int) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTS_SUFFIX) / f"task-{task:05d}"
