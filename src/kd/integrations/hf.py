"""Distillation in transformers' Trainer: `DistillationTrainer` is a Trainer whose loss is kd's
(`kd.training.losses.distillation_loss`: per-label sigmoid BCE, or softmax CE + KL for a single-label
model), with the teacher's logits read from each batch's `teacher_logits`. The teacher runs once,
up front: its logits come from kd's own stages (`kd.integrations.teacher.soft_targets`), from a
soft-target file a run names (`cached_teacher_logits`), or from anywhere else, put in a dataset
column (`with_teacher_logits`).

Validation needs no teacher logits: on a batch without them the loss is the label loss alone, and
`metrics(label_names)` gives the Trainer's `compute_metrics` kd's metrics (macro AUC, F1 at 0.5 and
tuned, out of fold), computed over the whole val set whatever the number of processes (the Trainer
gathers the predictions).

    trainer = DistillationTrainer(model=student, args=TrainingArguments(...), alpha=0.5, temperature=2.0,
                                  train_dataset=with_teacher_logits(train, logits), eval_dataset=val,
                                  compute_metrics=metrics(label_names), data_collator=...)
    trainer.train(); trainer.evaluate(); trainer.save_model("student")   # loads with from_pretrained
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import EvalPrediction, Trainer

from kd.errors import KDError
from kd.evaluation.metrics import tuned_metrics
from kd.models.build import is_single_label
from kd.training.losses import distillation_loss

TEACHER_LOGITS = "teacher_logits"
REPORTED = ("macro_auc", "macro_f1", "macro_f1_tuned", "micro_f1", "accuracy", "bce", "cross_entropy", "ece")


class DistillationTrainer(Trainer):
    """A transformers.Trainer that trains on (1 - alpha) * hard loss + alpha * T^2 * soft loss."""

    def __init__(self, *args, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        if not 0.0 <= alpha <= 1.0 or not temperature > 0:
            raise KDError(f"alpha must be in [0, 1] and temperature positive, got {alpha} and {temperature}")
        super().__init__(*args, **kwargs)
        self.alpha, self.temperature = alpha, temperature

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the teacher's logits among the columns the Trainer hands to the loss."""
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and TEACHER_LOGITS not in self._signature_columns:
            self._signature_columns.append(TEACHER_LOGITS)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """kd's loss; in evaluation, on rows without teacher logits (a plain val set), the label loss."""
        inputs = dict(inputs)
        labels, teacher_logits = inputs.pop("labels"), inputs.pop(TEACHER_LOGITS, None)
        alpha = self.alpha if teacher_logits is not None else 0.0
        if self.alpha > 0 and teacher_logits is None and model.training:
            raise KDError(f"alpha > 0 needs the teacher's logits in every training batch (a '{TEACHER_LOGITS}' column)")
        outputs = model(**inputs)
        single = is_single_label(self.accelerator.unwrap_model(model))
        if single and labels.dim() == 1:  # class indices, as transformers gives them
            labels = torch.nn.functional.one_hot(labels.long(), outputs.logits.shape[-1])
        loss = distillation_loss(outputs.logits.float(), labels.float(),
                                 None if teacher_logits is None else teacher_logits.float(),
                                 alpha, self.temperature, single_label=single)
        return (loss, outputs) if return_outputs else loss


def metrics(label_names: list[str], single_label: bool = False) -> Callable[[EvalPrediction], dict]:
    """A `compute_metrics` for the Trainer: kd's val metrics of the gathered predictions (multi-label:
    macro AUC, macro F1 at 0.5 and tuned out of fold, micro F1, BCE, ECE; single-label: accuracy,
    macro F1, macro AUC, cross-entropy, ECE)."""
    def compute(prediction: EvalPrediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        labels = np.asarray(prediction.label_ids)
        if single_label and labels.ndim == 1:  # class indices
            labels = np.eye(len(label_names), dtype=np.float32)[labels.astype(int)]
        scores, _ = tuned_metrics(np.asarray(logits), labels.astype(np.float32), label_names, single_label)
        return {key: scores[key] for key in REPORTED if scores.get(key) is not None}
    return compute


def cached_teacher_logits(path: str | Path) -> np.ndarray:
    """The teacher's logits from a kd soft-target file (the `soft_targets_file` that a run's
    final_metrics.json names), one row per train row in file order, checked against the checksum
    stored with them."""
    from kd.teacher.logits_cache import read_cached_logits

    if not Path(path).is_file():
        raise KDError(f"cannot read soft targets from {path}: no such file")
    logits = read_cached_logits(Path(path), None)
    if logits is None:
        raise KDError(f"cannot read soft targets from {path}: damaged, or it does not match the checksum stored "
                      "with it; recompute it")
    return logits.numpy()


def with_teacher_logits(rows, logits: np.ndarray) -> list[dict]:
    """Each row (a dict of model inputs and labels) with its teacher logits: for a `datasets.Dataset`
    use `dataset.add_column("teacher_logits", logits.tolist())` instead."""
    rows = list(rows)
    if len(rows) != len(logits):
        raise KDError(f"{len(rows)} rows but {len(logits)} rows of teacher logits")
    return [{**row, TEACHER_LOGITS: [float(v) for v in row_logits]} for row, row_logits in zip(rows, logits)]
