"""The run configuration is checked whole before the first stage: sizes across stages, external sites in
the data, the baselines' ImageNet weights, a GPU for the GPU stages of the paper/workstation profiles; and
`heartbeit slurm submit` asks for GPUs, CPUs and memory the profile needs."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from heartbeit.cli import main
from heartbeit.config import ConfigError, load_config
from heartbeit.config import preflight
from heartbeit.config.preflight import check_run, config_problems, site_problems

ROOT = Path(__file__).resolve().parents[2]
PAPER_BASELINES = ["beit_base_patch16_224", "efficientnet_b4", "resnet152"]


def test_paper_matrix_is_the_papers():
    cfg = load_config("paper")
    assert cfg.matrix.architectures == ["heartbeit_base_patch16_224", *PAPER_BASELINES, "signal_xresnet1d101"]
    assert cfg.render.image_size == cfg.pretrain.image_size == cfg.matrix.image_size == 224
    assert not cfg.allow_cpu and not cfg.matrix.allow_random_init
    assert config_problems(cfg) == []
    for profile in ("ci", "demo", "workstation"):
        assert config_problems(load_config(profile)) == [], profile


def test_paper_stops_before_training_without_imagenet_weights(tmp_path):
    weights = tmp_path / "imagenet"
    cfg = load_config("paper", overrides=[f"matrix.imagenet_weights_dir={weights}", "allow_cpu=true"])
    with pytest.raises(ConfigError) as err:
        check_run(cfg, ["plan"])
    for arch in PAPER_BASELINES:  # every missing file is named where it must go
        assert f"{weights}/{arch}.safetensors" in str(err.value)
    assert "heartbeit_base" not in str(err.value) and "signal_" not in str(err.value)
    assert "allow_random_init" in str(err.value)
    weights.mkdir()
    for arch in PAPER_BASELINES[:2]:
        (weights / f"{arch}.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError) as err:
        check_run(cfg, ["plan"], load_weights=False)  # (placeholder files: whether they load is the next test's)
    assert "resnet152.safetensors" in str(err.value) and "efficientnet_b4.safetensors" not in str(err.value)
    (weights / "resnet152").mkdir()
    (weights / "resnet152" / "model.safetensors").write_bytes(b"x")
    check_run(cfg, ["plan"], load_weights=False)
    check_run(load_config("paper", overrides=["matrix.allow_random_init=true", "allow_cpu=true"]), ["plan"])
    check_run(load_config("paper"), ["synth", "ingest", "render", "tokenizer"])  # not before the matrix


def test_imagenet_files_are_loaded_into_their_models_before_training(tmp_path):
    """Each file goes through the cell's own loading (weights.py: .pth read with weights_only, the RGB stem
    folded to one channel, the 1000-class head dropped): a file that does not fit is named up front."""
    import timm
    import torch
    from safetensors.torch import save_file

    from heartbeit.config import MatrixConfig
    from heartbeit.config.preflight import weight_problems

    weights = tmp_path / "imagenet"
    weights.mkdir()
    mcfg = MatrixConfig(architectures=["resnet18"], imagenet_weights_dir=str(weights), image_size=64)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights / "resnet18.pth")  # RGB, 1000
    assert weight_problems(mcfg) == []
    (weights / "resnet18.pth").unlink()
    save_file(timm.create_model("resnet34", pretrained=False).state_dict(), str(weights / "resnet18.safetensors"))
    (problem,) = weight_problems(mcfg)
    assert "matrix.imagenet_weights_dir: resnet18.safetensors does not" in problem and "resnet18" in problem
    assert weight_problems(mcfg, load=False) == []  # only presence


def test_no_gpu_names_the_real_reason(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(preflight, "gpu_available", lambda: False)
    cfg = load_config("paper", overrides=["matrix.allow_random_init=true"])
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build\n")
    assert preflight.driver_version(proc) == "535.104.05" and preflight.driver_version(tmp_path / "none") is None
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(preflight, "driver_version", lambda: "535.104.05")
    with pytest.raises(ConfigError, match=r"built for CUDA 13.0, driver 535.104.05: driver 535.104.05 is older than "
                                          r"the R580 this torch build's CUDA 13.0 needs"):
        check_run(cfg, ["matrix"])
    monkeypatch.setattr(preflight, "driver_version", lambda: None)
    with pytest.raises(ConfigError, match="no NVIDIA driver on this node"):
        check_run(cfg, ["pretrain"])
    monkeypatch.setattr(preflight, "driver_version", lambda: "580.65.06")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES='' hides every GPU"):
        check_run(cfg, ["pretrain"])
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match="this torch build has no CUDA"):
        check_run(cfg, ["pretrain"])


def test_sizes_across_stages_are_checked():
    # one image size (render.image_size, which pretraining and the matrix take): checked against the
    # model's patch grid and the tokenizer's
    problems = config_problems(load_config("paper", overrides=["render.image_size=256"]))
    assert any("at render.image_size 256 has a 16x16 patch grid but the tokenizer gives 14x14" in p for p in problems)
    problems = config_problems(load_config("paper", overrides=["render.image_size=232"]))
    assert any("render.image_size (232) is not a multiple of" in p for p in problems)
    problems = config_problems(load_config("ci", overrides=["pretrain.model=heartbeit_tiny_patch8_64"]))
    assert any("pretrain.model is heartbeit_tiny_patch8_64" in p for p in problems)
    # the tokenizer's own view may differ in pixels: 112 px / 8 = 224 px / 16
    assert config_problems(load_config("paper", overrides=["tokenizer.input_size=224",
                                                           "tokenizer.patch_size=16"])) == []


def test_external_sites_must_exist_in_the_data(tmp_path):
    problems = config_problems(load_config("ci", overrides=["render.external_sites=[nowhere]"]))
    assert any("['nowhere']" in p and "hosp_a" in p for p in problems)
    # real data with the synthetic default's site names: refused before ingest
    real = load_config("paper", overrides=[f"input_dirs=[{tmp_path}]"])
    assert any("names the synthetic data's sites but input_dirs is real data" in p for p in config_problems(real))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pd.DataFrame({"site": ["msh", "msh", "morningside", None]}).to_parquet(corpus / "metadata.parquet")
    cfg = load_config("paper", overrides=[f"input_dirs=[{tmp_path}]", "render.external_sites=[st_lukes]"])
    (problem,) = site_problems(cfg, corpus)
    assert "['st_lukes']" in problem and "['morningside', 'msh']" in problem
    ok = load_config("paper", overrides=[f"input_dirs=[{tmp_path}]", "render.external_sites=[morningside]"])
    assert site_problems(ok, corpus) == [] and config_problems(ok) == []
    assert site_problems(cfg, tmp_path / "no-corpus-yet") == []


def test_external_sites_empty_warns(caplog):
    cfg = load_config("ci", overrides=["render.external_sites=[]"])
    check_run(cfg, ["render"])
    assert "no external validation set" in caplog.text


def test_gpu_stages_refuse_the_cpu_unless_allowed(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(preflight, "gpu_available", lambda: False)
    for profile in ("paper", "workstation"):
        cfg = load_config(profile, overrides=["matrix.allow_random_init=true"])
        for stage in ("pretrain", "matrix"):
            with pytest.raises(ConfigError, match=f"allow_cpu: the {profile} profile's {stage} stage needs a GPU"):
                check_run(cfg, [stage])
        check_run(cfg, ["synth", "ingest", "render", "tokenizer", "plan", "report"])  # CPU stages run anywhere
        check_run(load_config(profile, overrides=["allow_cpu=true", "matrix.allow_random_init=true"]),
                  ["pretrain", "matrix"])
    check_run(load_config("ci"), ["pretrain", "matrix"])
    # the commands refuse before doing anything
    work = tmp_path / "w"
    assert main(["pretrain", "--profile", "paper", "--workdir", str(work)]) == 2
    assert main(["run", "--profile", "paper", "--workdir", str(work), "--set", "matrix.allow_random_init=true"]) == 2
    assert "needs a GPU" in capsys.readouterr().err and not work.exists()
    monkeypatch.setattr(preflight, "gpu_available", lambda: True)
    check_run(load_config("paper", overrides=["matrix.allow_random_init=true"]), ["pretrain", "matrix"])


def dry_run(*args):
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "slurm", "submit", "--dry-run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    blocks = {b.split("\n", 1)[0]: b for b in proc.stdout.split("\n# ") if not b.startswith("WARNING")}
    # the matrix may be split by expected duration into matrix#0, matrix#1, ...: the first part stands for all
    blocks.setdefault("matrix", next((b for k, b in blocks.items() if k.startswith("matrix#")), ""))
    return blocks, proc.stdout


def test_slurm_dry_run_requests_gpus_cpus_and_memory(tmp_path):
    blocks, out = dry_run("--profile", "paper", "--workdir", str(tmp_path / "w"))
    # 1 GPU per node by default; CPUs for the rank + the loader cores its GPU's image rate needs at the decode
    # rate (ASSUMED A100: ~1,160 BEiT-B MIM images/s, ~1,740 matrix images/s; 4,000 decoded per core: 1 + 1),
    # not workers x ranks; host memory for the 10 loader workers
    assert "--gpus-per-node=1" in blocks["pretrain"] and "--cpus-per-task=2" in blocks["pretrain"]
    assert "--mem=28G" in blocks["pretrain"] and "HEARTBEIT_RANKS_PER_NODE=1" in blocks["pretrain"]
    assert "--gpus-per-node=1" in blocks["matrix"] and "--cpus-per-task=2" in blocks["matrix"]
    assert "--mem=24G" in blocks["matrix"]
    for stage in ("prepare", "plan", "report"):
        assert "--gpus-per-node" not in blocks[stage]
    assert "WARNING (a real submit stops here): matrix.imagenet_weights_dir" in out
    # fewer GPUs than the paper's designed 32: refused, with the numbers
    assert "WARNING (a real submit stops here): world_size: the paper profile's pretraining is designed for 32 " \
           "GPUs" in out and "this allocation has 1 (1 node(s) x 1 GPU(s))" in out and "GPU-hours" in out
    # 8 GPUs per node: 8 torchrun workers, 8 x 2 CPUs; 2 x 8 = 16 GPUs are still too few
    blocks, out = dry_run("--profile", "paper", "--workdir", str(tmp_path / "w"), "--gpus-per-node", "8",
                          "--nodes", "2")
    assert "--gpus-per-node=8" in blocks["pretrain"] and "--cpus-per-task=16" in blocks["pretrain"]
    assert "--mem=224G" in blocks["pretrain"] and "HEARTBEIT_RANKS_PER_NODE=8" in blocks["pretrain"]
    assert "this allocation has 16 (2 node(s) x 8 GPU(s))" in out and " x 2, about" in out
    from heartbeit.config.slurm import SiteConfig
    from heartbeit.cost import allocation_problem

    paper = load_config("paper")
    assert allocation_problem(paper, SiteConfig(), 4, 8) is None  # 4 x 8 = the designed 32
    assert "needs GPUs" in allocation_problem(paper, SiteConfig(), 1, 0)
    assert allocation_problem(load_config("paper", overrides=["allow_cpu=true"]), SiteConfig(), 1, 1) is None
    # a CPU profile never inherits a GPU request, even from a site file whose defaults give every job GPUs
    site = tmp_path / "site.yaml"
    site.write_text("defaults: {gpus_per_node: 4}\n")
    blocks, out = dry_run("--profile", "ci", "--workdir", str(tmp_path / "c"), "--site", str(site))
    assert "--gpus-per-node" not in out and "world_size" not in out


def test_slurm_scripts_default_to_the_checkouts_venv(tmp_path):
    """Submitted from a checkout with .venv, the scripts run its python (not python3 on PATH)."""
    fake = tmp_path / ".venv" / "bin"
    fake.mkdir(parents=True)
    # a venv without torch: `python -c 'import torch, heartbeit'` fails, anything else echoes
    (fake / "python").write_text("#!/bin/sh\n[ \"$1\" = -c ] && exit 1\necho \"venv-python $*\"\n")
    (fake / "python").chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(tmp_path)}
    out = subprocess.run(["bash", str(ROOT / "slurm" / "report.sh"), "--profile", "paper"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "venv-python -m heartbeit report --profile paper" in out.stdout
    out = subprocess.run(["bash", str(ROOT / "slurm" / "pretrain.sh")], env={**env, "SLURM_JOB_ID": "7"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"{fake / 'python'} cannot import torch and heartbeit" in out.stderr
