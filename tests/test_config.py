from pathlib import Path

import pytest
import yaml

from kd.config.settings import Config, load_config, save_config
from kd.config.sources import parse_override
from kd.errors import KDError

ROOT = Path(__file__).resolve().parents[1]


def test_base_yaml_equals_the_defaults():
    assert yaml.safe_load((ROOT / "configs/base.yaml").read_text()) == Config().to_dict()


@pytest.mark.parametrize("name", ["base", "jigsaw", "goemotions", "hateval", "sample", "minilm",
                                  "pretrain-tiny", "tiny-pretrained", "bert-tiny-kd-pretrain"])
def test_shipped_configs_load(name):
    load_config([ROOT / f"configs/{name}.yaml"])


def test_precedence_defaults_then_files_in_order_then_overrides(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("distill: {alpha: 0.1, temperature: 3}\nstudent: {train: {epochs: 7}}\n")
    second = tmp_path / "b.yaml"
    second.write_text("distill: {alpha: 0.2}\n")
    cfg = load_config([first, second], ["distill.temperature=5", "student.train.lr=1e-3"])
    assert cfg.distill.alpha == 0.2           # second file beats first
    assert cfg.distill.temperature == 5.0     # override beats files, int coerced to float
    assert cfg.student.train.epochs == 7      # first file beats defaults
    assert cfg.student.train.lr == 1e-3       # YAML 1.1 reads 1e-3 as a string: still a float
    assert cfg.teacher.train.epochs == 3      # untouched default
    assert load_config([], ["mixed_precision=no"]).mixed_precision == "no"  # YAML 1.1: a bare no is false


@pytest.mark.parametrize("override, message", [
    ("distill.alpah=0.3", "unknown config key 'distill.alpah'"),
    ("nonsense=1", "unknown config key 'nonsense'"),
    ("student.train.epochs=three", "student.train.epochs"),
    ("student.init=magic", "expected one of"),
    ("distill.alpha=1.5", "distill.alpha must be in [0, 1]"),
    ("data.label_columns=toxic", "expected a list"),
    ("teacher.train.prior_bias_init=3", "expected true or false"),
    ("no_equals_sign", "key=value"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(KDError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config([], [override])


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher: {train: {epoch: 3}}\n")
    with pytest.raises(KDError, match="unknown config key 'teacher.train.epoch'"):
        load_config([path])


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(KDError, match="config file not found"):
        load_config([tmp_path / "absent.yaml"])


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config([ROOT / "configs/minilm.yaml"], ["distill.alpha=0.9", "data.max_train_samples=10"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config([tmp_path / "config.yaml"]) == cfg


def test_parse_override_nests_and_parses_yaml():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    assert parse_override("run_name=") == {"run_name": None}
