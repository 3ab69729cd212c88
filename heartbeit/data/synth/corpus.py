"""The synthetic corpus: patients, sites, labels and broken files, written as real export files.

Layout under the output folder (a contract the ingest stage builds against):

    muse/<site>/<accession>.xml            GE MUSE RestingECG XML (8 stored leads, Median + Rhythm)
    wfdb/<site>/records<fs>/<NNNNN>/<ecg_id>_hr.{hea,dat}   PTB-XL layout, 12 leads, format 16
    wfdb/<site>/ptbxl_database.csv         PTB-XL's columns; STEMI as SCP codes (IMI / AMI / LMI)
    arrays/<site>/<accession>.npz + .json  float32 [12, n] in the site's units + sidecar
    labels.csv                             mrn, accession, lvef, hcm, stemi (MUSE + npz ECGs; blank = missing)
    ground_truth.csv                       one row per written record, true labels, broken_reason
    synth.json                             counts, the resolved synth config, and the marker ingest reads:
                                           generator "heartbeit synth" and `files` {relpath: {size, site}} of
                                           every record written (heartbeit.data.ingest.listing: the declared sites
                                           and the public synthetic key apply only to exactly these files)

Every per-patient and per-ECG random draw comes from a generator seeded with (seed, stream, index), so
the files are byte-identical for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from heartbeit.config import SiteSpec, SynthConfig, to_dict
from heartbeit.data.leads import INDEPENDENT_LEADS, LEAD_INDEX
from heartbeit.data.reasons import Reason
from heartbeit.data.synth.ecg import STEMI_TERRITORIES, SimulatedECG, simulate_ecg_detailed
from heartbeit.data.ingest.wfdb_io import PTBXL_DATABASE
from heartbeit.data.synth.writers import (MUSE_DEFECTS, NPZ_DEFECTS, WFDB_DEFECTS, ptbxl_record_path, write_muse_xml,
                                    write_npz, write_ptbxl_database, write_wfdb_record)
from heartbeit.records import SYNTH_GROUND_TRUTH, SYNTH_LABELS, SYNTH_RECORD
from heartbeit.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("heartbeit.synth")

GROUND_TRUTH_COLUMNS = (
    "relpath", "format", "site", "external", "patient_index", "mrn", "accession", "lvef", "lvef_le40", "hcm",
    "stemi", "stemi_territory", "severity", "fs", "broken_reason",
)
LABEL_COLUMNS = ("mrn", "accession", "lvef", "hcm", "stemi")
DEFECTS_BY_FORMAT = {"muse": MUSE_DEFECTS, "wfdb": WFDB_DEFECTS, "npz": NPZ_DEFECTS}
MEDIAN_PRE_R_S = 0.4  # the 1 s median beat puts the R peak 400 ms in

# Random-stream tags: each kind of draw has its own generator family.
_PATIENT, _ECG, _BROKEN, _SIM_PATIENT, _SIM_ECG = 1, 2, 3, 4, 5

FIRST_NAMES_M = ("JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "JOSEPH", "THOMAS",
                 "CHARLES", "DANIEL", "MATTHEW", "ANTHONY", "MARK", "STEVEN", "PAUL", "ANDREW", "KENNETH",
                 "JOSHUA", "KEVIN", "BRIAN", "GEORGE", "EDWARD", "RONALD", "CARLOS", "LUIS", "WEI", "RAJ")
FIRST_NAMES_F = ("MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "BARBARA", "SUSAN", "JESSICA", "SARAH",
                 "KAREN", "LISA", "NANCY", "BETTY", "MARGARET", "SANDRA", "ASHLEY", "DOROTHY", "KIMBERLY",
                 "EMILY", "DONNA", "MICHELLE", "CAROL", "AMANDA", "MELISSA", "MARIA", "ANA", "MEI", "PRIYA")
LAST_NAMES = ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ",
              "MARTINEZ", "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE",
              "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ",
              "LEWIS", "ROBINSON", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "NGUYEN", "HILL",
              "FLORES", "GREEN", "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL", "CHEN",
              "O'BRIEN", "PATEL", "KOWALSKI", "MUELLER")
OPERATORS = ("RN", "TECH", "ECGTECH", "CVT", "MA")
LOCATIONS = ("EMERGENCY DEPT", "CARDIOLOGY CLINIC", "CCU", "PRE-OP", "MED/SURG 4", "CHEST PAIN UNIT",
             "OUTPATIENT LAB")
_EPOCH = date(2012, 1, 1)


@dataclass(frozen=True)
class ECGPlan:
    """Everything drawn for one ECG before its signal is simulated (cheap; made in the parent)."""

    index: int  # global ECG index (the per-ECG RNG stream)
    patient_index: int
    site: str
    format: str
    mrn: str
    first_name: str
    last_name: str
    sex: str  # "M" | "F"
    birth_date: str  # ISO
    age: int
    acquired: str  # ISO datetime
    accession: str
    ecg_id: int  # WFDB sites: 1.. per site; 0 elsewhere
    lvef: float
    hcm: bool
    stemi_territory: str | None
    severity: float
    defect: str  # '' or a Reason value
    missing_labels: tuple[str, ...]
    patient_seed: int
    ecg_seed: int
    order_number: str
    cart_number: int
    operator: str
    location: str
    weight_kg: float
    stemi_st_min_mv: float = 0.0  # SynthConfig.stemi_st_min_mv

    @property
    def lvef_le40(self) -> bool:
        return self.lvef <= 40.0

    @property
    def stemi(self) -> bool:
        return self.stemi_territory is not None


def _bijective_id(index: int, seed: int, modulus: int, multiplier: int, floor: int) -> int:
    """Distinct ids for distinct indices (multiplication by a unit mod `modulus` is a permutation)."""
    return floor + (multiplier * (index + seed * 7_919)) % modulus


def _stream_seed(seed: int, stream: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def plan_corpus(cfg: SynthConfig) -> list[ECGPlan]:
    """Draw patients, their ECGs, labels and the broken-file assignment (deterministic in cfg.seed)."""
    seed = cfg.seed
    shares = np.array([s.share for s in cfg.sites], dtype=np.float64)
    shares /= shares.sum()
    smin = cfg.severity_min
    plans: list[ECGPlan] = []
    wfdb_counter: dict[str, int] = {}
    for p in range(cfg.n_patients):
        rng = np.random.default_rng([seed, _PATIENT, p])
        site = cfg.sites[int(rng.choice(len(cfg.sites), p=shares))]
        sex = "F" if rng.random() < 0.5 else "M"
        first = str(rng.choice(FIRST_NAMES_F if sex == "F" else FIRST_NAMES_M))
        last = str(rng.choice(LAST_NAMES))
        age0 = int(np.clip(rng.normal(62, 15), 18, 89))
        if rng.random() < 0.05:  # the oldest old: ages above 89 must be capped by de-identification
            age0 = int(rng.integers(90, 102))
        first_visit = _EPOCH + timedelta(days=int(rng.integers(0, 11 * 365)))
        birth = first_visit - timedelta(days=int(age0 * 365.25 + rng.integers(0, 364)))
        low_ef = rng.random() < cfg.prevalence_lvef_le40
        hcm = bool(rng.random() < cfg.prevalence_hcm)
        ef_depth = rng.uniform(0.0, 1.0)  # 0 = LVEF 40 %, 1 = LVEF 15 %
        lvef = round(40.0 - 25.0 * ef_depth, 1) if low_ef else round(rng.uniform(41.0, 75.0), 1)
        n_ecgs = int(rng.integers(1, cfg.ecgs_per_patient_max + 1))
        mrn = str(_bijective_id(p, seed, 90_000_000, 7_919_071, 10_000_000))
        weight = round(float(np.clip(rng.normal(80 if sex == "M" else 68, 14), 40, 160)), 0)
        visit = datetime.combine(first_visit, datetime.min.time())
        for k in range(n_ecgs):
            index = len(plans)
            erng = np.random.default_rng([seed, _ECG, index])
            if k:
                visit = visit + timedelta(days=int(erng.integers(1, 720)))
            acquired = visit.replace(hour=int(erng.integers(0, 24)), minute=int(erng.integers(0, 60)),
                                     second=int(erng.integers(0, 60)))
            age = int((acquired.date() - birth).days // 365.25)
            territory = None
            if erng.random() < cfg.prevalence_stemi:
                territory = str(STEMI_TERRITORIES[int(erng.integers(0, len(STEMI_TERRITORIES)))])
            # one severity per ECG grades every effect; a low LVEF sets it from how low the LVEF is
            severity = smin + (1.0 - smin) * (ef_depth if low_ef else erng.random())
            missing = tuple(name for name in ("lvef", "hcm", "stemi") if erng.random() < cfg.missing_label_fraction)
            ecg_id = 0
            if site.format == "wfdb":
                ecg_id = wfdb_counter[site.name] = wfdb_counter.get(site.name, 0) + 1
            plans.append(ECGPlan(
                index=index, patient_index=p, site=site.name, format=site.format, mrn=mrn, first_name=first,
                last_name=last, sex=sex, birth_date=birth.isoformat(), age=age,
                acquired=acquired.isoformat(), accession=str(_bijective_id(index, seed, 9_000_000_000,
                                                                           2_654_435_761, 1_000_000_000)),
                ecg_id=ecg_id, lvef=lvef, hcm=hcm, stemi_territory=territory, severity=round(float(severity), 4),
                defect="", missing_labels=missing, patient_seed=_stream_seed(seed, _SIM_PATIENT, p),
                stemi_st_min_mv=float(cfg.stemi_st_min_mv),
                ecg_seed=_stream_seed(seed, _SIM_ECG, index), order_number=f"{int(erng.integers(1e7, 1e8))}",
                cart_number=int(erng.integers(1, 99)), operator=str(erng.choice(OPERATORS)),
                location=str(erng.choice(LOCATIONS)), weight_kg=weight,
            ))
    return _assign_defects(plans, cfg)


def _assign_defects(plans: list[ECGPlan], cfg: SynthConfig) -> list[ECGPlan]:
    """Break round(broken_fraction * n) ECGs, cycling through the defects each format can carry."""
    n_broken = int(round(cfg.broken_fraction * len(plans)))
    if n_broken == 0:
        return plans
    rng = np.random.default_rng([cfg.seed, _BROKEN])
    chosen = np.sort(rng.choice(len(plans), size=n_broken, replace=False))
    cursor = {fmt: int(rng.integers(0, len(d))) for fmt, d in DEFECTS_BY_FORMAT.items()}
    out = list(plans)
    for i in chosen:
        plan = out[i]
        kinds = DEFECTS_BY_FORMAT[plan.format]
        defect = kinds[cursor[plan.format] % len(kinds)]
        cursor[plan.format] += 1
        out[i] = ECGPlan(**{**asdict(plan), "defect": defect.value})
    return out


# ------------------------------------------------------------------------------------------------------
# rendering one ECG into its file(s)


def median_beat(signals: np.ndarray, fs: float, r_peaks_s: np.ndarray) -> np.ndarray:
    """Median over beats of 1 s windows starting 400 ms before each R peak ([leads, fs])."""
    width = int(round(fs))
    starts = np.rint((r_peaks_s - MEDIAN_PRE_R_S) * fs).astype(np.int64)
    starts = starts[(starts >= 0) & (starts + width <= signals.shape[1])]
    windows = signals[:, starts[:, None] + np.arange(width)[None, :]]  # [leads, beats, width]
    return np.median(windows, axis=1).astype(np.float32)


def _statements(plan: ECGPlan, sim: SimulatedECG) -> list[str]:
    rate = sim.measurements["VentricularRate"]
    out = ["Sinus bradycardia" if rate < 60 else "Sinus tachycardia" if rate > 100 else "Normal sinus rhythm"]
    strong = plan.severity >= 0.5  # the machine reads only clear patterns
    if sim.lbbb:
        out.append("Left bundle branch block")
    elif plan.lvef_le40 and strong:
        out.append("Nonspecific intraventricular conduction delay")
        out.append("Low voltage QRS")
    if plan.hcm and strong:
        out.append("Left ventricular hypertrophy with repolarization abnormality")
    if plan.stemi and strong:
        out.append(f"{plan.stemi_territory.capitalize()} injury pattern")
        out.append("** ** ACUTE MI / STEMI ** **")
    if len(out) == 1:
        out.append("Normal ECG")
    return out


def _muse_measurements(sim: SimulatedECG) -> dict:
    m = dict(sim.measurements)
    fs = sim.fs
    rr = 60.0 / max(m["VentricularRate"], 1)

    def at(offset_s: float) -> int:
        return int(round((MEDIAN_PRE_R_S + offset_s) * fs))

    m.update(QOnset=at(sim.qrs_onset_s), QOffset=at(sim.j_point_s), POnset=at(sim.p_onset_s),
             POffset=at(sim.p_onset_s + 0.11), TOffset=at(sim.t_end_s))
    m["QTcFrederica"] = int(round(m["QTInterval"] / rr ** (1.0 / 3.0)))
    return m


def _ptbxl_row(plan: ECGPlan, site: SiteSpec, site_number: int, sim: SimulatedECG, rel: str) -> dict:
    codes: dict[str, float] = {}
    if plan.stemi:
        codes[{"inferior": "IMI", "anterior": "AMI", "lateral": "LMI"}[plan.stemi_territory]] = 100.0
    if sim.lbbb:
        codes["CLBBB"] = 100.0
    elif plan.lvef_le40:
        codes["IVCD"] = 50.0
    if plan.hcm:
        codes["LVH"] = 100.0
    if not codes:
        codes["NORM"] = 100.0
    codes["SR"] = 0.0
    axis = sim.measurements["RAxis"]
    heart_axis = "MID" if -30 <= axis <= 90 else ("LAD" if axis < -30 else "RAD")
    acquired = datetime.fromisoformat(plan.acquired)
    strat_fold = plan.patient_seed % 10 + 1  # PTB-XL folds are per patient
    return {
        "ecg_id": plan.ecg_id, "patient_id": f"{plan.patient_index + 1}.0",
        "age": "300.0" if plan.age > 89 else f"{plan.age:.1f}",  # PTB-XL writes 300 for ages above 89
        "sex": 1 if plan.sex == "F" else 0, "height": "", "weight": f"{plan.weight_kg:.1f}", "nurse": "",
        "site": f"{site_number:.1f}", "device": site.device, "recording_date": acquired.strftime("%Y-%m-%d %H:%M:%S"),
        "report": "; ".join(s.lower() for s in _statements(plan, sim)), "scp_codes": repr(codes),
        "heart_axis": heart_axis, "infarction_stadium1": "Stadium I" if plan.stemi else "",
        "infarction_stadium2": "", "validated_by": "", "second_opinion": False,
        "initial_autogenerated_report": False, "validated_by_human": True, "baseline_drift": "",
        "static_noise": "", "burst_noise": "", "electrodes_problems": "", "extra_beats": "", "pacemaker": "",
        "strat_fold": strat_fold, "filename_lr": "", "filename_hr": rel,
    }


def simulate_plan(plan: ECGPlan, site: SiteSpec, duration_s: float) -> SimulatedECG:
    """The signal of one planned ECG with its site's rate and artefacts (what its file(s) will hold)."""
    return simulate_ecg_detailed(
        plan.ecg_seed, fs=site.fs, duration_s=duration_s, lvef_le40=plan.lvef_le40, hcm=plan.hcm,
        stemi_territory=plan.stemi_territory, severity=plan.severity, noise_mv=site.noise_mv,
        wander_mv=site.wander_mv, powerline_hz=site.powerline_hz, powerline_mv=site.powerline_mv,
        patient_seed=plan.patient_seed, stemi_st_min_mv=plan.stemi_st_min_mv,
    )


def render_ecg(plan: ECGPlan, site: SiteSpec, site_number: int, duration_s: float, out_dir: Path) -> dict:
    """Simulate one ECG, write its file(s); return its ground-truth, label and PTB-XL rows."""
    sim = simulate_plan(plan, site, duration_s)
    defect = Reason(plan.defect) if plan.defect else None
    acquired = datetime.fromisoformat(plan.acquired)
    ptbxl = None
    if plan.format == "muse":
        rel = f"muse/{site.name}/{plan.accession}.xml"
        independent = sim.signals[[LEAD_INDEX[n] for n in INDEPENDENT_LEADS]]
        birth = date.fromisoformat(plan.birth_date)
        write_muse_xml(
            out_dir / rel, independent, median_beat(independent, sim.fs, sim.r_peaks_s), site.fs,
            site.gain_uv_per_bit,
            demographics={
                "PatientID": plan.mrn, "PatientAge": plan.age, "AgeUnits": "YEARS",
                "DateofBirth": birth.strftime("%m-%d-%Y"), "Gender": "FEMALE" if plan.sex == "F" else "MALE",
                "PatientLastName": plan.last_name, "PatientFirstName": plan.first_name,
            },
            test={
                "DataType": "RESTING", "Site": site_number, "SiteName": site.name,
                "AcquisitionDevice": site.device, "Status": "CONFIRMED", "Priority": "NORMAL",
                "Location": 1 + _location_number(plan.location), "LocationName": plan.location,
                "AcquisitionTime": acquired.strftime("%H:%M:%S"), "AcquisitionDate": acquired.strftime("%m-%d-%Y"),
                "CartNumber": plan.cart_number, "AcquisitionSoftwareVersion": "010B",
                "AnalysisSoftwareVersion": "241", "OperatorLastName": plan.operator,
            },
            order={"AccessionNumber": plan.accession, "OrderNumber": plan.order_number},
            measurements=_muse_measurements(sim), statements=_statements(plan, sim), defect=defect,
        )
    elif plan.format == "npz":
        rel = f"arrays/{site.name}/{plan.accession}.npz"
        write_npz(out_dir / rel, sim.signals, site.fs, site.units, {
            "site": site.name, "device": site.device, "accession": plan.accession, "mrn": plan.mrn,
            "sex": plan.sex, "age": plan.age, "acquisition_date": acquired.date().isoformat(),
        }, defect=defect)
    else:
        record = ptbxl_record_path(plan.ecg_id, site.fs)
        write_wfdb_record(out_dir / "wfdb" / site.name, plan.ecg_id, sim.signals, site.fs,
                          site.gain_uv_per_bit, defect=defect)
        rel = f"wfdb/{site.name}/{record}.hea"
        ptbxl = _ptbxl_row(plan, site, site_number, sim, record)
    truth = {
        "relpath": rel, "format": plan.format, "site": site.name, "external": int(site.external),
        "patient_index": plan.patient_index, "mrn": plan.mrn if plan.format != "wfdb" else f"{plan.patient_index + 1}",
        "accession": plan.accession if plan.format != "wfdb" else str(plan.ecg_id), "lvef": f"{plan.lvef:.1f}",
        "lvef_le40": int(plan.lvef_le40), "hcm": int(plan.hcm), "stemi": int(plan.stemi),
        "stemi_territory": plan.stemi_territory or "", "severity": f"{plan.severity:.4f}", "fs": site.fs,
        "broken_reason": plan.defect,
    }
    label = None
    if plan.format != "wfdb":
        label = {
            "mrn": plan.mrn, "accession": plan.accession,
            "lvef": "" if "lvef" in plan.missing_labels else f"{plan.lvef:.1f}",
            "hcm": "" if "hcm" in plan.missing_labels else int(plan.hcm),
            "stemi": "" if "stemi" in plan.missing_labels else int(plan.stemi),
        }
    return {"index": plan.index, "truth": truth, "label": label, "ptbxl": ptbxl, "site": site.name}


def _location_number(name: str) -> int:
    """A stable small location number (Python's str hash is salted per process)."""
    return sum(ord(c) for c in name) % 50


def _render_chunk(plans: list[ECGPlan], sites: dict[str, tuple[SiteSpec, int]], duration_s: float,
                  out_dir: str) -> list[dict]:
    out = Path(out_dir)
    return [render_ecg(p, sites[p.site][0], sites[p.site][1], duration_s, out) for p in plans]


# ------------------------------------------------------------------------------------------------------
# the whole corpus


def _csv_text(columns, rows) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _pool_context():
    """fork starts workers in milliseconds; once torch (with its thread pools) is loaded, fork is unsafe
    and spawn is used instead."""
    if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def write_corpus(cfg: SynthConfig, out_dir: str | Path, workers: int = 1, progress: bool = True) -> dict:
    """Write the corpus into `out_dir` (an existing, empty folder); returns the summary in synth.json."""
    out_dir = Path(out_dir)
    plans = plan_corpus(cfg)
    sites = {s.name: (s, i + 1) for i, s in enumerate(cfg.sites)}
    chunk = max(1, min(64, math.ceil(len(plans) / (max(workers, 1) * 4))))
    chunks = [plans[i:i + chunk] for i in range(0, len(plans), chunk)]
    results: list[dict] = []
    bar = tqdm(total=len(plans), desc="synth", unit="ecg", disable=not progress)
    if workers <= 1:
        for c in chunks:
            results.extend(_render_chunk(c, sites, cfg.duration_s, str(out_dir)))
            bar.update(len(c))
    else:
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            futures = [pool.submit(_render_chunk, c, sites, cfg.duration_s, str(out_dir)) for c in chunks]
            for fut in as_completed(futures):
                part = fut.result()
                results.extend(part)
                bar.update(len(part))
    bar.close()
    results.sort(key=lambda r: r["index"])  # order of completion never reaches the files

    truth = [r["truth"] for r in results]
    atomic_write_text(out_dir / SYNTH_GROUND_TRUTH, _csv_text(GROUND_TRUTH_COLUMNS, truth))
    atomic_write_text(out_dir / SYNTH_LABELS, _csv_text(LABEL_COLUMNS, [r["label"] for r in results if r["label"]]))
    for name, (site, _) in sites.items():
        rows = [r["ptbxl"] for r in results if r["ptbxl"] is not None and r["site"] == name]
        if site.format == "wfdb" and rows:
            write_ptbxl_database(out_dir / "wfdb" / name / PTBXL_DATABASE, rows)

    def count(key):
        return {k: sum(1 for t in truth if t[key] == k) for k in sorted({t[key] for t in truth})}

    from heartbeit.data.ingest.listing import SYNTH_GENERATOR

    files = {t["relpath"]: {"size": (out_dir / t["relpath"]).stat().st_size, "site": t["site"]}
             for t in truth if (out_dir / t["relpath"]).is_file()}
    summary = {
        "generator": SYNTH_GENERATOR,
        "files": dict(sorted(files.items())),
        "seed": cfg.seed,
        "patients": cfg.n_patients,
        "ecgs": len(truth),
        "by_format": count("format"),
        "by_site": count("site"),
        "broken": sum(1 for t in truth if t["broken_reason"]),
        "broken_by_reason": {k: v for k, v in count("broken_reason").items() if k},
        "labels": {name: sum(int(t[name]) for t in truth) for name in ("lvef_le40", "hcm", "stemi")},
        "config": {k: v for k, v in to_dict(cfg).items() if k != "workers"},
    }
    atomic_write_json(out_dir / SYNTH_RECORD, summary)
    log.info("wrote %d ECGs of %d patients (%d deliberately broken)", summary["ecgs"], cfg.n_patients,
             summary["broken"])
    return summary
