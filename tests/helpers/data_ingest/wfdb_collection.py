"""A public-12-lead-collection layout (as LUDB ships it), generated: per record `<n>.hea` + `<n>.dat` and one
WFDB annotation file per lead beside them (`<n>.i`, `<n>.ii`, ..., `<n>.v6`), headers with the bracketed
comment form (`#<age>: 51`, `#<sex>: F`, `#<diagnoses>:` then one statement per line), and the collection's
side files (RECORDS, a CSV table, a licence). Deterministic; no binaries in the repo.

Some annotation files start with `<` (0x3c): a real annotation's first byte can be anything, and a reader
that sniffed contents would take such a file for XML."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .crafted import ecg, write_wfdb

ANNOTATORS = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")
# (age text, sex, diagnosis statements) cycled over the records; statements as LUDB writes them.
PROFILES = (
    ("51", "F", ["Rhythm: Sinus rhythm.", "Electric axis of the heart: normal.", "Left ventricular hypertrophy."]),
    ("64", "M", ["Rhythm: Atrial fibrillation.", "Electric axis of the heart: left.",
                 "Incomplete right bundle branch block."]),
    (">89", "F", ["Rhythm: Sinus bradycardia.", "Left ventricular hypertrophy.", "Left ventricular overload."]),
    ("37", "M", ["Rhythm: Sinus rhythm.", "Electric axis of the heart: normal."]),
)


def diagnosis_comments(age: str, sex: str, statements: list[str]) -> list[str]:
    return [f"<age>: {age}", f"<sex>: {sex}", "<diagnoses>:", *statements]


def write_collection(root: Path, n: int = 8, seed: int = 100, fs: int = 500) -> dict[str, dict]:
    """Writes `n` records under root/data/; returns {record name: {"age", "sex", "statements", "lvh", "af"}}."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    for i in range(n):
        name = str(i + 1)
        age, sex, statements = PROFILES[i % len(PROFILES)]
        write_wfdb(data, name, ecg(seed + i, fs=fs), fs=fs, comments=diagnosis_comments(age, sex, statements))
        rng = np.random.default_rng(seed + i)
        for j, ann in enumerate(ANNOTATORS):
            body = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
            (data / f"{name}.{ann}").write_bytes((b"<" if j % 5 == 0 else b"") + body)
        text = " ".join(statements).lower()
        truth[name] = {"age": min(float(age.lstrip(">")), 89.0), "sex": sex, "statements": statements,
                       "lvh": float("left ventricular hypertrophy" in text),
                       "af": float("atrial fibrillation" in text)}
    (root / "RECORDS").write_text("".join(f"data/{k}\n" for k in truth))
    (root / "ludb.csv").write_text("ID,Sex,Age\n" + "".join(f"{k},{v['sex']},{v['age']}\n" for k, v in truth.items()))
    (root / "LICENSE.txt").write_text("ODC-By\n")
    return truth
