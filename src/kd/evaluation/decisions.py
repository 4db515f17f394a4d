"""Decision rules tuned on val for the F1 a run reports: per-label thresholds on a multi-label
model's probabilities, per-class offsets added to a single-label model's logits before the argmax
(so that a rare class is predicted at all: the argmax alone rarely picks a class that is 6% of the
rows). Both are tuned on all of val for the model folder, and out of fold for the F1 a run reports
(each half of val decided by what was tuned on the other half)."""

from __future__ import annotations

import numpy as np

THRESHOLD_FLOOR = 0.05  # a tuned threshold is never lower: near 0 a rare label fires on most texts
OFFSET_ROUNDS = 4  # passes over the classes; each pass moves each class's offset to its best value
OFFSET_CANDIDATES = 32  # values tried per class and pass: quantiles of where that class would start to win


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


def macro_f1_of(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Macro F1 of class predictions against true classes (0 for a class neither has)."""
    counts = np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    true_pos, support, chosen = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    return float(np.mean(np.divide(2 * true_pos, support + chosen, out=np.zeros(classes), where=support + chosen > 0)))


def tune_offsets(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class, an offset added to its logit before the argmax, tuned for macro F1 on these rows
    by coordinate ascent (all zero: the plain argmax). A class's offset moves only when macro F1
    rises, to the candidate nearest zero among its best."""
    logits, truth, classes = logits.astype(np.float64), labels.argmax(axis=1), logits.shape[1]
    offsets = np.zeros(classes)
    best = macro_f1_of((logits + offsets).argmax(axis=1), truth, classes)
    for _ in range(OFFSET_ROUNDS):
        moved = False
        for c in range(classes):
            others = np.delete(logits + offsets, c, axis=1).max(axis=1) - logits[:, c]  # c wins above these
            candidates = np.unique(np.quantile(others, np.linspace(0, 1, OFFSET_CANDIDATES)) + 1e-9)
            for value in candidates[np.argsort(np.abs(candidates))]:
                trial = offsets.copy()
                trial[c] = value
                f1 = macro_f1_of((logits + trial).argmax(axis=1), truth, classes)
                if f1 > best + 1e-12:
                    best, offsets, moved = f1, trial, True
        if not moved:
            break
    return offsets.astype(np.float32)


def _folds(rows: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(rows) % folds


def out_of_fold_thresholds(probs: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 0) -> np.ndarray:
    """(rows, labels) thresholds: each row's tuned on the other folds of these rows alone, so the
    F1 they give is measured on rows their tuning never saw (cross-fitting)."""
    fold = _folds(len(probs), folds, seed)
    out = np.empty(probs.shape, dtype=np.float32)
    for k in range(folds):
        out[fold == k] = tune_thresholds(probs[fold != k], labels[fold != k])
    return out


def out_of_fold_classes(logits: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Each row's predicted class under offsets tuned on the other folds of these rows alone."""
    fold = _folds(len(logits), folds, seed)
    out = np.empty(len(logits), dtype=np.int64)
    for k in range(folds):
        out[fold == k] = (logits[fold == k] + tune_offsets(logits[fold != k], labels[fold != k])).argmax(axis=1)
    return out
