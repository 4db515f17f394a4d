import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from kd.evaluation.calibration import sigmoid
from kd.evaluation.decisions import (
    THRESHOLD_FLOOR,
    macro_f1_of,
    tune_offsets,
    tune_thresholds,
)
from kd.evaluation.metrics import compute_metrics, single_label_metrics, tuned_metrics


def _scores(seed=0, n=300, labels=4):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, labels)) < 0.2).astype(np.float32)
    logits = truth * 1.5 + rng.normal(size=(n, labels)) - 1.0
    return logits, truth


def test_tuned_thresholds_reach_the_best_f1_of_any_cut():
    logits, truth = _scores()
    probs = sigmoid(logits)
    thresholds = tune_thresholds(probs, truth)
    for j in range(truth.shape[1]):
        tuned = f1_score(truth[:, j], probs[:, j] >= thresholds[j])
        brute = max(f1_score(truth[:, j], probs[:, j] >= t) for t in np.unique(probs[:, j]))
        assert tuned >= brute - 1e-12


def test_label_without_positives_gets_null_auc_and_default_threshold():
    logits, truth = _scores(1)
    truth[:, 2] = 0
    thresholds = tune_thresholds(sigmoid(logits), truth)
    metrics = compute_metrics(logits, truth, thresholds, ["a", "b", "c", "d"])
    assert thresholds[2] == 0.5
    assert metrics["per_label"]["c"]["auc"] is None
    defined = [metrics["per_label"][k]["auc"] for k in "abd"]
    assert np.isclose(metrics["macro_auc"], np.mean(defined))
    json.loads(json.dumps(metrics, allow_nan=False))  # no NaN anywhere


def test_metric_values():
    logits = np.array([[3.0, -3.0], [-3.0, 3.0], [3.0, 3.0], [-3.0, -3.0]])
    truth = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=np.float32)
    metrics = compute_metrics(logits, truth, np.array([0.5, 0.5]), ["x", "y"])
    assert metrics["n"] == 4
    assert metrics["macro_auc"] == (1.0 + 5 / 6) / 2
    assert metrics["exact_match"] == 0.75
    assert np.isclose(metrics["micro_f1"], 2 * 3 / (2 * 3 + 1))
    assert np.isclose(metrics["bce"], np.mean(np.logaddexp(0, logits) - truth * logits))
    for key in ("macro_f1", "macro_f1_at_thresholds", "micro_f1_at_thresholds", "exact_match_at_thresholds",
                "per_label"):
        assert key in metrics  # a model's own thresholds: named apart from the out-of-fold tuned F1
    assert "macro_f1_tuned" not in metrics


def test_tuned_f1_is_reported_out_of_fold_and_thresholds_have_a_floor():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 3))              # no signal at all
    truth = (rng.random((400, 3)) < 0.05).astype(np.float32)
    metrics, thresholds = tuned_metrics(logits, truth, ["a", "b", "c"])
    in_sample = compute_metrics(logits, truth, thresholds, ["a", "b", "c"])["macro_f1_at_thresholds"]
    assert metrics["macro_f1_tuned"] < in_sample    # tuning on the reported rows overstates F1
    assert (thresholds >= THRESHOLD_FLOOR).all()
    assert metrics["per_label"]["a"]["threshold"] == pytest.approx(float(thresholds[0]))
    assert metrics["macro_f1"] == compute_metrics(logits, truth, thresholds, ["a", "b", "c"])["macro_f1"]


def test_a_rare_label_never_gets_a_threshold_near_zero():
    probs = np.array([[0.001], [0.002], [0.9], [0.003]])
    truth = np.array([[1], [1], [0], [1]], dtype=np.float32)  # the best F1 takes every row
    assert tune_thresholds(probs, truth)[0] == pytest.approx(0.05)


def _imbalanced_classes(seed=0, n=2000):
    """Three classes, the last 6% of the rows and weakly told apart: its logit rarely wins."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n, p=[0.64, 0.30, 0.06])
    logits = rng.normal(size=(n, 3)) + np.eye(3)[truth] * np.array([1.5, 1.5, 1.5]) + np.array([0.5, 0.0, -2.0])
    return logits, np.eye(3, dtype=np.float32)[truth]


def test_class_offsets_make_a_rare_class_predicted_and_raise_macro_f1():
    logits, labels = _imbalanced_classes()
    truth, plain = labels.argmax(axis=1), logits.argmax(axis=1)
    offsets = tune_offsets(logits, labels)
    tuned = (logits + offsets).argmax(axis=1)
    assert (plain == 2).sum() < 0.3 * (truth == 2).sum()  # the argmax seldom says the rare class
    assert macro_f1_of(tuned, truth, 3) > macro_f1_of(plain, truth, 3) + 0.05
    assert macro_f1_of(tuned, truth, 3) == pytest.approx(f1_score(truth, tuned, average="macro"))
    assert (tune_offsets(np.eye(3)[truth] * 5, labels) == 0).all()  # nothing to gain: no offset moves


def test_single_label_metrics_report_the_offsets_out_of_fold():
    logits, labels = _imbalanced_classes(1)
    metrics, offsets = tuned_metrics(logits, labels, ["a", "b", "rare"], single_label=True)
    in_sample = single_label_metrics(logits, labels, ["a", "b", "rare"], offsets=offsets)
    assert metrics["macro_f1"] < metrics["macro_f1_tuned"] <= in_sample["macro_f1_at_offsets"]
    assert metrics["per_label"]["rare"]["f1_tuned"] > metrics["per_label"]["rare"]["f1"]
    assert abs(metrics["accuracy_tuned"] - metrics["accuracy"]) < 0.05  # macro F1 up, accuracy about as it was
