"""Distillation in transformers' Trainer: `DistillationTrainer` is a Trainer whose loss is kd's
(`kd.training.losses.distillation_loss`: per-label sigmoid BCE, or softmax CE + KL for a single-label
model), with the teacher's logits read from each batch's `teacher_logits`. The teacher runs once,
up front: its logits come from kd's soft-target cache (`cached_teacher_logits`) or are computed
elsewhere and put in a dataset column (`with_teacher_logits`).

    trainer = DistillationTrainer(model=student, args=TrainingArguments(...), alpha=0.5, temperature=2.0,
                                  train_dataset=with_teacher_logits(train, logits), data_collator=...)
    trainer.train(); trainer.save_model("student")   # loads with from_pretrained
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import Trainer

from kd.errors import KDError
from kd.training.losses import distillation_loss
from kd.models.build import is_single_label

TEACHER_LOGITS = "teacher_logits"


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
        inputs = dict(inputs)
        labels, teacher_logits = inputs.pop("labels"), inputs.pop(TEACHER_LOGITS, None)
        if self.alpha > 0 and teacher_logits is None:
            raise KDError(f"alpha > 0 needs the teacher's logits in every batch (a '{TEACHER_LOGITS}' column)")
        outputs = model(**inputs)
        single = is_single_label(self.accelerator.unwrap_model(model))
        if single and labels.dim() == 1:  # class indices, as transformers gives them
            labels = torch.nn.functional.one_hot(labels.long(), outputs.logits.shape[-1])
        loss = distillation_loss(outputs.logits.float(), labels.float(),
                                 None if teacher_logits is None else teacher_logits.float(),
                                 self.alpha, self.temperature, single_label=single)
        return (loss, outputs) if return_outputs else loss


def cached_teacher_logits(path: str | Path) -> np.ndarray:
    """The teacher's logits from a kd soft-target cache file (cache_dir/soft_targets/*.safetensors),
    one row per train row in file order, checked against the checksum stored with them."""
    from safetensors import safe_open

    from kd.teacher.logits_cache import read_cached_logits

    try:
        with safe_open(str(path), framework="pt") as handle:
            shape = tuple(handle.get_slice("logits").get_shape())
    except Exception as err:  # safetensors raises its own types for missing or damaged files
        raise KDError(f"cannot read soft targets from {path}: {str(err).splitlines()[0]}") from None
    logits = read_cached_logits(Path(path), shape)
    if logits is None:
        raise KDError(f"{path} does not match the checksum stored with it; recompute it")
    return logits.numpy()


def with_teacher_logits(rows, logits: np.ndarray) -> list[dict]:
    """Each row (a dict of model inputs and labels) with its teacher logits: for a `datasets.Dataset`
    use `dataset.add_column("teacher_logits", logits.tolist())` instead."""
    rows = list(rows)
    if len(rows) != len(logits):
        raise KDError(f"{len(rows)} rows but {len(logits)} rows of teacher logits")
    return [{**row, TEACHER_LOGITS: [float(v) for v in row_logits]} for row, row_logits in zip(rows, logits)]
