"""Temperature scaling: fitted on val, stored with the model, applied at inference without
moving a single prediction; ECE before and after in final_metrics.json and kd evaluate."""

import json

import numpy as np
import pytest
import tiny

from kd.cli import main
from kd.deployment.classifier import Classifier
from kd.errors import KDError
from kd.evaluation.calibration import (
    calibrate,
    calibrated_probabilities,
    expected_calibration_error,
    fit_temperatures,
    read_calibration,
    sigmoid,
    write_calibration,
)


def overconfident(rows: int, single_label: bool, seed: int = 0):
    """Logits 3x too large for the labels they were drawn with (true temperature 3)."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.5, size=(rows, 3))
    if single_label:
        p = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
        labels = np.eye(3, dtype=np.float32)[[rng.choice(3, p=row) for row in p]]
    else:
        labels = (rng.random((rows, 3)) < sigmoid(true)).astype(np.float32)
    return 3 * true, labels


@pytest.mark.parametrize("single_label", [False, True])
def test_temperatures_are_recovered_and_lower_the_calibration_error(single_label):
    logits, labels = overconfident(6000, single_label)
    temperatures = fit_temperatures(logits, labels, single_label)
    assert temperatures.shape == ((1,) if single_label else (3,))
    assert temperatures == pytest.approx(3.0, abs=0.35)
    fitted, errors = calibrate(logits, labels, single_label)
    assert errors["ece_after"] < errors["ece_before"] / 2  # out of fold: measured on rows not fitted on
    before = expected_calibration_error(calibrated_probabilities(logits, np.ones(1), single_label), labels, single_label)
    assert errors["ece_before"] == pytest.approx(before)


@pytest.mark.parametrize("single_label", [False, True])
def test_temperatures_that_would_not_lower_the_error_are_not_kept(single_label):
    """Logits calibrated already: a fitted temperature only adds noise. It stays 1, and the error
    after is the error before: calibration never makes the probabilities worse."""
    logits, labels = overconfident(3000, single_label)
    logits = logits / 3  # the true temperature: 1
    temperatures, errors = calibrate(logits, labels, single_label)
    kept = temperatures != 1.0
    assert errors["kept"] == int(kept.sum()) and errors["ece_after"] <= errors["ece_before"]
    if not kept.any():
        assert errors["ece_after"] == errors["ece_before"]
    mixed = logits.copy() if not single_label else None
    if not single_label:  # one label overconfident, two calibrated: only the first is scaled
        mixed[:, 0] *= 4
        temperatures, errors = calibrate(mixed, labels, False)
        assert temperatures[0] > 2 and errors["ece_after"] < errors["ece_before"]


def test_a_label_with_one_class_keeps_temperature_1():
    logits, labels = overconfident(200, False)
    labels[:, 1] = 0
    assert fit_temperatures(logits, labels, False)[1] == 1.0


def test_the_classifier_applies_the_temperatures_and_keeps_its_decisions(models, tmp_path):
    folder = tiny.make_classifier(tmp_path / "clf", models["bert"], steps=40)
    texts = [f"{a} {b} day" for a in tiny.FILLER[:8] for b in ("happy", "rage", "scared", "great")]
    plain = Classifier.from_pretrained(folder)
    write_calibration(folder, plain.labels, np.array([0.5, 2.0, 1.5], np.float32), False)
    calibrated = Classifier.from_pretrained(folder)
    logits = plain.logits(texts)
    assert np.allclose(calibrated.predict_proba(texts), sigmoid(logits / [0.5, 2.0, 1.5]), atol=1e-6)
    assert calibrated.predict(texts) == plain.predict(texts)  # the same labels, other probabilities
    assert read_calibration(folder, ["fear", "anger", "joy"]).tolist() == [1.5, 0.5, 2.0]  # by name


@pytest.mark.parametrize("content", ["not json", '{"temperatures": {"anger": -1}}', '{"temperatures": 3}'])
def test_a_damaged_calibration_file_is_a_clear_error(tmp_path, content):
    (tmp_path / "calibration.json").write_text(content)
    with pytest.raises(KDError, match="calibration.json"):
        read_calibration(tmp_path, ["anger"])


def test_a_run_calibrates_both_models_and_evaluate_reports_both_errors(models, csv_data, tmp_path, capsys):
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 0
    run_dir = tmp_path / "runs/run"
    final = json.loads((run_dir / "final_metrics.json").read_text())
    for role in ("teacher", "student"):
        calibration = final[role]["calibration"]
        assert set(calibration) == {"ece_before", "ece_after", "kept", "temperatures"}
        assert len(calibration["temperatures"]) == 3 and calibration["ece_after"] <= calibration["ece_before"]
        saved = read_calibration(run_dir / role, tiny.LABELS)
        assert saved.tolist() == pytest.approx(calibration["temperatures"], abs=1e-4)
    assert main(["evaluate", "--model", str(run_dir / "student"), "--data", str(csv_data["val"]),
                 "--format", "csv", "--text-column", "text"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["ece"] == pytest.approx(final["student"]["calibration"]["ece_before"], abs=1e-4)
    assert 0 <= metrics["ece_calibrated"] <= 1
