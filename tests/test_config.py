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
