"""The one training loop, for teacher and student alike (the teacher is alpha = 0).

Under Accelerate: one `prepare`, `accumulate`, `gather_for_metrics`; AdamW with linear
warm-up and decay; evaluation on val after every epoch; the best epoch (by val BCE
or macro AUC) saved as a save_pretrained folder with its tuned thresholds. Without a val
set (`kd pretrain`: no labels, only the layer-matching loss) each epoch's encoder is saved.
With a state file, where training stands is saved every `save_every_steps` batches, after
every epoch and on Ctrl-C; `resume` continues from it exactly: same weights, optimizer,
scheduler, data order (the epoch's shuffle, its done batches skipped) and dropout RNG.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from kd.checkpoint import Progress, load_state, restore_rng, save_state
from kd.config import TrainConfig
from kd.dropout import use_fast_dropout
from kd.first_token import use_first_token_last_layer
from kd.batches import EncodedDataset, make_loader
from kd.evaluate import MODEL_INPUTS, predict_logits, summary_line, tuned_metrics, val_loss
from kd.errors import KDError
from kd.layer_matching import LayerMatching
from kd.losses import distillation_loss, scheduled_temperature
from kd.models import default_lr, is_single_label, save_classifier, save_encoder
from kd.optim import clip_grad_norm, make_optimizer, use_sparse_embedding_gradient
from kd.report import Reporter
from kd.runtime import keep_freed_memory


@dataclass
class FitResult:
    best_epoch: int
    metrics: dict | None  # val metrics of the best epoch (None without a val set)
    history: list[dict]
    train_time_s: float
    lr: float


def _embedding_update(cfg: TrainConfig, accelerator, reporter: Reporter, stage: str) -> tuple[bool, bool]:
    """(sparse, lazy): whether the word embedding table gets a sparse gradient (on CPU it is
    cheaper; the lazy update needs it) and whether AdamW updates only the rows a batch used.
    DDP and fp16's scaler need dense gradients."""
    possible = accelerator.num_processes == 1 and accelerator.mixed_precision != "fp16"
    if cfg.lazy_embedding_update and not possible:
        reporter.print(f"{stage}: lazy_embedding_update needs one process and no fp16; the update stays dense")
    lazy = cfg.lazy_embedding_update and possible
    return possible and (lazy or accelerator.device.type == "cpu"), lazy


MIXED_PRECISION_PAD_MULTIPLE = 8


def train_pad_multiple(cfg: TrainConfig, mixed_precision: str) -> int:
    """What training batches' widths are rounded up to: `cfg.pad_to_multiple_of`, else
    MIXED_PRECISION_PAD_MULTIPLE (8) in mixed precision. There a CPU's bf16 matrix products run oneDNN kernels built for each
    shape at its first use (in an epoch of length-grouped batches, up to max_length widths),
    and a GPU's tensor cores work in tiles of 8; fp32 on a CPU gains nothing from padding."""
    if cfg.pad_to_multiple_of is not None:
        return cfg.pad_to_multiple_of
    return 1 if mixed_precision == "no" else MIXED_PRECISION_PAD_MULTIPLE


def _improved(metrics: dict, best: dict | None, select_by: str) -> bool:
    if best is None:
        return True
    if select_by == "macro_auc":
        return (metrics["macro_auc"] or 0.0) > (best["macro_auc"] or 0.0)
    return val_loss(metrics) < val_loss(best)


def fit(model, tokenizer, train_set: EncodedDataset, val_set: EncodedDataset | None,
        label_names: list[str], cfg: TrainConfig, accelerator, reporter: Reporter,
        out_dir: Path, stage: str, alpha: float = 0.0, temperature: float = 1.0,
        final_temperature: float | None = None, matching: LayerMatching | None = None,
        state_file: Path | None = None, resume: bool = False) -> FitResult:
    """Train `model`, keep the best epoch in `out_dir`, log each epoch to reporter.metrics_file.
    The loss is distillation_loss at a temperature annealed from `temperature` to
    `final_temperature` (None: constant), plus `matching`'s loss when given (its projections
    train with the model)."""
    lr = cfg.lr or default_lr(model, cfg.batch_size)
    single_label = is_single_label(model)
    use_fast_dropout(model)
    if matching is None:  # matching reads every token's hidden states
        use_first_token_last_layer(model)
    if accelerator.device.type == "cpu":
        keep_freed_memory()
    sparse, lazy = _embedding_update(cfg, accelerator, reporter, stage)
    use_sparse_embedding_gradient(model, sparse)
    clip = clip_grad_norm if sparse else accelerator.clip_grad_norm_
    train_loader = make_loader(train_set, tokenizer, model, cfg.batch_size, shuffle=True,
                               group_by_length=cfg.group_by_length, seed=torch.initial_seed(),
                               pad_to_multiple_of=train_pad_multiple(cfg, accelerator.mixed_precision))
    trained = model if matching is None else torch.nn.ModuleList([model, matching])
    optimizer = make_optimizer(trained, lr, cfg.weight_decay, lazy=lazy)
    updates = cfg.epochs * math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * updates), updates)
    val_loader = None if val_set is None else make_loader(val_set, tokenizer, model, cfg.eval_batch_size,
                                                          shuffle=False)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # mixed precision in training steps only
    if matching is not None:
        matching.teacher.to(accelerator.device)
        if list(matching.parameters()):  # projections to train (and, with several processes, to sync)
            matching = accelerator.prepare(matching)
    progress, rng, total_steps = Progress(), None, cfg.epochs * len(train_loader)
    if resume and state_file is not None and state_file.is_file():
        progress, rng = load_state(state_file, trained, optimizer, scheduler)
        reporter.print(f"{stage}: resuming at epoch {progress.epoch}, batch {progress.step}")

    divergence = _Divergence(f"{stage}.train.lr", lr)

    def save() -> None:
        if state_file is not None and accelerator.is_main_process:
            save_state(state_file, trained, optimizer, scheduler, progress)

    for epoch in range(progress.epoch, cfg.epochs + 1):
        if rng is not None and progress.step == 0:  # before the epoch's iterator draws its seed
            restore_rng(rng)
            rng = None
        train_loader.iteration, train_loader.skip_batches = epoch - 1, progress.step  # same shuffle
        started = time.perf_counter()
        model.train()
        loss_sum = torch.tensor(progress.loss_sum, device=accelerator.device)
        with reporter.task(f"{stage} epoch {epoch}/{cfg.epochs}", len(train_loader) - progress.step) as advance:
            with _deferred_ctrl_c() as stop:
                for batch in train_loader:
                    if rng is not None:  # mid-epoch: where the interrupted run stood after its last batch
                        restore_rng(rng)
                        rng = None
                    with accelerator.accumulate(model):
                        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
                        done = ((epoch - 1) * len(train_loader) + progress.step) / max(total_steps - 1, 1)
                        with accelerator.autocast():
                            outputs = model(**inputs, **(matching.output_flags if matching else {}))
                            extra = matching(outputs, inputs) if matching is not None else 0.0
                        loss = distillation_loss(outputs.logits.float(), batch["labels"], batch.get("teacher_logits"),
                                                 alpha, scheduled_temperature(temperature, final_temperature, done),
                                                 batch.get("labelled"), single_label) + extra
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and cfg.max_grad_norm:
                            clip(model.parameters(), cfg.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                    loss_sum += loss.detach()
                    progress.step += 1
                    divergence.add(loss, (epoch - 1) * len(train_loader) + progress.step)
                    advance()
                    if stop.requested or (cfg.save_every_steps and progress.step % cfg.save_every_steps == 0):
                        divergence.check()
                        _checkpoint(progress, loss_sum, started, save)
                    if stop.requested:
                        reporter.print(f"{stage}: interrupted; the state is saved, "
                                       "`kd distill --resume RUN_FOLDER` continues")
                        raise KeyboardInterrupt
        divergence.check()
        progress.train_time_s += time.perf_counter() - started
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / len(train_loader)

        metrics, thresholds = _evaluate(model, val_loader, label_names, accelerator, reporter, stage, single_label)
        record = {"stage": stage, "epoch": epoch, "train_loss": train_loss,
                  "epoch_time_s": time.perf_counter() - started, "lr": lr, "val": metrics}
        progress.history.append(record)
        if metrics is None or _improved(metrics, progress.best, cfg.select_by):
            progress.best, progress.best_epoch = metrics, epoch
            if accelerator.is_main_process:
                unwrapped = accelerator.unwrap_model(model)
                if metrics is None:
                    save_encoder(unwrapped, tokenizer, out_dir)
                else:
                    save_classifier(unwrapped, tokenizer, thresholds, out_dir)
        progress.epoch, progress.step, progress.loss_sum = epoch + 1, 0, 0.0
        save()
        reporter.log_epoch(record)
        scores = "" if metrics is None else f" | {summary_line(metrics)}"
        reporter.print(f"[bold]{stage}[/] epoch {epoch}: train loss {train_loss:.4f}{scores}"
                       f"{' *' if progress.best_epoch == epoch and metrics else ''}")
        accelerator.wait_for_everyone()
    accelerator.free_memory()
    return FitResult(progress.best_epoch, progress.best, progress.history, progress.train_time_s, lr)


def _evaluate(model, val_loader, label_names: list[str], accelerator, reporter: Reporter,
              stage: str, single_label: bool) -> tuple[dict | None, object]:
    """(val metrics, tuned thresholds); (None, None) without a val set."""
    if val_loader is None:
        return None, None
    with reporter.task(f"{stage} eval", len(val_loader)) as advance:
        logits, labels = predict_logits(model, val_loader, accelerator, advance)
    return tuned_metrics(logits, labels, label_names, single_label)


class _Divergence:
    """A loss that is not finite ends training with the step where it first went so. Losses are
    checked CHECK_EVERY steps at a time (and before every save), not at every step: reading a
    value back makes a GPU wait."""
    CHECK_EVERY = 16

    def __init__(self, lr_key: str, lr: float):
        self.lr_key, self.lr = lr_key, lr
        self.losses: list[torch.Tensor] = []
        self.last_step = 0

    def add(self, loss: torch.Tensor, step: int) -> None:
        self.losses.append(loss.detach().float())
        self.last_step = step
        if len(self.losses) == self.CHECK_EVERY:
            self.check()

    def check(self) -> None:
        if not self.losses:
            return
        losses, self.losses = torch.stack(self.losses).cpu(), []
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = self.last_step - len(losses) + 1 + int(bad[0])
            raise KDError(f"the loss diverged at step {step} (it became {losses[bad[0]].item()}); lower "
                          f"{self.lr_key} (it is {self.lr:g}) or keep the gradient clipping on (max_grad_norm)")


class _deferred_ctrl_c:
    """Ctrl-C during training ends the current batch first (so the saved state is whole); a
    second Ctrl-C interrupts at once. Outside the main thread signals cannot be caught: no-op."""

    def __enter__(self):
        self.requested = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._request)
        except ValueError:
            self.previous = None
        return self

    def _request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _checkpoint(progress: Progress, loss_sum: torch.Tensor, started: float, save) -> None:
    """Save mid-epoch: the loss and time so far go with the state."""
    elapsed = time.perf_counter() - started
    progress.loss_sum = loss_sum.item()
    progress.train_time_s += elapsed
    save()
    progress.train_time_s -= elapsed
