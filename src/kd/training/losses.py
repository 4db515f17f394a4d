"""The distillation loss: per-label sigmoids for multi-label classification, one softmax over
the classes for single-label (multi-class) classification; and the class weights of
`train.class_weights: balanced`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_POSITIVE_WEIGHT = 100.0  # a label with one positive in 50,000 rows would otherwise weigh 50,000


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                      teacher_logits: torch.Tensor | None = None,
                      alpha: float = 0.5, temperature: float = 2.0,
                      labelled: torch.Tensor | None = None, single_label: bool = False,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """(1 - alpha) * BCE(z_s, y) + alpha * T^2 * BCE(sigmoid(z_s / T), sigmoid(z_t / T)); with
    `single_label` (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
    (Hinton et al., 2015), y one-hot.

    Both terms are means over rows (and, multi-label, labels). The T^2 factor keeps the soft
    term's gradient on the same scale as the hard term's when T changes (Hinton et al., 2015).
    With alpha = 0 this is plain BCE (CE) and the teacher's logits are not needed. `labelled`
    (one bool per row) marks rows with labels: transfer-set rows have only the teacher's
    soft targets, so the hard term averages over the labelled rows alone. `class_weights`
    (balanced_weights) weigh the hard term: each row's CE by its class's weight, each label's
    positives in the BCE by its weight (pos_weight).
    """
    if single_label:
        hard = F.cross_entropy(student_logits, labels.argmax(dim=1), reduction="none")
        if class_weights is not None:
            hard = hard * class_weights.to(hard.dtype)[labels.argmax(dim=1)]
    else:
        positive = None if class_weights is None else class_weights.to(student_logits.dtype)
        hard = F.binary_cross_entropy_with_logits(student_logits, labels.to(student_logits.dtype),
                                                  pos_weight=positive, reduction="none").mean(dim=1)
    if labelled is None:
        hard = hard.mean()
    else:
        weights = labelled.to(hard.dtype)
        hard = (hard * weights).sum() / weights.sum().clamp(min=1.0)
    if alpha == 0.0:
        return hard
    if teacher_logits is None:
        raise ValueError("alpha > 0 needs the teacher's logits")
    teacher_logits = teacher_logits.to(student_logits.dtype) / temperature
    if single_label:
        soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits, dim=1),
                        reduction="batchmean", log_target=True)
    else:
        soft = F.binary_cross_entropy_with_logits(student_logits / temperature, torch.sigmoid(teacher_logits))
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


def balanced_weights(labels: np.ndarray, single_label: bool) -> torch.Tensor:
    """`train.class_weights: balanced`, from the train rows' 0/1 labels: single-label, each class
    n / (classes * its rows), so every class weighs as much in total and a row weighs 1 on average;
    multi-label, each label's positives its negatives / its positives (at most MAX_POSITIVE_WEIGHT;
    1 for a label without positives)."""
    counts = labels.sum(axis=0).astype(np.float64)
    if single_label:
        weights = np.where(counts > 0, len(labels) / (labels.shape[1] * np.maximum(counts, 1)), 1.0)
    else:
        weights = np.where(counts > 0, np.minimum((len(labels) - counts) / np.maximum(counts, 1),
                                                  MAX_POSITIVE_WEIGHT), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def scheduled_temperature(start: float, end: float | None, progress: float) -> float:
    """T at `progress` through training (0: first step, 1: last): `start` throughout when `end`
    is None, else annealed linearly from `start` to `end`."""
    return start if end is None else start + (end - start) * min(max(progress, 0.0), 1.0)
