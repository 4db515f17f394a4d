"""Distillation in PyTorch Lightning (an optional dependency: pip install lightning):
`DistillationModule` wraps a transformers classifier and trains it on kd's loss, the teacher's
logits read from each batch's `teacher_logits` (computed once, up front, as for the Trainer).
Validation logs `val_loss`, `val_macro_auc` and, multi-label, `val_macro_f1` at 0.5.

    module = DistillationModule(student, alpha=0.5, temperature=2.0, label_names=names)
    lightning.Trainer(max_epochs=3).fit(module, train_loader, val_loader)
    module.model.save_pretrained("student")
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from kd.evaluation.predict import MODEL_INPUTS
from kd.evaluation.metrics import compute_metrics, single_label_metrics
from kd.integrations.hf import TEACHER_LOGITS
from kd.training.losses import distillation_loss
from kd.models.build import default_lr, is_single_label


class DistillationModule(lightning.LightningModule):
    def __init__(self, model, alpha: float = 0.5, temperature: float = 2.0, lr: float | None = None,
                 weight_decay: float = 0.01, warmup_ratio: float = 0.1, label_names: list[str] | None = None):
        super().__init__()
        self.model, self.alpha, self.temperature = model, alpha, temperature
        self.lr = lr or default_lr(model)
        self.weight_decay, self.warmup_ratio = weight_decay, warmup_ratio
        self.label_names = label_names or [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.single_label = is_single_label(model)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits.float()

    def loss(self, batch: dict, logits: torch.Tensor | None = None) -> torch.Tensor:
        logits = self(batch) if logits is None else logits
        return distillation_loss(logits, batch["labels"].float(), batch.get(TEACHER_LOGITS), self.alpha,
                                 self.temperature, single_label=self.single_label)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        self.log("val_loss", self.loss(batch, logits), batch_size=len(batch["labels"]))
        self._val.append((logits.detach().cpu(), batch["labels"].detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        logits, labels = (torch.cat(part).numpy() for part in zip(*self._val))
        self._val.clear()
        if self.single_label:
            metrics = single_label_metrics(logits, labels, self.label_names)
        else:
            metrics = compute_metrics(logits, labels, np.full(labels.shape[1], 0.5), self.label_names)
        for key in ("macro_auc", "macro_f1", "accuracy"):
            if metrics.get(key) is not None:
                self.log(f"val_{key}", metrics[key])

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
