"""End-to-end wall time of `heartbeit run --profile ci`, per stage, from the `<workdir>/run.json` that
`heartbeit run` writes ({"profile", "stages_s": {stage: seconds, ..., "total"}}). The baseline here is the
total of the same run: each stage's share of it says where the time goes.

--full: the whole ci pipeline in a temporary workdir. --quick (the whole pipeline takes minutes on 2 cores):
the run.json of an existing ci run (runs/ci/run.json, or HEARTBEIT_BENCH_E2E_RUN_JSON) if there is one,
reported with its age, else a fresh `heartbeit run --profile ci --until render` in a temporary workdir.

    .venv/bin/python bench/e2e.py [--quick] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXISTING = ROOT / "runs" / "ci" / "run.json"
STAGES = ("synth", "ingest", "render", "tokenizer", "pretrain", "matrix", "report")


def _pipeline(until: str | None) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        cmd = [sys.executable, "-m", "heartbeit", "--log-level", "WARNING", "run", "--profile", "ci",
               "--workdir", tmp, "--no-progress"] + (["--until", until] if until else [])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`heartbeit run` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        record = json.loads((Path(tmp) / "run.json").read_text())
    shown = "heartbeit run --profile ci --workdir <tmp> --no-progress" + (f" --until {until}" if until else "")
    return record, shown


def run(quick: bool) -> dict:
    from heartbeit.benchsuite import smoke

    existing = Path(os.environ.get("HEARTBEIT_BENCH_E2E_RUN_JSON", EXISTING))
    if smoke() and "HEARTBEIT_BENCH_E2E_RUN_JSON" not in os.environ:  # a fresh run of the first stage
        record, cmd = _pipeline("synth")
        source = {"source": "fresh run", "run_command": cmd}
    elif quick and existing.is_file():
        record = json.loads(existing.read_text())
        source = {"source": "existing run.json (not re-run)", "path": str(existing.relative_to(ROOT))
                  if existing.is_relative_to(ROOT) else str(existing),
                  "age_h": round((time.time() - existing.stat().st_mtime) / 3600, 2)}
    else:
        record, cmd = _pipeline("render" if quick else None)
        source = {"source": "fresh run", "run_command": cmd}
    raw = {k: float(v) for k, v in record["stages_s"].items()}
    total = raw.pop("total", None) or sum(raw.values())
    order = {name: i for i, name in enumerate(STAGES)}  # pipeline order, whatever order the JSON keeps
    stages = dict(sorted(raw.items(), key=lambda kv: order.get(kv[0], len(STAGES))))
    shares = {k: round(v / total, 4) for k, v in stages.items()} if total else {}
    out = {**source, "profile": record.get("profile"), "complete": record.get("complete"),
           "stopped_at": record.get("stopped_at"), "stages_s": stages, "total_s": total,
           "stage_share_of_total": shares}
    for stage, s in stages.items():
        print(f"{stage:<10} {s:8.1f} s  {shares.get(stage, 0):6.1%} of total", flush=True)
    print(f"{'total':<10} {total:8.1f} s  ({out['source']})", flush=True)
    if shares:
        slowest = max(shares, key=shares.get)
        out["headline"] = {"metric": f"ci pipeline wall time, s ({'through render' if record.get('complete') is False else 'all stages'}; slowest: {slowest})",
                           "value": round(total, 1), "baseline": None, "baseline_name": "stage shares of the total",
                           "ratio": shares[slowest]}
    return out


def main() -> int:
    from heartbeit.benchsuite import save_figures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reuse runs/ci/run.json, or run through render only")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = run(args.quick)
    save_figures(figures, args.json)  # run() prints its own table
    return 0


if __name__ == "__main__":
    sys.exit(main())
