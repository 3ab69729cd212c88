"""`heartbeit predict INPUT... --model MODEL_DIR --out PRED.csv`: score ECG files with an exported model."""
from __future__ import annotations

import argparse
from pathlib import Path

from heartbeit.config.layout import RunLayout

HELP = """Score MUSE / WFDB / array files with a model folder from `heartbeit export`. Files pass the same
ingest as a corpus (quality gates; refused files listed with their reason in PRED.rejects.csv), the model's
own filters and layout, then batched inference (the GPU when present). PRED.csv: source (path relative to
its input root), ecg_uid, p_<task>, <task>_pred at the model's threshold. Written atomically with mode
0600 (your own output, inside your secure zone); an existing --out is refused unless --overwrite, and
--out may not be a link, a folder or lie inside an input. The same file or waveform given twice is scored
once (the repeat is a counted reject). With --labels, labels must be 0/1 (other values are refused per row
and counted).

  heartbeit predict new_ecgs/ --model models/stemi --out pred.csv
  heartbeit predict site_b/ --model models/stemi --out pred.csv --labels site_b.csv --label-key record
  heartbeit predict site_b/ --model models/hcm --out pred.csv --labels site_b.csv --label-column lvh
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="files or folders")
    parser.add_argument("--model", required=True, help="model folder (heartbeit export)")
    parser.add_argument("--out", required=True, help="predictions CSV (rejects: <stem>.rejects.csv beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never a link or folder)")
    parser.add_argument("--labels", default=None, help="labels CSV: adds <stem>.metrics.json with 95 %% CIs")
    parser.add_argument("--label-key", default=None, help="labels column joined to each file (default: the model's ingest.label_key)")
    parser.add_argument("--label-column", default=None, metavar="NAME",
                        help="labels column to score against (0/1), e.g. a real LVH label for an HCM model "
                             "(default: the model task's own column)")
    parser.add_argument("--saliency", default=None, metavar="DIR", help="write per-ECG saliency maps here")
    parser.add_argument("--key", default=None,
                        help="HMAC key file for ecg_uid (default <workdir>/secret/deid.key, created 0600)")
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda | cuda:N")
    parser.add_argument("--workers", type=_positive, default=1, help="reader processes")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--workdir", default="runs/predict", help="where the default key lives")


def run(args: argparse.Namespace) -> int:
    from heartbeit.commands import fail
    from heartbeit.data.ingest import deid
    from heartbeit.data.ingest.labels import LabelError
    from heartbeit.modelio import ModelDirError
    from heartbeit.predict import run_predict
    from heartbeit.predict_io import PredictError

    key_path = Path(args.key or RunLayout(args.workdir).deid_key)
    try:
        key = deid.load_or_create_key(key_path)
        summary = run_predict(args.inputs, args.model, args.out, key, labels_csv=args.labels,
                              label_key=args.label_key, label_column=args.label_column, saliency_dir=args.saliency,
                              batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                              workers=args.workers, overwrite=args.overwrite, protected=(key_path,))
    except (ModelDirError, LabelError, PredictError, deid.KeyFileError, FileNotFoundError) as exc:
        return fail("predict", exc)
    reasons = ", ".join(f"{k} {v}" for k, v in summary["by_reason"].items())
    print(f"predict: {summary['n_scored']} scored, {summary['n_rejected']} rejected"
          + (f" ({reasons})" if reasons else "") + f" -> {args.out} "
          f"(task {summary['task']}, threshold {summary['threshold']:.4f}, {summary['device']})")
    m = summary.get("metrics")
    if m:
        c = m["counts"]
        print(f"  labels: column {m['labels']['column']!r} ({m['labels']['note']}); {c['n']} labelled, "
              f"{c['unlabelled']} unlabelled, {c['refused_label']} refused (not 0/1)")
        for name in ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv"):
            v = m[name]
            print(f"  {name:12s} {v['value']:.3f} ({v['low']:.3f}-{v['high']:.3f}) {v['reason']}")
    return 0
