"""The benchmark suite runner behind `heartbeit bench`.

A benchmark is any `bench/<name>.py` defining a top-level `run(quick)` that returns a dict of figures. By
convention the dict carries a "headline": {"metric", "value", "baseline", "ratio"} (the figure that goes
into the summary, and the baseline it was measured against in the same run); every other numeric figure
whose name says it is a ratio (ratio, speedup, _vs_, _over_) is collected under "ratios".

Each benchmark runs in a fresh interpreter (`python -m heartbeit.benchsuite <file> [--quick] --json OUT`):
no state leaks between them (threads, compiled kernels, CUDA context), and a crash or a timeout in one is
recorded as a failure while the others still run. Records go to `<out>/<name>.json`:

    {kind, name, status, error, figures, headline, ratios, machine, versions, command, bench_command,
     git_revision, date, quick, wall_s}

and `<out>/SUMMARY.md` gets one row per record in `<out>` (so `--only` refreshes rows, it does not drop the
others).
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from heartbeit.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("heartbeit.bench")

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
RECORD_KIND = "heartbeit-bench-record"
# cheap, independent stages first; the long ones last so a budget overrun shows on them
ORDER = ("synth", "ingest", "render", "loader", "metrics", "scale", "train_step", "host_overhead", "pretrain_zero",
         "e2e")
RATIO_KEY = re.compile(r"ratio|speedup|_vs_|_over_|share")
VERSION_PACKAGES = ("torch", "timm", "deepspeed", "numpy", "scipy", "scikit-learn", "webdataset", "pillow")
# Smoke mode: every benchmark at the smallest sizes that still run all of its code paths. Its figures say
# nothing; the test suite runs the whole quick list this way so that a benchmark cannot silently rot.
SMOKE_ENV = "HEARTBEIT_BENCH_SMOKE"


def smoke() -> bool:
    return os.environ.get(SMOKE_ENV) == "1"


# ---------------------------------------------------------------------------------------------- discovery
def print_figures(figures: dict, json_path: str | None = None) -> None:
    """What a standalone `python bench/NAME.py` prints (and optionally saves) of its figures."""
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    save_figures(figures, json_path)


def save_figures(figures: dict, json_path: str | None) -> None:
    """`--json PATH` of a standalone benchmark: the figures, written atomically."""
    if json_path:
        atomic_write_json(json_path, figures)


def has_run_quick(path: Path) -> bool:
    """Does the file define a top-level `def run(quick, ...)`? Read with ast: no import, no side effects."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            args = node.args.posonlyargs + node.args.args
            return bool(args) and args[0].arg == "quick"
    return False


def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    names = [p.stem for p in Path(bench_dir).glob("*.py") if not p.stem.startswith("_") and has_run_quick(p)]
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(ORDER)), n))


# ---------------------------------------------------------------------------------------- environment
def machine_info() -> dict[str, Any]:
    """The machine a record's figures came from: CPU model, vector ISA and torch's dispatch (utils.machine),
    cores this process may use, memory, load, GPUs. No host name: it can identify a site."""
    from heartbeit.utils.machine import machine_record

    rec = machine_record()
    info: dict[str, Any] = {"platform": platform.platform(),
                            **{k: rec[k] for k in ("cpu_model", "isa_flags", "torch_cpu_capability", "isa_pins")}}
    try:
        info["cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cores"] = os.cpu_count()
    try:
        kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        info["memory_gib"] = None
    info["load_avg_1_5_15"] = _load_avg()
    info["gpus"] = gpu_names()
    info["gpu"] = info["gpus"][0] if info["gpus"] else None
    return info


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def gpu_names() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop a CPU benchmark run
        pass
    return []


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        import torch

        out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def git_revision(root: Path = ROOT) -> str:
    """HEAD's commit, with '+dirty' when the working tree differs from it (benchmarks of uncommitted code)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def invocation() -> str:
    """The command line that started this process, as a user would type it."""
    prog = Path(sys.argv[0]).name
    if prog in ("__main__.py", "-c", ""):
        prog = "python -m heartbeit"
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


# ---------------------------------------------------------------------------------------- figures
def jsonable(obj: Any) -> Any:
    """Plain JSON types (numpy scalars/arrays, tuples, paths; NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def collect_ratios(figures: dict[str, Any]) -> dict[str, float]:
    """Every numeric figure whose name (dotted path) says it is a ratio against a baseline or a share."""
    out = {}
    for key, value in flatten({k: v for k, v in figures.items() if k != "headline"}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and RATIO_KEY.search(key):
            out[key] = value
    return out


def headline_of(figures: dict[str, Any], ratios: dict[str, float]) -> dict[str, Any] | None:
    head = figures.get("headline")
    if isinstance(head, dict) and "metric" in head:
        return head
    if ratios:  # a module without the convention: its first ratio stands in
        key, value = next(iter(ratios.items()))
        return {"metric": key, "value": value, "baseline": None, "ratio": value}
    return None


# ---------------------------------------------------------------------------------------- running
def run_one(name: str, bench_dir: Path, quick: bool, timeout_s: float, env: dict[str, str] | None = None) -> dict:
    """Run bench/<name>.py's run(quick) in a fresh interpreter; never raises for a failing benchmark."""
    path = Path(bench_dir) / f"{name}.py"
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out_json = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", "heartbeit.benchsuite", str(path), "--json", str(out_json)]
        if quick:
            cmd.append("--quick")
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p)
        start = time.perf_counter()
        error = None
        try:
            # stdout goes straight to the terminal (the benchmark's own table); stderr is kept for the error
            proc = subprocess.run(cmd, cwd=ROOT, env=child_env, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout_s)
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-15:]
                error = f"exit {proc.returncode}: " + "\n".join(tail)
            elif not out_json.is_file():
                error = "finished without writing its figures"
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout_s:.0f} s"
        wall = time.perf_counter() - start
        figures = json.loads(out_json.read_text()) if error is None else {}
    ratios = collect_ratios(figures)
    return {"name": name, "status": "ok" if error is None else "failed", "error": error, "figures": figures,
            "headline": headline_of(figures, ratios) if error is None else None, "ratios": ratios,
            "wall_s": round(wall, 1), "bench_command": " ".join(["python", f"bench/{name}.py"]
                                                                + (["--quick"] if quick else []))}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def print_record(rec: dict) -> None:
    if rec["status"] != "ok":
        print(f"[bench] {rec['name']}: FAILED after {rec['wall_s']} s: {rec['error']}", flush=True)
        return
    h = rec["headline"] or {}
    print(f"[bench] {rec['name']} ({rec['wall_s']} s): {h.get('metric', '-')} = {_fmt(h.get('value'))}"
          f"  baseline {_fmt(h.get('baseline'))}  ratio {_fmt(h.get('ratio'))}", flush=True)
    for key, value in rec["ratios"].items():
        print(f"[bench]   {key}: {_fmt(value)}", flush=True)


def run_suite(names: list[str] | None = None, quick: bool = True, out_dir: str | Path = "results/bench",
              bench_dir: str | Path = BENCH_DIR, timeout_s: float | None = None,
              env: dict[str, str] | None = None, command: str | None = None) -> list[dict]:
    """Run benchmarks (all discovered ones when names is None), write their records and SUMMARY.md."""
    bench_dir = Path(bench_dir)
    available = discover(bench_dir)
    if names:
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; available in {bench_dir}: {available}")
        todo = [n for n in available if n in names]
    else:
        todo = available
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {"kind": RECORD_KIND, "machine": machine_info(), "versions": versions(),
              "command": command or invocation(), "git_revision": git_revision(), "quick": quick,
              "smoke": {**os.environ, **(env or {})}.get(SMOKE_ENV) == "1"}
    timeout_s = timeout_s or (1800.0 if quick else 3 * 3600.0)  # quick on a GPU compiles the paper models
    records = []
    for name in todo:
        print(f"[bench] running {name} ({'quick' if quick else 'full'}) ...", flush=True)
        date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        load_before = _load_avg()
        rec = {**common, **run_one(name, bench_dir, quick, timeout_s, env), "date": date}
        # other work on the machine is the main source of noise: record the load around each benchmark
        rec["machine"] = {**common["machine"], "load_avg_1_5_15": load_before, "load_avg_after": _load_avg()}
        rec = jsonable(rec)
        atomic_write_json(out_dir / f"{name}.json", rec)
        print_record(rec)
        records.append(rec)
    write_summary(out_dir)
    failed = [r["name"] for r in records if r["status"] != "ok"]
    print(f"[bench] {len(records) - len(failed)}/{len(records)} ok"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f" -> {out_dir / 'SUMMARY.md'}", flush=True)
    return records


def load_records(out_dir: str | Path) -> list[dict]:
    recs = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("kind") == RECORD_KIND:
            recs.append(rec)
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(recs, key=lambda r: (rank.get(r["name"], len(ORDER)), r["name"]))


def _short_rev(rev: str | None) -> str:
    if not rev:
        return "-"
    return rev[:12] + ("+dirty" if rev.endswith("+dirty") else "")


def is_busy(machine: dict) -> bool:
    """Was the 1-min load above 1.5 x cores before or after the benchmark (other work competing)?"""
    loads = [l[0] for l in (machine.get("load_avg_1_5_15"), machine.get("load_avg_after")) if l]
    return bool(loads) and max(loads) > 1.5 * (machine.get("cores") or 1)


def _mode(record: dict) -> str:
    return "smoke" if record.get("smoke") else "quick" if record.get("quick") else "full"


def summary_markdown(records: list[dict]) -> str:
    lines = ["# Benchmark summary", ""]
    def machine_of(r: dict) -> tuple:
        m = r["machine"]
        return m.get("cpu_model"), m.get("cores"), m.get("gpu"), m.get("torch_cpu_capability")

    for cpu, cores, gpu, isa in sorted({machine_of(r) for r in records}, key=str):
        names = ", ".join(r["name"] for r in records if machine_of(r) == (cpu, cores, gpu, isa))
        lines.append(f"Machine: {cpu}, {cores} cores" + (f" (torch dispatch {isa})" if isa else "")
                     + (f", GPU {gpu}" if gpu else ", no GPU") + f": {names}")
    busy = [r["name"] for r in records if is_busy(r["machine"])]
    if busy:
        lines.append(f"NOTE: the machine was busy with other work (1-min load above 1.5 x cores) when these ran, "
                     f"so their figures are noisy: {', '.join(busy)}")
    lines += ["", "| benchmark | status | headline | value | same-run baseline | ratio | mode | wall s | date | "
                  "git | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        h = r.get("headline") or {}
        base = h.get("baseline")
        base_txt = _fmt(base) + (f" ({h['baseline_name']})" if h.get("baseline_name") else "")
        status = r["status"] if r["status"] == "ok" else f"FAILED: {(r.get('error') or '').splitlines()[0][:80]}"
        lines.append(f"| {r['name']} | {status} | {h.get('metric', '-')} | {_fmt(h.get('value'))} | {base_txt} | "
                     f"{_fmt(h.get('ratio'))} | {_mode(r)} | {_fmt(r.get('wall_s'))} | "
                     f"{r.get('date', '-')[:16]} | {_short_rev(r.get('git_revision'))} | `{r.get('command', '-')}` |")
    lines += ["", "All ratios (same-run baselines):", ""]
    for r in records:
        for key, value in (r.get("ratios") or {}).items():
            lines.append(f"- {r['name']}: `{key}` = {_fmt(value)}")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path) -> Path:
    out = Path(out_dir) / "SUMMARY.md"
    atomic_write_text(out, summary_markdown(load_records(out_dir)))
    return out


# ---------------------------------------------------------------------------------------- child process
def _child(argv: list[str]) -> int:
    import argparse
    import importlib.util

    p = argparse.ArgumentParser(prog="python -m heartbeit.benchsuite", description="run one benchmark file")
    p.add_argument("file")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    path = Path(args.file).resolve()
    sys.path.insert(0, str(path.parent))  # bench modules may import their neighbours
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling for worker processes) look the module up
    spec.loader.exec_module(module)
    figures = module.run(args.quick)
    if not isinstance(figures, dict):
        raise TypeError(f"{path.name}: run() returned {type(figures).__name__}, expected a dict of figures")
    Path(args.json).write_text(json.dumps(jsonable(figures), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
