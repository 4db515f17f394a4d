"""Temperature scaling: probabilities that mean what they say (Guo et al., 2017).

After training, one temperature per label (single-label: one for the softmax) is fitted on val
by minimising the log loss of sigmoid(z / T); it is stored in the model folder as
calibration.json and applied by kd.Classifier, `kd predict` and `kd serve`. Dividing a logit by
a positive T keeps its order, so AUC does not move, and thresholds are carried over, so the
predicted labels do not move either; only the probabilities do. Expected calibration error (ECE)
is reported before and after, the after out of fold (temperatures fitted on one half of val, the
error measured on the other), as the tuned F1 is. A temperature that does not lower that error is
not kept (it stays 1): calibration never makes the probabilities worse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kd.errors import KDError

CALIBRATION_FILE = "calibration.json"
BINS = 15
LOG_T_RANGE = (np.log(0.05), np.log(20.0))

def sigmoid(logits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-z) is inf for z below about -88 in float32: sigmoid 0, as it should
        return 1.0 / (1.0 + np.exp(-logits))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _log_loss(logits: np.ndarray, labels: np.ndarray, single_label: bool) -> float:
    if single_label:
        log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return float(-np.mean(log_probs[np.arange(len(labels)), labels.argmax(axis=1)]))
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def _fit_one(logits: np.ndarray, labels: np.ndarray, single_label: bool) -> float:
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda log_t: _log_loss(logits / np.exp(log_t), labels, single_label),
                             bounds=LOG_T_RANGE, method="bounded")
    return float(np.exp(result.x))


def fit_temperatures(logits: np.ndarray, labels: np.ndarray, single_label: bool) -> np.ndarray:
    """One temperature per label (shape (labels,)), or one for a softmax (shape (1,)). A label
    with no positive or no negative row keeps T = 1: there is nothing to fit."""
    logits = logits.astype(np.float64)
    if single_label:
        return np.array([_fit_one(logits, labels, True)], dtype=np.float32)
    temperatures = np.ones(labels.shape[1], dtype=np.float32)
    for j in range(labels.shape[1]):
        if 0 < labels[:, j].sum() < len(labels):
            temperatures[j] = _fit_one(logits[:, j], labels[:, j], False)
    return temperatures


def calibrated_probabilities(logits: np.ndarray, temperatures: np.ndarray, single_label: bool) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperatures
    if single_label:
        scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return scaled / scaled.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-scaled))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, single_label: bool) -> float:
    """Multi-label: over every (row, label) probability against its 0/1 truth; single-label: the
    predicted class's probability against whether it is right. |mean p - mean truth| per bin
    of p, weighted by the bin's share."""
    if single_label:
        probs, labels = probs.max(axis=1), (probs.argmax(axis=1) == labels.argmax(axis=1)).astype(float)
    probs, labels = probs.ravel(), labels.ravel()
    bins = np.minimum((probs * BINS).astype(int), BINS - 1)
    error = 0.0
    for b in range(BINS):
        inside = bins == b
        if inside.any():
            error += inside.mean() * abs(probs[inside].mean() - labels[inside].mean())
    return float(error)


def calibrate(logits: np.ndarray, labels: np.ndarray, single_label: bool, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(temperatures fitted on all rows, {"ece_before", "ece_after", "kept"}). A temperature is kept
    only where it lowers the expected calibration error out of fold (fitted on one half of the rows,
    measured on the other): per label, then for all labels together; elsewhere it is 1, so that
    calibration never makes the probabilities worse. ece_after is out of fold, with what was kept;
    "kept": how many temperatures were."""
    fold = np.random.default_rng(seed).permutation(len(logits)) % 2
    out_of_fold = np.empty(logits.shape)
    for k in (0, 1):
        fitted = fit_temperatures(logits[fold != k], labels[fold != k], single_label)
        out_of_fold[fold == k] = calibrated_probabilities(logits[fold == k], fitted, single_label)
    before = calibrated_probabilities(logits, np.ones(1), single_label)
    temperatures = fit_temperatures(logits, labels, single_label)
    if single_label:
        keep = np.array([expected_calibration_error(out_of_fold, labels, True)
                         < expected_calibration_error(before, labels, True)])
    else:
        keep = np.array([expected_calibration_error(out_of_fold[:, j], labels[:, j], False)
                         < expected_calibration_error(before[:, j], labels[:, j], False)
                         for j in range(labels.shape[1])])
        out_of_fold = np.where(keep, out_of_fold, before)
    ece_before = expected_calibration_error(before, labels, single_label)
    ece_after = expected_calibration_error(out_of_fold, labels, single_label) if keep.any() else ece_before
    if ece_after >= ece_before:  # together no better: none kept
        keep, ece_after = np.zeros_like(keep), ece_before
    return np.where(keep, temperatures, 1.0).astype(np.float32), {
        "ece_before": ece_before, "ece_after": ece_after, "kept": int(keep.sum())}


def write_calibration(folder: Path, names: list[str], temperatures: np.ndarray, single_label: bool) -> None:
    """calibration.json: {"temperature": T} for a softmax, {"temperatures": {label: T}} per label."""
    content = ({"temperature": float(temperatures[0])} if single_label else
               {"temperatures": dict(zip(names, map(float, temperatures)))})
    (folder / CALIBRATION_FILE).write_text(json.dumps(content, indent=2), encoding="utf-8")


def read_calibration(folder: Path, names: list[str]) -> np.ndarray | None:
    """The folder's temperatures in label order (one for a softmax), or None without calibration."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if "temperature" in content:
            temperatures = np.array([content["temperature"]], dtype=np.float32)
        else:
            temperatures = np.array([content["temperatures"].get(name, 1.0) for name in names], dtype=np.float32)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise KDError(f"cannot read {path}: {err}") from None
    if not (np.isfinite(temperatures) & (temperatures > 0)).all():
        raise KDError(f"{path}: temperatures must be positive numbers")
    return temperatures
