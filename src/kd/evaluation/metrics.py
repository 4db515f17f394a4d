"""Metrics for multi-label and single-label classifiers.

Everything here works on numpy arrays of logits and 0/1 labels that are already gathered from
every process (kd.evaluation.predict). The tuned F1 a run reports (`*_tuned`) is out of fold:
the decision rule (kd.evaluation.decisions) tuned on one half of val, measured on the other. A
saved model scored on a labelled file (kd evaluate) reports F1 at its own decision rule instead
(`*_at_thresholds`, `*_at_offsets`).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from kd.errors import KDError
from kd.evaluation.calibration import (
    calibrated_probabilities,
    expected_calibration_error,
    sigmoid,
)
from kd.evaluation.decisions import (
    out_of_fold_classes,
    out_of_fold_thresholds,
    tune_offsets,
    tune_thresholds,
)


def tuned_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str],
                  single_label: bool = False) -> tuple[dict, np.ndarray]:
    """(metrics, decision rule) where the rule is tuned on all these rows (the one to deploy:
    thresholds, or a single-label model's class offsets) and the tuned F1 is reported with the
    rule tuned out of fold: tuning on the rows it reports on would overstate it."""
    if single_label:
        offsets = tune_offsets(logits, labels)
        return single_label_metrics(logits, labels, label_names, tuned=out_of_fold_classes(logits, labels)), offsets
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


def single_label_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str],
                         tuned: np.ndarray | None = None, offsets: np.ndarray | None = None) -> dict:
    """Cross-entropy, accuracy, one-vs-rest ROC AUC per class and macro, F1 of the argmax class;
    with `tuned` (each row's class under offsets tuned out of fold) `accuracy_tuned` and
    `macro_f1_tuned`, with a saved model's `offsets` `accuracy_at_offsets` and `macro_f1_at_offsets`."""
    _check_finite(logits)
    logits = logits.astype(np.float64)
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    probs, truth = np.exp(log_probs), labels.argmax(axis=1)
    predicted, classes = probs.argmax(axis=1), list(range(len(label_names)))
    aucs = [_auc((truth == j).astype(int), probs[:, j]) for j in classes]
    defined = [a for a in aucs if a is not None]
    f1 = f1_score(truth, predicted, labels=classes, average=None, zero_division=0)
    metrics = {
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
    decided = {"tuned": tuned, "at_offsets": None if offsets is None else (logits + offsets).argmax(axis=1)}
    for suffix, chosen in decided.items():
        if chosen is not None:
            chosen_f1 = f1_score(truth, chosen, labels=classes, average=None, zero_division=0)
            metrics.update({f"accuracy_{suffix}": float(np.mean(chosen == truth)),
                            f"macro_f1_{suffix}": float(np.mean(chosen_f1))})
            for j, name in enumerate(label_names):
                metrics["per_label"][name][f"f1_{suffix}"] = float(chosen_f1[j])
    return metrics


def score(logits: np.ndarray, labels: np.ndarray, decision: np.ndarray, label_names: list[str],
          single_label: bool, temperatures: np.ndarray | None = None) -> dict:
    """A saved model's metrics at its own decision rule (thresholds, or a single-label model's
    class offsets); with its calibration's temperatures, the calibrated probabilities' ECE too."""
    metrics = (single_label_metrics(logits, labels, label_names, offsets=decision) if single_label
               else compute_metrics(logits, labels, decision, label_names))
    if temperatures is not None:
        metrics["ece_calibrated"] = expected_calibration_error(
            calibrated_probabilities(logits, temperatures, single_label), labels, single_label)
    return metrics


def val_loss(metrics: dict) -> float:
    """The loss that selects the best epoch: BCE (multi-label) or cross-entropy (single-label)."""
    return metrics["bce"] if "bce" in metrics else metrics["cross_entropy"]


def compute_metrics(logits: np.ndarray, labels: np.ndarray, thresholds: np.ndarray,
                    label_names: list[str], tuned: np.ndarray | None = None) -> dict:
    """BCE, ROC AUC per label and macro, F1 at 0.5, exact match; with `tuned` (one threshold per row
    and label, out of fold) F1 and exact match at those (`*_tuned`), else at `thresholds`, the
    model's own (`*_at_thresholds`). `thresholds` are reported per label either way."""
    _check_finite(logits)
    logits = logits.astype(np.float64)
    probs = sigmoid(logits)
    at_half = (probs >= 0.5).astype(int)
    suffix = "tuned" if tuned is not None else "at_thresholds"
    decided = (probs >= (thresholds if tuned is None else tuned)).astype(int)
    truth = labels.astype(int)
    aucs = [_auc(truth[:, j], probs[:, j]) for j in range(truth.shape[1])]
    defined = [a for a in aucs if a is not None]
    per_label = {
        name: {"auc": aucs[j], "threshold": float(thresholds[j]), "support": int(truth[:, j].sum()),
               "f1": float(f1_score(truth[:, j], at_half[:, j], zero_division=0)),
               f"f1_{suffix}": float(f1_score(truth[:, j], decided[:, j], zero_division=0))}
        for j, name in enumerate(label_names)
    }
    return {
        "n": int(len(labels)),
        "bce": float(np.mean(np.logaddexp(0.0, logits) - labels * logits)),
        "macro_auc": float(np.mean(defined)) if defined else None,
        "micro_f1": float(f1_score(truth, at_half, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, at_half, average="macro", zero_division=0)),
        f"micro_f1_{suffix}": float(f1_score(truth, decided, average="micro", zero_division=0)),
        f"macro_f1_{suffix}": float(f1_score(truth, decided, average="macro", zero_division=0)),
        "exact_match": float(np.mean((at_half == truth).all(axis=1))),
        f"exact_match_{suffix}": float(np.mean((decided == truth).all(axis=1))),
        "ece": expected_calibration_error(probs, truth, False),
        "per_label": per_label,
    }


def summary_line(metrics: dict) -> str:
    auc = metrics["macro_auc"]
    auc_text = "n/a" if auc is None else f"{auc:.4f}"
    if "accuracy" in metrics:
        tuned = metrics.get("macro_f1_tuned")
        return (f"cross-entropy {metrics['cross_entropy']:.4f} | macro AUC {auc_text} | accuracy "
                f"{metrics['accuracy']:.4f} | macro F1 {metrics['macro_f1']:.4f}"
                + ("" if tuned is None else f" (tuned, out of fold {tuned:.4f})"))
    return (f"bce {metrics['bce']:.4f} | macro AUC {auc_text} | macro F1 {metrics['macro_f1']:.4f} "
            f"(tuned, out of fold {metrics['macro_f1_tuned']:.4f}) | micro F1 {metrics['micro_f1']:.4f} | "
            f"exact {metrics['exact_match']:.4f}")
