"""The one training loop, for teacher and student alike (the teacher is alpha = 0).

Under Accelerate: one `prepare`, `accumulate`, `gather_for_metrics`; AdamW with linear
warm-up and decay; evaluation on val after every epoch; the best epoch (by val BCE
or macro AUC) saved as a save_pretrained folder with its tuned thresholds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from kd.config import TrainConfig
from kd.data import EncodedDataset, make_loader
from kd.evaluate import (MODEL_INPUTS, compute_metrics, predict_logits, sigmoid, summary_line,
                         tune_thresholds)
from kd.losses import distillation_loss
from kd.models import default_lr, save_classifier
from kd.report import Reporter


@dataclass
class FitResult:
    best_epoch: int
    metrics: dict  # val metrics of the best epoch
    history: list[dict]
    train_time_s: float
    lr: float


def _optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _improved(metrics: dict, best: dict | None, select_by: str) -> bool:
    if best is None:
        return True
    if select_by == "macro_auc":
        return (metrics["macro_auc"] or 0.0) > (best["macro_auc"] or 0.0)
    return metrics["bce"] < best["bce"]


def fit(model, tokenizer, train_set: EncodedDataset, val_set: EncodedDataset,
        label_names: list[str], cfg: TrainConfig, accelerator, reporter: Reporter,
        out_dir: Path, stage: str, alpha: float = 0.0, temperature: float = 1.0) -> FitResult:
    """Train `model`, keep the best epoch in `out_dir`, log each epoch to reporter.metrics_file."""
    lr = cfg.lr or default_lr(model)
    train_loader = make_loader(train_set, tokenizer, model, cfg.batch_size, shuffle=True)
    val_loader = make_loader(val_set, tokenizer, model, cfg.eval_batch_size, shuffle=False)
    optimizer = _optimizer(model, lr, cfg.weight_decay)
    updates = cfg.epochs * math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * updates), updates)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)

    history, best, best_epoch, train_time = [], None, 0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=accelerator.device)
        with reporter.task(f"{stage} epoch {epoch}/{cfg.epochs}", len(train_loader)) as advance:
            for batch in train_loader:
                with accelerator.accumulate(model):
                    logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits
                    loss = distillation_loss(logits.float(), batch["labels"], batch.get("teacher_logits"),
                                             alpha, temperature)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                loss_sum += loss.detach()
                advance()
        train_time += time.perf_counter() - started
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / len(train_loader)

        with reporter.task(f"{stage} eval", len(val_loader)) as advance:
            logits, labels = predict_logits(model, val_loader, accelerator, advance)
        thresholds = tune_thresholds(sigmoid(logits), labels)
        metrics = compute_metrics(logits, labels, thresholds, label_names)
        record = {"stage": stage, "epoch": epoch, "train_loss": train_loss,
                  "epoch_time_s": time.perf_counter() - started, "lr": lr, "val": metrics}
        history.append(record)
        reporter.log_epoch(record)
        if _improved(metrics, best, cfg.select_by):
            best, best_epoch = metrics, epoch
            if accelerator.is_main_process:
                save_classifier(accelerator.unwrap_model(model), tokenizer, thresholds, out_dir)
        reporter.print(f"[bold]{stage}[/] epoch {epoch}: train loss {train_loss:.4f} | "
                       f"{summary_line(metrics)}{' *' if best_epoch == epoch else ''}")
        accelerator.wait_for_everyone()
    accelerator.free_memory()
    return FitResult(best_epoch, best, history, train_time, lr)

