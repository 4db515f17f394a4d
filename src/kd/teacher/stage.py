"""The teacher side of a run: the teacher fine-tuned (or taken as given), and its logits over
the train rows and the transfer set, cached as soft targets (kd.soft_targets).

Several teachers (distill.extra_teachers) are averaged with distill.teacher_weights; a teacher
that runs at every step (hidden-state / attention matching) is handed to the student stage.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from kd.data.batches import EncodedDataset
from kd.training.checkpoint import state_path
from kd.config.settings import Config
from kd.data.texts import LabeledTexts
from kd.errors import KDError
from kd.evaluation.stage import calibrate_saved, stage_summary
from kd.evaluation.predict import evaluate_model
from kd.models.build import (build_model, count_parameters, init_prior_bias, is_single_label, label_names, set_single_label)
from kd.models.saved import load_classifier
from kd.models.hub import load_tokenizer
from kd.runtime.report import Reporter
from kd.teacher.soft_targets import cached_metrics, soft_targets, transfer_soft_targets
from kd.teacher.score_files import file_soft_targets
from kd.data.tokens import TokenCache
from kd.training.loop import fit
from kd.data.transfer import augmented_copies


def teacher_side(cfg: Config, train: LabeledTexts, val: LabeledTexts, tokens: TokenCache, file_texts: list[str],
                 accelerator: Accelerator, reporter: Reporter, run_dir: Path, resume: bool, teacher_only: bool):
    """(teacher summary, its logits over train or None, whether they came from the cache, the
    transfer set or None, (model, tokenizer) of a teacher that runs at every step or Nones)."""
    if cfg.teacher.soft_targets:
        reporter.print(f"teacher: scores from {cfg.teacher.soft_targets} ({cfg.teacher.soft_targets_kind}), "
                       "no teacher model")
        return ({"path": cfg.teacher.soft_targets, "val": {}, "parameters": None, "size_mb": None,
                 "train_time_s": None, "given": True},
                file_soft_targets(cfg.teacher.soft_targets, train, cfg.teacher.soft_targets_kind), None, None,
                (None, None))
    teacher_summary, teacher, teacher_tokenizer, teacher_folder = _teacher_stage(
        cfg, train, val, tokens, accelerator, reporter, run_dir, resume)
    teachers = [(teacher, teacher_tokenizer, teacher_folder)]
    teacher_logits, cache_hit, transfer = None, None, None
    if cfg.distill.alpha > 0 or teacher_only:
        if not teacher_only:
            teachers += _extra_teachers(cfg.distill.extra_teachers, train)
        teacher_logits, cache_hit = _weighted_logits(
            cfg.distill.teacher_weights, teachers, lambda model, tokenizer, folder: soft_targets(
                model, tokenizer, folder, train, tokens(tokenizer, "train", train.texts), cfg.data,
                Path(cfg.cache_dir), cfg.teacher.train.eval_batch_size, accelerator, reporter))
    if cfg.distill.alpha > 0 and not teacher_only:
        transfer = _transfer_set(cfg, train, file_texts, teachers, tokens, accelerator, reporter)
    online = teachers[0][:2] if cfg.distill.matches_layers else (None, None)
    return teacher_summary, teacher_logits, cache_hit, transfer, online


def _teacher_stage(cfg: Config, train: LabeledTexts, val: LabeledTexts, tokens: TokenCache,
                   accelerator: Accelerator, reporter: Reporter, run_dir: Path, resume: bool):
    """Fine-tune the teacher (or take a fine-tuned one); returns (summary, model, tokenizer, folder)."""
    if cfg.teacher.path:
        folder = Path(cfg.teacher.path)
        model, tokenizer, _ = load_classifier(folder)
        names = label_names(model)
        if names != train.label_names:
            raise KDError(f"teacher {folder} predicts {names}, the data has {train.label_names}")
        if is_single_label(model) != train.single_label:
            raise KDError(f"teacher {folder} is a {'single' if is_single_label(model) else 'multi'}-label "
                          f"model, the data is {'single' if train.single_label else 'multi'}-label")
        evaluate = lambda: evaluate_model(model, tokenizer, val, accelerator,  # noqa: E731
                                          cfg.teacher.train.eval_batch_size, cfg.data.max_length,
                                          input_ids=tokens(tokenizer, "val", val.texts))[0]
        metrics = cached_metrics(folder, val, cfg.data.max_length, Path(cfg.cache_dir), accelerator, evaluate)
        reporter.print(f"teacher: fine-tuned model from {folder}, val macro AUC {metrics['macro_auc']}")
        return stage_summary(folder, metrics, model, None, given=True), model, tokenizer, folder

    folder = run_dir / "teacher"
    tokenizer = load_tokenizer(cfg.teacher.name)
    tokenizer.model_max_length = cfg.data.max_length  # saved with the model: inference truncates there too
    model = build_model(cfg.teacher.name, cfg.teacher.init, train.label_names, role="teacher")
    set_single_label(model, train.single_label)
    if cfg.teacher.train.prior_bias_init:
        init_prior_bias(model, train.labels)
    reporter.print(f"teacher: {cfg.teacher.name} ({cfg.teacher.init}), {count_parameters(model):,} parameters")
    result = fit(model, tokenizer, EncodedDataset(tokens(tokenizer, "train", train.texts), train.labels),
                 EncodedDataset(tokens(tokenizer, "val", val.texts), val.labels), train.label_names,
                 cfg.teacher.train, accelerator, reporter, folder, stage="teacher",
                 state_file=state_path(run_dir, "teacher"), resume=resume)
    best, tokenizer, _ = load_classifier(folder)
    calibration = calibrate_saved(folder, best, tokenizer, val, tokens, cfg.teacher.train.eval_batch_size,
                                  accelerator, reporter, "teacher")
    summary = stage_summary(folder, result.metrics, best, result.train_time_s,
                            best_epoch=result.best_epoch, lr=result.lr, calibration=calibration)
    return summary, best, tokenizer, folder


def _extra_teachers(paths: list[str], train: LabeledTexts) -> list[tuple]:
    """(model, tokenizer, folder) of each extra teacher folder, checked to predict the train labels."""
    teachers, names = [], train.label_names
    for path in paths:
        model, tokenizer, _ = load_classifier(path)
        if label_names(model) != names or is_single_label(model) != train.single_label:
            raise KDError(f"extra teacher {path} predicts {label_names(model)} "
                          f"({model.config.problem_type}), the data has {names}")
        teachers.append((model, tokenizer, Path(path)))
    return teachers


def _weighted_logits(weights: list[float], teachers: list[tuple], logits_of) -> tuple[torch.Tensor, bool]:
    """The teachers' logits averaged with `weights` (distill.teacher_weights; equal when empty),
    and whether they all came from the cache; logits_of(model, tokenizer, folder) -> (logits, cache hit)."""
    weights = weights or [1.0] * len(teachers)
    results = [logits_of(*teacher) for teacher in teachers]
    if len(results) == 1:  # as cached: memory-mapped, not copied
        return results[0]
    logits = sum(w * logits for w, (logits, _) in zip(weights, results)) / sum(weights)
    return logits, all(hit for _, hit in results)


def _transfer_set(cfg: Config, train: LabeledTexts, file_texts: list[str], teachers: list[tuple],
                  tokens: TokenCache, accelerator: Accelerator,
                  reporter: Reporter) -> tuple[list[str], torch.Tensor] | None:
    """(transfer texts, the teachers' logits for them), or None without a transfer set."""
    mask = teachers[0][1].mask_token or teachers[0][1].unk_token
    texts = file_texts + augmented_copies(train.texts, cfg.distill.augment_copies, cfg.distill.augment_mask_prob,
                                          cfg.distill.augment_ngram_prob, cfg.seed, mask)
    if not texts:
        return None

    def logits_of(model, tokenizer, folder: Path) -> tuple[torch.Tensor, bool]:
        return transfer_soft_targets(model, tokenizer, folder, texts, tokens(tokenizer, "transfer", texts),
                                     len(train.label_names), cfg.data.max_length, Path(cfg.cache_dir),
                                     cfg.teacher.train.eval_batch_size, accelerator, reporter)

    logits, _ = _weighted_logits(cfg.distill.teacher_weights, teachers, logits_of)
    reporter.print(f"transfer set: {len(file_texts):,} texts from files + "
                   f"{len(texts) - len(file_texts):,} augmented copies, labelled by the teacher")
    return texts, logits
