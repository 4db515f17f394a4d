"""The teacher stage: the teacher fine-tuned on the train split (its best epoch by val kept in the
run folder, and held for its soft targets), taken as given (`teacher.path`), or, with
`teacher.soft_targets`, no teacher model at all (its scores come from a file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from accelerate.utils import broadcast_object_list

from kd.data.batches import EncodedDataset
from kd.data.splits import Splits
from kd.data.texts import LabeledTexts
from kd.errors import KDError
from kd.evaluation.predict import evaluate_model
from kd.evaluation.stage import stage_summary
from kd.files import write_atomically
from kd.models.build import (
    build_model,
    count_parameters,
    init_prior_bias,
    is_single_label,
    label_names,
    set_single_label,
)
from kd.runtime.context import RunContext
from kd.teacher.logits_cache import checkpoint_digest
from kd.training.loop import Objective, TrainingJob, class_weights, fit


def teacher_stage(ctx: RunContext, data: Splits) -> dict:
    """The teacher's summary (folder, val metrics, size, train time); a teacher model it made or
    took is held by the context as "teacher"."""
    teacher = ctx.cfg.teacher
    if teacher.soft_targets:
        ctx.reporter.print(f"teacher: scores from {teacher.soft_targets} ({teacher.soft_targets_kind}), no teacher model")
        return {"path": teacher.soft_targets, "val": {}, "parameters": None, "size_mb": None, "train_time_s": None,
                "given": True}
    return _given_teacher(ctx, data) if teacher.path else _fine_tuned_teacher(ctx, data)


def teacher_folder(ctx: RunContext) -> Path:
    """Where the run's teacher model is saved: teacher.path, or the run folder's teacher/."""
    return Path(ctx.cfg.teacher.path) if ctx.cfg.teacher.path else ctx.run_dir / "teacher"


def check_predicts(folder: Path, model, data: Splits, what: str) -> None:
    """Refuse a teacher folder whose labels or problem type are not the data's."""
    train = data.train
    if label_names(model) != train.label_names:
        raise KDError(f"{what} {folder} predicts {label_names(model)}, the data has {train.label_names}")
    if is_single_label(model) != train.single_label:
        raise KDError(f"{what} {folder} is a {'single' if is_single_label(model) else 'multi'}-label "
                      f"model, the data is {'single' if train.single_label else 'multi'}-label")


def _given_teacher(ctx: RunContext, data: Splits) -> dict:
    folder = teacher_folder(ctx)
    held = ctx.model("teacher", folder)
    check_predicts(folder, held.model, data, "teacher")
    val, batch_size = data.val, ctx.cfg.teacher.train.eval_batch_size
    evaluate = lambda: evaluate_model(held.model, held.tokenizer, val, ctx.accelerator, batch_size,  # noqa: E731
                                      input_ids=ctx.tokens(held.tokenizer, "val", val.texts))[0]
    metrics = cached_metrics(ctx, folder, val, evaluate)
    ctx.reporter.print(f"teacher: fine-tuned model from {folder}, val macro AUC {metrics['macro_auc']}")
    return stage_summary(folder, metrics, held.model, None, given=True)


def _fine_tuned_teacher(ctx: RunContext, data: Splits) -> dict:
    cfg, train, val = ctx.cfg.teacher, data.train, data.val
    folder = teacher_folder(ctx)
    tokenizer = ctx.tokenizer(cfg.name)  # saved with the model: inference truncates where training did
    model = build_model(cfg.name, cfg.init, train.label_names, role="teacher")
    set_single_label(model, train.single_label)
    if cfg.train.prior_bias_init:
        init_prior_bias(model, train.labels)
    ctx.reporter.print(f"teacher: {cfg.name} ({cfg.init}), {count_parameters(model):,} parameters")
    result = fit(ctx, TrainingJob("teacher", model, tokenizer,
                                  EncodedDataset(ctx.tokens(tokenizer, "train", train.texts), train.labels),
                                  EncodedDataset(ctx.tokens(tokenizer, "val", val.texts), val.labels),
                                  cfg.train, folder, Objective(class_weights=class_weights(cfg.train, train))))
    best = ctx.model("teacher", folder)
    return stage_summary(folder, result.metrics, best.model, result.train_time_s, best_epoch=result.best_epoch,
                         lr=result.lr)


def cached_metrics(ctx: RunContext, folder: Path, val: LabeledTexts, compute) -> dict:
    """A given teacher's val metrics, computed once per (checkpoint, val rows, max_length): runs
    that share a fine-tuned teacher (sweeps, benchmarks) skip re-evaluating it. The main
    process decides hit or miss for all, and alone writes."""
    path = ctx.cache_dir / "teacher_metrics" / f"{metrics_key(folder, val, ctx.cfg.data.max_length)}.json"
    metrics = None
    if ctx.is_main:
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    metrics = broadcast_object_list([metrics])[0]
    if metrics is None:
        metrics = compute()
        if ctx.is_main:
            write_atomically(path, lambda partial: Path(partial).write_text(json.dumps(metrics), encoding="utf-8"))
    return metrics


def metrics_key(folder: Path, val: LabeledTexts, max_length: int) -> str:
    """The key of a teacher's val metrics: sha256 of the JSON list [checkpoint digest, val texts,
    max_length, "oof"] (written a text at a time, never whole) and of the val labels. "oof": the
    tuned F1 is out of fold since then; metrics cached before are recomputed."""
    digest = hashlib.sha256(f"[{json.dumps(checkpoint_digest(folder))}, [".encode())
    for i, text in enumerate(val.texts):
        digest.update(((", " if i else "") + json.dumps(text)).encode())
    digest.update(f"], {json.dumps(max_length)}, \"oof\"]".encode())
    digest.update(val.labels.tobytes())
    return digest.hexdigest()[:24]
