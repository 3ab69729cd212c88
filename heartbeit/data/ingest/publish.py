"""Writing a finished corpus: metadata.parquet, summary.json, manifest.json, and `private/`.

`private/` (mode 0700, files 0600) is the only place that names input files: rejects.parquet (reject_id,
source_path, reason, detail, format), sources.parquet (array parts: ecg_uid -> source path, for the merge)
and site_codes.json (site pseudonym -> the free text it stands for). Everything else is published 0644/0755
(minus umask). A corpus is built in a temporary folder and renamed into place, never half-published."""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd

from heartbeit.config import IngestConfig, dump_yaml
from heartbeit.records import (CORPUS_MANIFEST, CORPUS_METADATA, CORPUS_PRIVATE as PRIVATE, CORPUS_REJECTS,
                               CORPUS_SITE_CODES, CORPUS_SOURCES, CORPUS_SUMMARY, RESOLVED_CONFIG)
from heartbeit.utils.io import atomic_write_json, atomic_write_text, code_version, sha256_file, swap_into_place

from heartbeit.data.ingest.amplitude import FLAG_COLUMN, flagged_count, warning_text
from heartbeit.data.corpus import SHARD_DIR, list_shards
from heartbeit.data.ingest.labels import TASK_COLUMNS, corpus_label_columns

REJECT_COLUMNS = ["reject_id", "source_path", "reason", "detail", "format"]


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / CORPUS_MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _complete(out: Path, manifest: dict) -> bool:
    """A finished corpus still holds every file its manifest lists (an up-to-date claim must be true)."""
    return ((out / CORPUS_METADATA).is_file() and (out / CORPUS_SUMMARY).is_file()
            and all((out / SHARD_DIR / name).is_file() for name in manifest.get("shards", {})))


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
    if FLAG_COLUMN in df.columns:  # a flag, true or false (a part corpus without the column leaves NaN)
        df[FLAG_COLUMN] = df[FLAG_COLUMN].fillna(False).astype(bool)
    for col in df.columns:
        if col not in str_cols and col != FLAG_COLUMN:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["n_samples"] = df["n_samples"].astype("int64")
    return df.sort_values(["shard", "ecg_uid"], kind="stable").reset_index(drop=True)


def _summary(rows: list[dict], rejects: list[dict], n_inputs: int, cfg: IngestConfig, n_shards: int,
             accounting: dict) -> dict:
    by_format: dict[str, dict[str, int]] = {}
    for r in rows:
        by_format.setdefault(r["format"], {"accepted": 0, "rejected": 0})["accepted"] += 1
    for r in rejects:
        by_format.setdefault(r["format"], {"accepted": 0, "rejected": 0})["rejected"] += 1
    labelled = {t: int(sum(1 for r in rows if not math.isnan(r.get(t, math.nan)))) for t in corpus_label_columns(cfg)}
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
        "skipped": dict(sorted(accounting.get("skipped", {}).items())),
        "n_companions": int(accounting.get("companions", 0)),
        "labels_csv": accounting.get("labels_csv", {}),
        FLAG_COLUMN: flagged_count(rows),  # accepted under ingest.amplitude_normalised: accept
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
    for reason, n in summary.get("skipped", {}).items():
        lines.append(f"  skip   {reason:22s} {n:7d}")
    own = {k: v for k, v in summary.get("labelled", {}).items() if k not in TASK_COLUMNS and v}
    if own:  # your own label columns (ingest.label_columns, the header map) that some record has
        lines.append("  labelled (own columns): " + ", ".join(f"{k} {v}" for k, v in own.items()))
    if summary.get(FLAG_COLUMN):
        lines.append(f"  WARNING: {warning_text(summary[FLAG_COLUMN], CORPUS_METADATA)}")
    lab = summary.get("labels_csv") or {}
    if lab:
        lines.append(f"  labels CSV: {lab.get('matched', 0)} records matched a row, "
                     f"{lab.get('conflicting_rows', 0)} rows with conflicting labels (made missing)")
    return "\n".join(lines)


def _write_private(tmp: Path, rejects: list[dict], sources: dict[str, str] | None, site_codes: dict) -> None:
    private = tmp / PRIVATE
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    rej = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    rej.astype(str).sort_values("source_path", kind="stable").reset_index(drop=True).to_parquet(
        private / CORPUS_REJECTS, index=False)
    if sources is not None:  # array parts only: lets the merge name the file of a cross-task duplicate
        pd.DataFrame(sorted(sources.items()), columns=["ecg_uid", "source_path"]).to_parquet(
            private / CORPUS_SOURCES, index=False)
    atomic_write_json(private / CORPUS_SITE_CODES, dict(sorted(site_codes.items())))


def _finish(tmp: Path, out: Path, rows: list[dict], rejects: list[dict], n_inputs: int, cfg: IngestConfig,
            fingerprint: str, run_cfg, extra_manifest: dict | None = None,
            sources: dict[str, str] | None = None, site_codes: dict | None = None,
            accounting: dict | None = None) -> dict:
    meta = _rows_frame(rows)
    meta.to_parquet(tmp / CORPUS_METADATA, index=False)
    _write_private(tmp, rejects, sources, site_codes or {})
    shutil.rmtree(tmp / "ledger", ignore_errors=True)
    _drop_temporaries(tmp)
    n_shards = len(list_shards(tmp))
    summary = _summary(rows, rejects, n_inputs, cfg, n_shards, accounting or {})
    atomic_write_json(tmp / CORPUS_SUMMARY, summary)
    atomic_write_text(tmp / RESOLVED_CONFIG, dump_yaml(run_cfg if run_cfg is not None else cfg))
    manifest = {"fingerprint": fingerprint, "code_version": code_version(), "n_inputs": n_inputs,
                "shards": {p.name: sha256_file(p) for p in list_shards(tmp)}, **(extra_manifest or {})}
    atomic_write_json(tmp / CORPUS_MANIFEST, manifest)
    _publish_modes(tmp)
    swap_into_place(tmp, out)
    return summary


def _drop_temporaries(tmp: Path) -> None:
    """Half-written files of a killed run (atomic writers' `.*.tmp`) never reach the published corpus."""
    for dirpath, _, filenames in os.walk(tmp):
        for f in filenames:
            if f.startswith(".") or f.endswith(".tmp"):
                os.unlink(os.path.join(dirpath, f))


def _publish_modes(root: Path) -> None:
    """Temp files are created 0600; the corpus is shared data: 0644/0755 - umask. private/ stays 0700/0600."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, dirnames, filenames in os.walk(root):
        if PRIVATE in dirnames and Path(dirpath) == root:
            dirnames.remove(PRIVATE)
            for dp, _, fns in os.walk(os.path.join(dirpath, PRIVATE)):
                os.chmod(dp, 0o700)
                for f in fns:
                    os.chmod(os.path.join(dp, f), 0o600)
        os.chmod(dirpath, 0o755 & ~umask)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644 & ~umask)
