"""Settings out of range: one-line errors before anything runs; a diverging loss stops the run."""

import numpy as np
import pytest
import tiny

from kd.cli import main
from kd.config.settings import load_config
from kd.errors import KDError


@pytest.mark.parametrize("override, message", [
    ("student.train.max_grad_norm=-1", r"student.train.max_grad_norm must be in \[0, inf\), got -1"),
    ("teacher.train.weight_decay=-0.01", r"teacher.train.weight_decay must be in \[0, inf\)"),
    ("distill.temperature=.inf", r"distill.temperature must be in \(0, inf\), got inf"),
    ("distill.temperature=1e999", r"distill.temperature must be in \(0, inf\), got inf"),
    ("distill.final_temperature=.nan", r"distill.final_temperature must be in \(0, inf\), got nan"),
    ("student.train.lr=-1e-3", r"student.train.lr must be in \(0, inf\)"),
    ("student.train.lr=0", r"student.train.lr must be in \(0, inf\)"),
    ("seed=-1", r"seed must be in \[0, 4294967295\], got -1"),
    ("seed=4294967296", r"seed must be in \[0, 4294967295\]"),
    ("data.split_seed=-5", r"data.split_seed must be in \[0, 4294967295\]"),
    ("data.max_train_samples=0", r"data.max_train_samples must be in \[1, inf\), got 0"),
    ("data.max_val_samples=-3", r"data.max_val_samples must be in \[1, inf\)"),
    ("student.train.batch_size=0", r"student.train.batch_size must be in \[1, inf\), got 0"),
    ("teacher.train.eval_batch_size=-1", r"teacher.train.eval_batch_size must be in \[1, inf\)"),
    ("pretrain.train.epochs=0", r"pretrain.train.epochs must be in \[1, inf\)"),
    ("data.max_length=0", r"data.max_length must be in \[8, inf\), got 0"),
    ("data.max_length=1", r"data.max_length must be in \[8, inf\), got 1"),
    ("data.val_fraction=1", r"data.val_fraction must be in \(0, 1\)"),
    ("distill.alpha=-0.1", r"distill.alpha must be in \[0, 1\]"),
    ("distill.augment_mask_prob=1.5", r"distill.augment_mask_prob must be in \[0, 1\]"),
    ("distill.teacher_weights=[1, -1]", r"distill.teacher_weights must be in \[0, inf\), got \[1.0, -1.0\]"),
    ("distill.hidden_weight=.nan", r"distill.hidden_weight must be in \[0, inf\), got nan"),
    ("student.train.warmup_ratio=1", r"student.train.warmup_ratio must be in \[0, 1\)"),
    ("student.train.save_every_steps=-1", r"student.train.save_every_steps must be in \[0, inf\)"),
    ("student.num_layers=0", r"student.num_layers must be in \[1, inf\)"),
])
def test_every_numeric_setting_has_a_range(override, message):
    with pytest.raises(KDError, match=message):
        load_config([], [override])


@pytest.mark.parametrize("override", ["distill.alpha=0.5", "seed=0", "seed=4294967295",
                                      "student.train.max_grad_norm=0", "data.max_train_samples=null"])
def test_values_at_the_edges_of_their_range_are_taken(override):
    load_config([], [override])


def test_max_length_beyond_the_position_embeddings_fails_before_training(models, csv_data, tmp_path, capsys):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{"data.max_length": 65})  # tiny models: 64
    assert main(["distill", *overrides]) == 2
    assert "data.max_length=65 is beyond the 64 position embeddings of the teacher" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_diverging_loss_stops_with_the_step(models, csv_data, tmp_path, capsys):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.train.lr": "1e30", "teacher.train.max_grad_norm": 0, "teacher.train.save_every_steps": 5})
    assert main(["distill", *overrides]) == 2
    err = capsys.readouterr().err
    assert "kd: error: the loss diverged at step " in err and "lower teacher.train.lr (it is 1e+30)" in err
    assert not (tmp_path / "runs/run/teacher").exists()  # no epoch of NaN weights was saved


@pytest.mark.parametrize("content, where", [
    ("a: 1\n  b: [2\nc: 3\n", "line 2, column 4: mapping values are not allowed here"),
    ("teacher:\n\ttrain: 1\n", "line 2, column 1: found character '\\\\t' that cannot start any token"),
    ('run_name: "unclosed\n', "line 2, column 1: found unexpected end of stream"),
    ("seed: [1, 2\n", "expected ',' or ']'"),
])
def test_malformed_yaml_is_one_line_with_its_place(tmp_path, capsys, content, where):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["distill", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"config file {path} is not valid YAML: " in err
    assert where.replace("\\\\", "\\") in err


def test_a_malformed_override_is_one_line(capsys):
    assert main(["distill", "distill.alpha=[0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "override 'distill.alpha=[0.5': the value is not valid YAML (line 1" in err


@pytest.mark.parametrize("content, key", [
    ("seed: 1\nseed: 2\n", "seed"),
    ("distill:\n  alpha: 0.2\n  temperature: 2\n  alpha: 0.9\n", "alpha"),
    ("teacher: {name: a, name: b}\n", "name"),
])
def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, content, key):
    path = tmp_path / "twice.yaml"
    path.write_text(content)
    with pytest.raises(KDError, match=f"not valid YAML: line \\d+, column \\d+: the key '{key}' is given twice"):
        load_config([path])


def test_outputs_that_are_not_finite_are_an_error_not_a_nan_from_scikit_learn():
    from kd.evaluation.metrics import compute_metrics

    logits = np.array([[0.5, np.nan], [1.0, -2.0], [np.inf, 0.0]])
    with pytest.raises(KDError, match="2 of 3 rows got outputs that are not finite"):
        compute_metrics(logits, np.array([[1, 0], [0, 1], [1, 1]]), np.full(2, 0.5), ["a", "b"])
