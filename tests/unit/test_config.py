import subprocess
import sys

import pytest

from heartbeit.config import PROFILES, ConfigError, RunConfig, dump_yaml, load_config, profile_path
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


def test_image_size_is_one_key(tmp_path):
    """render.image_size is the image size; pretraining and the matrix take it. A profile states it once;
    a source may restate it in pretrain/matrix only with the same value (a resolved config read back), and
    the old key img_size is an error naming the key. (Cell ids still hash it as img_size: test_cell_ids.py.)"""
    import yaml

    cfg = load_config("ci", overrides=["render.image_size=48"])
    assert cfg.render.image_size == cfg.pretrain.image_size == cfg.matrix.image_size == 48
    for name in PROFILES:  # stated once, in render
        data = yaml.safe_load(profile_path(name).read_text())
        assert "image_size" not in (data.get("pretrain") or {}) and "image_size" not in (data.get("matrix") or {})
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(dump_yaml(cfg))
    assert load_config(None, config_file=resolved).matrix.image_size == 48
    with pytest.raises(ConfigError, match=r"matrix.image_size \(32\) differs from render.image_size \(64\)"):
        load_config("ci", overrides=["matrix.image_size=32"])
    for section in ("matrix", "pretrain"):
        with pytest.raises(ConfigError, match=f"{section}.img_size: not a config key"):
            load_config("ci", overrides=[f"{section}.img_size=64"])
    assert not hasattr(cfg.matrix, "img_size") and not hasattr(cfg.pretrain, "img_size")
