"""The cost model behind every Slurm time limit: FLOPs per architecture, corpus counts, limits,
the matrix array split by expected duration with the report after every part, and the dry-run's table."""
from __future__ import annotations

import pandas as pd
import pytest

from heartbeit.config import load_config
from heartbeit.config.core import ConfigError
from heartbeit.config.slurm import SiteConfig, StageResources, format_time, parse_time
from heartbeit.cost import (corpus_counts, device_flops, estimate_study, estimate_table, index_ranges,
                            split_by_duration, time_limit)
from heartbeit.train.flops import classifier_forward_flops


def test_forward_flops_of_every_matrix_family():
    # 2 x the published multiply-accumulates at 224 px (BEiT/ViT-B/16 17.6 G, ResNet-152 11.6 G), 1 channel in
    assert classifier_forward_flops("beit_base_patch16_224", 224) == pytest.approx(35.2e9, rel=0.03)
    assert classifier_forward_flops("heartbeit_base_patch16_224", 224) == \
        classifier_forward_flops("beit_base_patch16_224", 224)
    assert classifier_forward_flops("resnet152", 224) == pytest.approx(23.1e9, rel=0.03)
    assert 2.5e9 < classifier_forward_flops("efficientnet_b4", 224) < 3.5e9
    sig = classifier_forward_flops("signal_xresnet1d101", wave_len=1000)
    assert sig > 1e9 and classifier_forward_flops("signal_xresnet1d101", wave_len=2000) == pytest.approx(2 * sig, rel=0.05)


def test_limits_ranges_and_duration_classes():
    site = SiteConfig(max_time="1-00:00:00")
    assert time_limit(3600, site) == ("01:45:00", False)  # 1 h x 1.5 + 10 min = 1:40, up to 15 min
    assert time_limit(30 * 3600, site) == ("1-00:00:00", True)  # capped: the cell checkpoints and requeues
    assert parse_time("2-04:30:00") == 2 * 86400 + 4.5 * 3600 and parse_time("90") == 5400
    assert format_time(93784) == "1-02:03:04"
    with pytest.raises(ConfigError, match="not a Slurm time"):
        parse_time("two days")
    assert index_ranges([7, 0, 1, 2, 5, 8]) == "0-2,5,7-8"
    parts = split_by_duration([100.0, 5 * 3600, 200.0, 20 * 3600, 5.2 * 3600], SiteConfig())  # <= 1 h, 8 h, 32 h
    assert [p[0] for p in parts] == [[0, 2], [1, 4], [3]] and parts[1][1] == 5.2 * 3600


def test_counts_come_from_the_manifest_once_rendered(tmp_path):
    cfg = load_config("paper", overrides=[f"workdir={tmp_path}", f"input_dirs=[{tmp_path}]"])
    assert corpus_counts(cfg, SiteConfig()).total == 8_500_000  # ASSUMED before ingest
    assert corpus_counts(cfg, SiteConfig(corpus_ecgs=1000)).train == pytest.approx(1000 * 0.9 * 0.7)
    (tmp_path / "images").mkdir()
    pd.DataFrame({"split": ["train"] * 6 + ["val", "test", "external"],
                  "lvef_le40": [1, 0, None, 1, 0, 0, 1, 0, 1], "hcm": [0] * 9, "stemi": [None] * 9}
                 ).to_parquet(tmp_path / "images" / "manifest.parquet")
    counts = corpus_counts(cfg, SiteConfig())
    assert counts.source.startswith("measured") and counts.labelled == {"lvef_le40": 5, "hcm": 6, "stemi": 0}
    assert counts.evaluated["lvef_le40"] == (1, 2) and counts.val_positive == {"lvef_le40": 1, "hcm": 0, "stemi": 0}


def test_validation_rounds_on_the_subsample_shorten_a_cell(tmp_path):
    """A 1 % cell at hospital scale: 20 rounds over the whole validation split cost more than its training;
    on every positive + 20k negatives the cell takes less than half as long (the final whole-split pass stays)."""
    from heartbeit.cost import cell_seconds

    cfg = load_config("paper", overrides=[f"workdir={tmp_path}", f"input_dirs=[{tmp_path}]"])
    counts = corpus_counts(cfg, SiteConfig())
    spec = ("beit_base_patch16_224", "lvef_le40", 0.01, "finetune")
    capped = cell_seconds(cfg, SiteConfig(), spec, counts)
    whole_cfg = load_config("paper", overrides=[f"workdir={tmp_path}", f"input_dirs=[{tmp_path}]",
                                                "matrix.val_negatives_cap=0"])
    whole = cell_seconds(whole_cfg, SiteConfig(), spec, counts)
    assert cfg.matrix.val_negatives_cap == 20000 and whole > 2 * capped  # 4166 s vs 1648 s on the assumed A100


def test_paper_chain_is_split_by_duration_with_the_report_after_every_part(tmp_path):
    from heartbeit.slurm_submit import AFTER, chain_jobs

    cfg = load_config("paper", overrides=[f"workdir={tmp_path}", f"input_dirs=[{tmp_path}]"])
    site = SiteConfig(gpu_type="H100", nodes=4, pretrain=StageResources(gpus_per_node=8))
    est = estimate_study(cfg, site, 32)
    jobs = chain_jobs(cfg, site, ["--profile", "paper"], tmp_path, est=est)
    parts = [j for j in jobs if j.stage == "matrix"]
    assert len(parts) > 2 and sorted(i for p in parts for i in p.task_indices) == list(range(len(est.cells)))
    limits = [parse_time(next(a for a in p.sbatch_args if a.startswith("--time="))[7:]) for p in parts]
    assert limits == sorted(limits) and limits[0] < limits[-1] <= parse_time(site.max_time)
    for part, limit in zip(parts, limits):  # every cell of a part fits its limit (or the cap, then requeues)
        assert max(est.cells[i] for i in part.task_indices) * site.time_margin < limit or limit == parse_time(site.max_time)
        assert part.after == [("afterok", "plan")]
    report = jobs[-1]
    assert report.after == [("afterok", "plan")] + [("afterany", p.name) for p in parts]
    table = estimate_table(jobs, est)
    assert all(f"#   {j.name:<10}" in table for j in jobs) and "GPU-hours" in table and "ASSUMED" in table
    assert "H100 SXM bf16 peak x ASSUMED 40% MFU" in table  # the site's GPU type, its SKU row; MFU assumed
    assert est.pretrain["grad_accum"] == 1 and est.gpu_hours > 0
    # the same chain from the matrix on: its parts wait for the outside job, the report for them
    later = chain_jobs(cfg, site, ["--profile", "paper"], tmp_path, start="matrix", est=est)
    assert all(j.after == [("afterok", AFTER)] for j in later if j.stage == "matrix")


def test_measured_throughput_and_unknown_gpus(tmp_path):
    cfg = load_config("paper")
    assert device_flops(cfg, SiteConfig(gpu_tflops=100), "mim") == (1e14, "measured: site gpu_tflops 100")
    with pytest.raises(ConfigError, match="gpu_type 'B300'"):
        device_flops(cfg, SiteConfig(gpu_type="B300"), "mim")
    site = SiteConfig(defaults=StageResources(gpus_per_node=4))  # GPU defaults reach the GPU jobs only
    assert [site.stage(s).gpus_per_node for s in ("prepare", "pretrain", "plan", "matrix", "report")] == [0, 4, 0, 4, 0]
