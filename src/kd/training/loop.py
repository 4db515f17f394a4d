"""The one training loop, for teacher and student alike (the teacher is alpha = 0).

Under Accelerate: one `prepare`, `accumulate`, `gather_for_metrics`; AdamW with linear
warm-up and decay; evaluation on val after every epoch; the best epoch (by val BCE
or macro AUC) saved as a save_pretrained folder with its tuned decision rule. Without a val
set (`kd pretrain`: no labels, only the layer-matching loss) each epoch's encoder is saved.
Where training stands is saved every `save_every_steps` batches, after every epoch and on
Ctrl-C (kd.training.guard); a resumed run continues from it exactly: same weights, optimizer,
scheduler, data order (the epoch's shuffle, its done batches skipped) and every process's
dropout RNG.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from kd.config.settings import TrainConfig
from kd.data.batches import EncodedDataset, make_loader
from kd.evaluation.metrics import summary_line, tuned_metrics, val_loss
from kd.evaluation.predict import MODEL_INPUTS, predict_logits
from kd.models.build import default_lr, is_single_label, label_names
from kd.models.saved import save_classifier, save_encoder
from kd.runtime.context import RunContext
from kd.training import speedups
from kd.training.checkpoint import Progress, load_state, restore_rng
from kd.training.guard import Checkpoints, DeferredCtrlC
from kd.training.layer_matching import LayerMatching
from kd.training.losses import (
    balanced_weights,
    distillation_loss,
    scheduled_temperature,
)
from kd.training.optim import clip_grad_norm, make_optimizer


@dataclass
class FitResult:
    best_epoch: int
    metrics: dict | None  # val metrics of the best epoch (None without a val set)
    history: list[dict]
    train_time_s: float
    lr: float


@dataclass
class Objective:
    """What a training step minimises: distillation_loss (alpha 0: the labels alone) at a
    temperature annealed from `temperature` to `final_temperature` (None: constant), its hard term
    weighed by `class_weights` when given, plus `matching`'s loss when given (its projections
    train with the model)."""
    alpha: float = 0.0
    temperature: float = 1.0
    final_temperature: float | None = None
    matching: LayerMatching | None = None
    class_weights: torch.Tensor | None = None  # the hard term's (losses.balanced_weights); None: unweighted

    def loss(self, model, batch: dict, done: float, single_label: bool, accelerator) -> torch.Tensor:
        """The loss of `batch`, `done` (0..1) of the way through training."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        with accelerator.autocast():
            outputs = model(**inputs, **(self.matching.output_flags if self.matching else {}))
            extra = self.matching(outputs, inputs) if self.matching is not None else 0.0
        temperature = scheduled_temperature(self.temperature, self.final_temperature, done)
        weights = None if self.class_weights is None else self.class_weights.to(outputs.logits.device)
        return distillation_loss(outputs.logits.float(), batch["labels"], batch.get("teacher_logits"), self.alpha,
                                 temperature, batch.get("labelled"), single_label, weights) + extra


@dataclass
class TrainingJob:
    """What one training stage trains: `model` on `train_set`, evaluated on `val_set` after every
    epoch (None: no labels, as in pre-training), the best epoch saved in `folder`. `stage` (teacher,
    student, pretrain) names its progress bars, epoch lines and resumable state."""
    stage: str
    model: torch.nn.Module
    tokenizer: object
    train_set: EncodedDataset
    val_set: EncodedDataset | None
    settings: TrainConfig
    folder: Path
    objective: Objective = dataclasses.field(default_factory=Objective)


def class_weights(settings: TrainConfig, train) -> torch.Tensor | None:
    """The label loss's class weights for `train` (LabeledTexts) as `settings.class_weights` asks
    (balanced: losses.balanced_weights), or None."""
    return balanced_weights(train.labels, train.single_label) if settings.class_weights == "balanced" else None


MIXED_PRECISION_PAD_MULTIPLE = 8


def train_pad_multiple(pad_to_multiple_of: int | None, mixed_precision: str) -> int:
    """What training batches' widths are rounded up to: `pad_to_multiple_of` (train's), else
    MIXED_PRECISION_PAD_MULTIPLE (8) in mixed precision. There a CPU's bf16 matrix products run
    oneDNN kernels built for each shape at its first use (in an epoch of length-grouped batches,
    up to max_length widths), and a GPU's tensor cores work in tiles of 8; fp32 on a CPU gains
    nothing from padding."""
    if pad_to_multiple_of is not None:
        return pad_to_multiple_of
    return 1 if mixed_precision == "no" else MIXED_PRECISION_PAD_MULTIPLE


def _improved(metrics: dict, best: dict | None, select_by: str) -> bool:
    if best is None:
        return True
    if select_by == "macro_auc":
        return (metrics["macro_auc"] or 0.0) > (best["macro_auc"] or 0.0)
    return val_loss(metrics) < val_loss(best)


@dataclass
class _Training:
    """What the loop works with, after the speedups and Accelerate's `prepare`."""
    model: torch.nn.Module
    trained: torch.nn.Module  # the model, and the layer matching's projections if any: what is saved
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: object
    val_loader: object | None
    clip: object
    lr: float
    objective: Objective  # its layer matching, if any, prepared too


def _prepare(ctx: RunContext, job: TrainingJob) -> _Training:
    accelerator, cfg, model, objective = ctx.accelerator, job.settings, job.model, job.objective
    lr = cfg.lr or default_lr(model, cfg.batch_size)
    names, notes = speedups.resolve(cfg.speedups, accelerator.device, accelerator.num_processes,
                                    accelerator.mixed_precision, objective.matching is not None,
                                    cfg.lazy_embedding_update)
    for note in notes:
        ctx.reporter.print(f"{job.stage}: {note}")
    speedups.apply(model, names)
    sparse = "sparse_embedding_gradient" in names
    train_loader = make_loader(job.train_set, job.tokenizer, model, cfg.batch_size, shuffle=True,
                               group_by_length=cfg.group_by_length, seed=ctx.cfg.seed,
                               pad_to_multiple_of=train_pad_multiple(cfg.pad_to_multiple_of, accelerator.mixed_precision))
    trained = model if objective.matching is None else torch.nn.ModuleList([model, objective.matching])
    optimizer = make_optimizer(trained, lr, cfg.weight_decay, fused="fused_adamw" in names,
                               lazy=cfg.lazy_embedding_update and sparse)
    updates = cfg.epochs * math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * updates), updates)
    val_loader = None if job.val_set is None else make_loader(job.val_set, job.tokenizer, model, cfg.eval_batch_size,
                                                              shuffle=False)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # mixed precision in training steps only
    matching = objective.matching
    if matching is not None:
        matching.teacher.to(accelerator.device)
        if list(matching.parameters()):  # projections to train (and, with several processes, to sync)
            matching = accelerator.prepare(matching)
    return _Training(model, trained, optimizer, scheduler, train_loader, val_loader,
                     clip_grad_norm if sparse else accelerator.clip_grad_norm_, lr,
                     dataclasses.replace(objective, matching=matching))


def fit(ctx: RunContext, job: TrainingJob) -> FitResult:
    """Train `job.model` on `job.objective`, keep the best epoch in `job.folder`, log each epoch to
    the run's metrics.jsonl; resumable from the stage's state file (resumed when the run resumes)."""
    accelerator, cfg, stage = ctx.accelerator, job.settings, job.stage
    run = _prepare(ctx, job)
    single_label, steps_per_epoch = is_single_label(job.model), len(run.train_loader)
    state_file = ctx.state_file(stage)
    progress, rng = Progress(), None
    if ctx.resume and state_file.is_file():
        progress, rng = load_state(state_file, run.trained, run.optimizer, run.scheduler,
                                   accelerator.process_index, accelerator.num_processes)
        ctx.reporter.print(f"{stage}: resuming at epoch {progress.epoch}, batch {progress.step}")
    checkpoint = Checkpoints(state_file if ctx.is_main else None, run, cfg.save_every_steps, stage, ctx)
    for epoch in range(progress.epoch, cfg.epochs + 1):
        rng = restore_rng(rng) if progress.step == 0 else rng  # before the epoch's iterator draws its seed
        run.train_loader.set_epoch(epoch - 1)  # the epoch's shuffle, then its batches not yet trained
        batches = accelerator.skip_first_batches(run.train_loader, progress.step) if progress.step else run.train_loader
        started, loss_sum = time.perf_counter(), torch.tensor(progress.loss_sum, device=accelerator.device)
        run.model.train()
        with ctx.reporter.task(f"{stage} epoch {epoch}/{cfg.epochs}", steps_per_epoch - progress.step) as advance, \
                DeferredCtrlC() as stop:
            for batch in batches:
                rng = restore_rng(rng)  # mid-epoch: where the interrupted run stood after its last batch
                with accelerator.accumulate(run.model):
                    done = ((epoch - 1) * steps_per_epoch + progress.step) / max(cfg.epochs * steps_per_epoch - 1, 1)
                    loss = run.objective.loss(run.model, batch, done, single_label, accelerator)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        run.clip(run.trained.parameters(), cfg.max_grad_norm)  # the projections too
                    run.optimizer.step()
                    run.scheduler.step()
                    run.optimizer.zero_grad()
                loss_sum += loss.detach()
                progress.step += 1
                advance()
                checkpoint.after_step(loss, (epoch - 1) * steps_per_epoch + progress.step, progress, loss_sum,
                                      started, stop.requested)
        checkpoint.agree()
        progress.train_time_s += time.perf_counter() - started
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / steps_per_epoch
        _end_epoch(ctx, job, run, progress, {"stage": stage, "epoch": epoch, "train_loss": train_loss, "lr": run.lr},
                   started)
        checkpoint.save(progress)
    ctx.release()
    return FitResult(progress.best_epoch, progress.best, progress.history, progress.train_time_s, run.lr)


def _end_epoch(ctx: RunContext, job: TrainingJob, run: _Training, progress: Progress, record: dict,
               started: float) -> None:
    """Evaluate the epoch, save the model if it is the best so far, log and print the epoch;
    `progress` moves on to the next epoch."""
    accelerator = ctx.accelerator
    metrics, thresholds = _evaluate(ctx, job, run)
    record.update(epoch_time_s=time.perf_counter() - started, val=metrics)
    progress.history.append(record)
    epoch = record["epoch"]
    if metrics is None or _improved(metrics, progress.best, job.settings.select_by):
        progress.best, progress.best_epoch = metrics, epoch
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(run.model)
            if metrics is None:
                save_encoder(unwrapped, job.tokenizer, job.folder)
            else:
                save_classifier(unwrapped, job.tokenizer, thresholds, job.folder)
    progress.epoch, progress.step, progress.loss_sum = epoch + 1, 0, 0.0
    ctx.reporter.log_epoch(record)
    scores = "" if metrics is None else f" | {summary_line(metrics)}"
    ctx.reporter.print(f"[bold]{job.stage}[/] epoch {epoch}: train loss {record['train_loss']:.4f}{scores}"
                       f"{' *' if progress.best_epoch == epoch and metrics else ''}")
    accelerator.wait_for_everyone()


def _evaluate(ctx: RunContext, job: TrainingJob, run: _Training) -> tuple[dict | None, object]:
    """(val metrics, tuned thresholds); (None, None) without a val set."""
    if run.val_loader is None:
        return None, None
    with ctx.reporter.task(f"{job.stage} eval", len(run.val_loader)) as advance:
        logits, labels = predict_logits(run.model, run.val_loader, ctx.accelerator, advance)
    return tuned_metrics(logits, labels, label_names(job.model), is_single_label(job.model))
