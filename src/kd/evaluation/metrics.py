"""Metrics for multi-label and single-label classifiers, and per-label threshold tuning.

Everything here works on numpy arrays of logits and 0/1 labels that are already gathered from
every process (kd.evaluation.predict). The tuned F1 a run reports is out of fold: thresholds
tuned on one half of val, measured on the other.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


from kd.errors import KDError
from kd.evaluation.calibration import calibrated_probabilities, expected_calibration_error, sigmoid

THRESHOLD_FLOOR = 0.05  # a tuned threshold is never lower: near 0 a rare label fires on most texts


def tune_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per label, the threshold that maximises F1 on these rows (0.5 for labels with no positive),
    at least THRESHOLD_FLOOR.

    Predicting the k most probable rows positive gives F1 = 2·TP_k / (k + P); the threshold
    is the midpoint between the k-th and (k+1)-th probability of the best k.
    """
    thresholds = np.full(labels.shape[1], 0.5, dtype=np.float32)
    for j in range(labels.shape[1]):
        positives = labels[:, j].sum()
        if positives == 0:
            continue
        order = np.argsort(-probs[:, j], kind="stable")
        ranked = probs[order, j]
        true_pos = np.cumsum(labels[order, j])
        f1 = 2 * true_pos / (np.arange(1, len(ranked) + 1) + positives)
        f1[:-1][ranked[:-1] == ranked[1:]] = -1.0  # cut only between distinct probabilities
        best = int(np.argmax(f1))
        below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
        thresholds[j] = max((ranked[best] + below) / 2, THRESHOLD_FLOOR)
    return thresholds


def out_of_fold_thresholds(probs: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 0) -> np.ndarray:
    """(rows, labels) thresholds: each row's tuned on the other folds of these rows alone, so the
    F1 they give is measured on rows their tuning never saw (cross-fitting)."""
    fold = np.random.default_rng(seed).permutation(len(probs)) % folds
    out = np.empty(probs.shape, dtype=np.float32)
    for k in range(folds):
        out[fold == k] = tune_thresholds(probs[fold != k], labels[fold != k])
    return out


def tuned_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str],
                  single_label: bool = False) -> tuple[dict, np.ndarray | None]:
    """(metrics, thresholds) where the thresholds are tuned on all these rows (the ones to deploy)
    and the tuned F1 is reported with out-of-fold thresholds: tuning on the rows it reports on
    would overstate it. A single-label model has no thresholds (None): it predicts its argmax."""
    if single_label:
        return single_label_metrics(logits, labels, label_names), None
    probs = sigmoid(logits.astype(np.float64))
    thresholds = tune_thresholds(probs, labels)
    return compute_metrics(logits, labels, thresholds, label_names, out_of_fold_thresholds(probs, labels)), thresholds


def _auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    if labels.min() == labels.max():
        return None  # undefined with one class; reported as null, never NaN
    return float(roc_auc_score(labels, probs))


def _check_finite(logits: np.ndarray) -> None:
    if not np.isfinite(logits).all():
        raise KDError(f"{int((~np.isfinite(logits)).any(axis=1).sum())} of {len(logits)} rows got outputs that are "
                      "not finite (NaN or infinity): the model's weights have diverged; train it with a lower lr")


def single_label_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """Cross-entropy, accuracy, one-vs-rest ROC AUC per class and macro, F1 of the argmax class."""
    _check_finite(logits)
    logits = logits.astype(np.float64)
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    probs, truth = np.exp(log_probs), labels.argmax(axis=1)
    predicted, classes = probs.argmax(axis=1), list(range(len(label_names)))
    aucs = [_auc((truth == j).astype(int), probs[:, j]) for j in classes]
    defined = [a for a in aucs if a is not None]
    f1 = f1_score(truth, predicted, labels=classes, average=None, zero_division=0)
    return {
        "n": int(len(labels)),
        "cross_entropy": float(-np.mean(log_probs[np.arange(len(truth)), truth])),
        "accuracy": float(np.mean(predicted == truth)),
        "macro_auc": float(np.mean(defined)) if defined else None,
        "macro_f1": float(np.mean(f1)),
        "micro_f1": float(np.mean(predicted == truth)),
        "ece": expected_calibration_error(probs, labels, True),
        "per_label": {name: {"auc": aucs[j], "support": int((truth == j).sum()), "f1": float(f1[j])}
                      for j, name in enumerate(label_names)},
    }


def score(logits: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None, label_names: list[str],
          temperatures: np.ndarray | None = None) -> dict:
    """A saved model's metrics: at its thresholds, or single-label (thresholds None) at its argmax;
    with its calibration's temperatures, the calibrated probabilities' ECE too."""
    single = thresholds is None
    metrics = (single_label_metrics(logits, labels, label_names) if single
               else compute_metrics(logits, labels, thresholds, label_names))
    if temperatures is not None:
        metrics["ece_calibrated"] = expected_calibration_error(
            calibrated_probabilities(logits, temperatures, single), labels, single)
    return metrics


def val_loss(metrics: dict) -> float:
    """The loss that selects the best epoch: BCE (multi-label) or cross-entropy (single-label)."""
    return metrics["bce"] if "bce" in metrics else metrics["cross_entropy"]


def compute_metrics(logits: np.ndarray, labels: np.ndarray, thresholds: np.ndarray,
                    label_names: list[str], tuned: np.ndarray | None = None) -> dict:
    """BCE, ROC AUC per label and macro, F1 at 0.5 and at the tuned thresholds, exact match.
    `thresholds` (one per label) are reported; `tuned` (one per row and label, e.g. out of fold)
    decide the tuned metrics when given, else `thresholds` do."""
    _check_finite(logits)
    logits = logits.astype(np.float64)
    probs = sigmoid(logits)
    at_half = (probs >= 0.5).astype(int)
    tuned = (probs >= (thresholds if tuned is None else tuned)).astype(int)
    truth = labels.astype(int)
    aucs = [_auc(truth[:, j], probs[:, j]) for j in range(truth.shape[1])]
    defined = [a for a in aucs if a is not None]
    per_label = {
        name: {"auc": aucs[j], "threshold": float(thresholds[j]), "support": int(truth[:, j].sum()),
               "f1": float(f1_score(truth[:, j], at_half[:, j], zero_division=0)),
               "f1_tuned": float(f1_score(truth[:, j], tuned[:, j], zero_division=0))}
        for j, name in enumerate(label_names)
    }
    return {
        "n": int(len(labels)),
        "bce": float(np.mean(np.logaddexp(0.0, logits) - labels * logits)),
        "macro_auc": float(np.mean(defined)) if defined else None,
        "micro_f1": float(f1_score(truth, at_half, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, at_half, average="macro", zero_division=0)),
        "micro_f1_tuned": float(f1_score(truth, tuned, average="micro", zero_division=0)),
        "macro_f1_tuned": float(f1_score(truth, tuned, average="macro", zero_division=0)),
        "exact_match": float(np.mean((at_half == truth).all(axis=1))),
        "exact_match_tuned": float(np.mean((tuned == truth).all(axis=1))),
        "ece": expected_calibration_error(probs, truth, False),
        "per_label": per_label,
    }


def summary_line(metrics: dict) -> str:
    auc = metrics["macro_auc"]
    if "accuracy" in metrics:
        return (f"cross-entropy {metrics['cross_entropy']:.4f} | macro AUC "
                f"{'n/a' if auc is None else f'{auc:.4f}'} | accuracy {metrics['accuracy']:.4f} | "
                f"macro F1 {metrics['macro_f1']:.4f}")
    return (f"bce {metrics['bce']:.4f} | macro AUC {auc:.4f} | " if auc is not None else
            f"bce {metrics['bce']:.4f} | macro AUC n/a | ") + (
        f"macro F1 {metrics['macro_f1']:.4f} (tuned, out of fold {metrics['macro_f1_tuned']:.4f}) | "
        f"micro F1 {metrics['micro_f1']:.4f} | exact {metrics['exact_match']:.4f}")
