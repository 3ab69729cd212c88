"""The report's "Cell sanity" section: every cell's verdicts (heartbeit/train/sanity.py), reported, never
dropped, with a reading of each "not better than chance" verdict: when a sibling (another model on the same
task, fraction, seed and draw) is better than chance, the cell's own training is suspect; when every model
of the group is at chance, the task at that label count is the likelier cause."""
from __future__ import annotations

import pandas as pd

from heartbeit.records import VERDICTS, current_verdicts

from .tables import fraction_label, model_label

NOTE = ("Verdicts on the selected weights' validation predictions: *collapsed* = prediction std < 1e-3, a constant "
        "prediction — a training defect; *one class* = every ECG on one side of p = 0.5 while the scores vary — a "
        "threshold property (common at ~10 % prevalence), a defect only with *not better than chance*; "
        "*non-finite loss* = a NaN/inf training loss; "
        "*not better than chance* = the validation AUROC's 95% DeLong CI includes 0.5 — the cell's training is "
        "suspect when a sibling model on the same ECGs learns, the task (too few labels, a weak signal) when "
        "none does. Cells are reported whatever their verdict.")


def sanity_frame(metas: list[dict]) -> pd.DataFrame:
    rows = []
    for m in metas:
        s = m.get("sanity") or {}
        rows.append({"cell_id": m["cell_id"], "task": m["task"], "fraction": float(m["fraction"]),
                     "seed": int(m.get("seed", 0)), "draw": int(m.get("draw", 0)), "arch": m["arch"],
                     "init": m.get("init", ""),
                     "verdicts": current_verdicts(s) if "verdicts" in s else ["not recorded"],
                     "val_auroc": s.get("val_auroc"), "val_auroc_low": s.get("val_auroc_low"),
                     "val_auroc_high": s.get("val_auroc_high"), "val_score_std": s.get("val_score_std")})
    return pd.DataFrame(rows)


def _reading(row, frame: pd.DataFrame) -> str:
    if "non_finite_loss" in row.verdicts:
        return "training defect: non-finite loss"
    if "collapsed" in row.verdicts:
        return "training defect: constant prediction"
    if "one_class" in row.verdicts and "not_better_than_chance" not in row.verdicts:
        return "one class at p = 0.5 but the scores rank (AUROC CI above 0.5): threshold, not a defect"
    if "not_better_than_chance" not in row.verdicts:
        return ""
    group = frame[(frame["task"] == row.task) & (frame["fraction"] == row.fraction) & (frame["seed"] == row.seed)
                  & (frame["draw"] == row.draw) & (frame["cell_id"] != row.cell_id)]
    learns = group[group["verdicts"].map(lambda v: "not_better_than_chance" not in v and "not recorded" not in v)]
    if len(learns):
        return f"suspect training: {len(learns)} sibling model(s) learn on the same ECGs"
    return "likely the task: no model of this group beats chance"


def sanity_tables(metas: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(counts per model, flagged cells, summary dict)."""
    frame = sanity_frame(metas)
    if frame.empty:
        return pd.DataFrame(), pd.DataFrame(), {}
    verdicts = VERDICTS
    counts = []
    for (arch, init), grp in frame.groupby(["arch", "init"], sort=True):
        row = {"Model": model_label(arch, init), "Cells": len(grp)}
        for v in verdicts:
            row[v.replace("_", " ")] = int(grp["verdicts"].map(lambda vs: v in vs).sum())
        counts.append(row)
    flagged = []
    for row in frame.itertuples(index=False):
        if not row.verdicts or row.verdicts == []:
            continue
        auroc = row.val_auroc
        ci = (f"{auroc:.3f} [{row.val_auroc_low:.3f}, {row.val_auroc_high:.3f}]"
              if isinstance(auroc, float) and auroc == auroc and row.val_auroc_low == row.val_auroc_low
              else (f"{auroc:.3f}" if isinstance(auroc, float) and auroc == auroc else "—"))
        flagged.append({"Task": row.task, "Fraction": fraction_label(row.fraction), "Seed": row.seed,
                        "Draw": row.draw, "Model": model_label(row.arch, row.init),
                        "Verdicts": ", ".join(v.replace("_", " ") for v in row.verdicts),
                        "Val AUROC [CI]": ci, "Reading": _reading(row, frame)})
    flagged_df = pd.DataFrame(flagged)
    summary = {v: int(frame["verdicts"].map(lambda vs: v in vs).sum()) for v in verdicts}
    summary["cells"] = int(len(frame))
    return pd.DataFrame(counts), flagged_df, summary
