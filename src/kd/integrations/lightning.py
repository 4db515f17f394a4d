"""Distillation in PyTorch Lightning (an optional dependency: pip install lightning):
`DistillationModule` wraps a transformers classifier and trains it on kd's loss, the teacher's
logits read from each batch's `teacher_logits` (computed once, up front, as for the Trainer:
kd.integrations.teacher.soft_targets).

Validation needs no teacher logits: on a batch without them `val_loss` is the label loss. It logs
`val_loss`, `val_macro_auc` and `val_macro_f1` (multi-label at 0.5; single-label also
`val_accuracy`), the metrics computed over the whole val set: on several processes every rank's
predictions are gathered, and the rows Lightning's DistributedSampler repeats to even out the
shards are dropped, so they equal a one-process evaluation of the same model.

    module = DistillationModule(student, alpha=0.5, temperature=2.0, label_names=names)
    lightning.Trainer(max_epochs=3).fit(module, train_loader, val_loader)
    module.model.save_pretrained("student"); tokenizer.save_pretrained("student")
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
from torch.utils.data import DistributedSampler
from transformers import get_linear_schedule_with_warmup

from kd.errors import KDError
from kd.evaluation.metrics import compute_metrics, single_label_metrics
from kd.evaluation.predict import MODEL_INPUTS
from kd.integrations.hf import TEACHER_LOGITS
from kd.models.build import default_lr, is_single_label
from kd.training.losses import distillation_loss


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

    def _labels(self, batch: dict) -> torch.Tensor:
        """The batch's labels as kd's loss and metrics take them: 0/1 rows (class indices one-hot)."""
        labels = batch["labels"]
        if self.single_label and labels.dim() == 1:
            labels = torch.nn.functional.one_hot(labels.long(), len(self.label_names))
        return labels.float()

    def loss(self, batch: dict, logits: torch.Tensor | None = None) -> torch.Tensor:
        """kd's loss; outside training, on a batch without teacher logits, the label loss."""
        teacher_logits = batch.get(TEACHER_LOGITS)
        if teacher_logits is None and self.alpha > 0 and self.training:
            raise KDError(f"alpha > 0 needs the teacher's logits in every training batch (a '{TEACHER_LOGITS}' key)")
        logits = self(batch) if logits is None else logits
        return distillation_loss(logits, self._labels(batch), teacher_logits,
                                 self.alpha if teacher_logits is not None else 0.0, self.temperature,
                                 single_label=self.single_label)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        self.log("val_loss", self.loss(batch, logits), batch_size=len(batch["labels"]), sync_dist=True)
        self._val.append((logits.detach(), self._labels(batch).detach()))

    def on_validation_epoch_end(self) -> None:
        logits, labels = self._gathered()
        if self.single_label:
            metrics = single_label_metrics(logits, labels, self.label_names)
        else:
            metrics = compute_metrics(logits, labels, np.full(labels.shape[1], 0.5), self.label_names)
        for key in ("macro_auc", "macro_f1", "accuracy"):
            if metrics.get(key) is not None:
                self.log(f"val_{key}", metrics[key])

    def _gathered(self) -> tuple[np.ndarray, np.ndarray]:
        """(logits, labels) of every val row, once each and in the val set's order, on every process."""
        logits, labels = (torch.cat(part) for part in zip(*self._val))
        self._val.clear()
        if self.trainer.world_size > 1:  # [processes, rows, ...]: rank r holds rows r, r + world, ...
            logits, labels = (t.transpose(0, 1).flatten(0, 1) for t in self.all_gather((logits, labels)))
            rows = _sampled_rows(self.trainer.val_dataloaders)
            if rows is not None:  # the repeats that even out the shards come last
                logits, labels = logits[:rows], labels[:rows]
        return logits.cpu().numpy(), labels.cpu().numpy()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _sampled_rows(loaders) -> int | None:
    """How many rows the val loader's DistributedSampler (in order, not shuffled) spread over the
    processes; None when it has no such sampler (its repeats, if any, then stay in)."""
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler) and not sampler.shuffle:
        return len(sampler.dataset)
    return None
