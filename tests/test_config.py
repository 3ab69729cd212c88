import subprocess
import sys

import pytest

from heartbeit.config import PROFILES, ConfigError, RunConfig, dump_yaml, load_config
from heartbeit.config.core import from_dict


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_load(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    # round trip: the resolved YAML loads back to the same config
    import yaml

    again = from_dict(RunConfig, yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="pretrain.stepz"):
        load_config("ci", overrides=["pretrain.stepz=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="pretrain.steps"):
        load_config("ci", overrides=["pretrain.steps=many"])
    with pytest.raises(ConfigError, match="render.grid"):
        load_config("ci", overrides=["render.grid=3"])


def test_validation_names_field():
    with pytest.raises(ConfigError, match="precision"):
        load_config("ci", overrides=["pretrain.precision=fp8"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config("ci", config_file=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("nosuchprofile")


def test_override_applies():
    cfg = load_config("ci", overrides=["pretrain.steps=7", "matrix.seeds=[1,2]"])
    assert cfg.pretrain.steps == 7 and cfg.matrix.seeds == [1, 2]


def test_cli_config_error_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth:\n  n_patientz: 3\n")
    proc = subprocess.run([sys.executable, "-m", "heartbeit", "synth", "--config", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "n_patientz" in proc.stderr


def test_cli_help_for_every_stage():
    from heartbeit.cli import COMMANDS

    for name in COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "heartbeit", name, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr)
        assert "usage" in proc.stdout


def test_old_image_size_key_is_read_with_a_deprecation_message(tmp_path, caplog):
    """matrix.img_size / pretrain.img_size are the old names of image_size (as in render): still accepted,
    with a message naming the new key; setting both names is an error naming them."""
    with caplog.at_level("WARNING", logger="heartbeit.config"):
        cfg = load_config("ci", overrides=["matrix.img_size=48"])
    assert cfg.matrix.image_size == 48
    assert "matrix.img_size is deprecated: use matrix.image_size" in caplog.text
    old = tmp_path / "old.yaml"
    old.write_text("pretrain:\n  img_size: 48\n")
    assert load_config("ci", config_file=old).pretrain.image_size == 48
    both = tmp_path / "both.yaml"
    both.write_text("pretrain:\n  img_size: 48\n  image_size: 48\n")
    with pytest.raises(ConfigError, match="pretrain.img_size and pretrain.image_size are both set"):
        load_config("ci", config_file=both)
    # a later source's old name overrides an earlier source's new name, as any override does
    assert load_config("ci", config_file=old, overrides=["pretrain.img_size=32"]).pretrain.image_size == 32
    with pytest.warns(DeprecationWarning):
        assert cfg.matrix.img_size == 48  # the old attribute reads the new field


def test_renamed_key_keeps_cell_ids():
    """Cell ids hash the fine-tuning settings; a renamed key enters under its old name, so ids do not change."""
    from heartbeit.matrix import _finetune_fingerprint

    fp = _finetune_fingerprint(load_config("ci").matrix)
    assert fp["img_size"] == 64 and "image_size" not in fp
