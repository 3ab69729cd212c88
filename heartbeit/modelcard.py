"""The model card (README.md of a model folder), rendered from a validated config.json alone: nothing the
config does not hold can reach it, and its counts are the config's (small ones withheld: modelschema)."""
from __future__ import annotations

from heartbeit.modelschema import WITHHELD


def _fmt(m: dict) -> str:
    if m["value"] is None:
        return f"n/a ({m['reason'] or 'undefined'})"
    ci = f" ({m['low']:.3f}-{m['high']:.3f})" if m["low"] is not None and m["high"] is not None \
        else f" ({m['reason'] or 'no CI'})"
    return f"{m['value']:.3f}{ci}"


def _count(v) -> str:
    return str(v) if not isinstance(v, str) else ("withheld" if v == WITHHELD else v)


def model_card(config: dict) -> str:
    task, cell, thr = config["tasks"][0], config["cell"], config["threshold"]
    td = config["task_definitions"][task]
    k = config["suppression"]["min_count"]
    signal = config["modality"] == "wave"
    lines = [f"# {config['architecture']} — {task}", "",
             f"A binary ECG {'waveform' if signal else 'image'} classifier for **{task}** (label column "
             f"`{td['column']}`, positive when `{td['column']} {td['positive']}`), trained with HeartBEiT Bench "
             f"{config['heartbeit_version']} ({config['code_version']}); model folder format `{config['format']}`.",
             "", "## Load", "", "```python",
             "from heartbeit.modelio import load_model_dir",
             "# checks config.json against the folder format, builds the model from its validated",
             "# architecture and image size, and loads the weights as bounded safetensors",
             "model, cfg = load_model_dir('MODEL_DIR')  # eval mode",
             "# input: (x - cfg['normalization']['mean']) / cfg['normalization']['std']; softmax output 1 = p", "```",
             "", "Or score files directly: `heartbeit predict INPUT... --model MODEL_DIR --out PRED.csv "
             "[--labels CSV]`.", "", "## Input", "",
             f"12-lead ECGs through heartbeit's ingest gates, resampled to {config['ingest']['corpus_fs']} Hz, "
             f"{config['ingest']['duration_s']:g} s, filtered {config['render']['bandpass_hz']} Hz, "
             + (f"as a waveform at {config['render']['wave_hz']} Hz in mV"
                if signal else f"drawn in the `{config['layout']}` layout at {config['image_size']} px")
             + f"; normalisation mean {config['normalization']['mean']:.3f}, std "
             f"{config['normalization']['std']:.3f}.", "", "## Outputs", ""]
    lines += [f"- output {o['index']}: {o['meaning']}" for o in config["outputs"]]
    lines += ["", f"Decision threshold {thr['value']:.4f} ({thr['method']}; {_count(thr['n_val'])} ECGs, "
              f"{_count(thr['n_val_pos'])} positive).", "",
              "## Training data", "",
              f"{_count(cell['n_train'])} training ECGs ({_count(cell['n_train_pos'])} positive) at training "
              f"fraction {cell['fraction']:g}, seed {cell['seed']}, draw {cell['draw']}, initialisation "
              f"{cell['init']} ({cell['kind']}), epoch {cell['selected_epoch']} of {cell['epochs']} selected on "
              f"validation (profile {cell['profile']}).", "",
              "## Metrics (95 % CIs: AUROC DeLong, AUPRC bootstrap, rates Wilson)", "",
              f"Counts below {k} are shown as `< {k}`; a count or rate that would give one away is `withheld` "
              f"(rates at the threshold need all four confusion-matrix cells >= {k}, AUROC/AUPRC both classes).",
              "", "| set | n | positives | AUROC | AUPRC | sensitivity | specificity | PPV | NPV |",
              "|---|---|---|---|---|---|---|---|---|"]
    for split, m in config["metrics"].items():
        lines.append(f"| {split} | {_count(m['counts']['n'])} | {_count(m['counts']['n_pos'])} | " + " | ".join(
            _fmt(m[name]) for name in ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")) + " |")
    lines += ["", "## Intended use", "",
              "Research: benchmarking and external validation on your own labelled ECGs inside your secure "
              "environment. Not a medical device; not for diagnosis or treatment decisions.", "",
              "## Limits", "",
              "- Scores are calibrated only to the training population; the threshold was chosen on its "
              "validation split and shifts with prevalence, device and site.",
              "- Inputs that fail the ingest gates are refused, not scored; other acquisition settings, paced "
              "or paediatric ECGs may be out of distribution.",
              "- Small validation/test sets give wide intervals (see the table); re-validate before any use.", ""]
    return "\n".join(lines)
