"""The soft-targets stage: the teachers' logits over every train row (and every transfer-set
text), labelled once and cached (kd.teacher.logits_cache), or read from a file of scores
(`teacher.soft_targets`, kd.teacher.score_files), with no teacher model at all.

Several teachers (`distill.extra_teachers`) are averaged with `distill.teacher_weights`. The
transfer set is the unlabelled texts of `distill.transfer_files` and `distill.augment_copies`
augmented copies of the train texts, labelled by the same teachers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kd.data.splits import Splits
from kd.data.transfer import augmented_copies
from kd.models.saved import load_classifier
from kd.runtime.context import Loaded, RunContext
from kd.teacher.logits_cache import train_logits, train_logits_file, transfer_logits
from kd.teacher.score_files import file_soft_targets
from kd.teacher.stage import check_predicts


@dataclass
class SoftTargets:
    train: torch.Tensor | None  # the teachers' logits for every train row; None: the student learns from labels
    transfer: tuple[list[str], torch.Tensor] | None  # transfer-set texts and the teachers' logits for them
    cache_hit: bool | None  # whether the train logits came from the cache (None: from a file, or none)
    file: str | None = None  # the cache file of the main teacher's train logits (kd.integrations reads it)


def soft_targets_stage(ctx: RunContext, data: Splits, teacher_folder: Path, file_texts: list[str]) -> SoftTargets:
    """The student's soft targets from the teacher saved in `teacher_folder` (held by the context)
    and any extra teachers; `file_texts`: the transfer texts of distill.transfer_files."""
    cfg = ctx.cfg
    if cfg.teacher.soft_targets:
        return SoftTargets(file_soft_targets(cfg.teacher.soft_targets, data.train, cfg.teacher.soft_targets_kind),
                           None, None)
    if cfg.distill.alpha == 0:
        return SoftTargets(None, None, None)
    teachers = [ctx.model("teacher", teacher_folder), *_extra_teachers(ctx, data)]
    logits, hit = _weighted(cfg.distill.teacher_weights, [train_logits(ctx, t, data.train) for t in teachers])
    return SoftTargets(logits, _transfer_set(ctx, data, file_texts, teachers), hit,
                       str(train_logits_file(ctx, teachers[0])))


def teacher_soft_targets(ctx: RunContext, data: Splits, teacher_folder: Path) -> SoftTargets:
    """The main teacher's train logits alone, computed into the cache unless there."""
    teacher = ctx.model("teacher", teacher_folder)
    logits, hit = train_logits(ctx, teacher, data.train)
    return SoftTargets(logits, None, hit, str(train_logits_file(ctx, teacher)))


def _extra_teachers(ctx: RunContext, data: Splits) -> list[Loaded]:
    """Each distill.extra_teachers folder, checked to predict the train labels."""
    teachers = []
    for path in ctx.cfg.distill.extra_teachers:
        model, tokenizer, _ = load_classifier(path)
        check_predicts(Path(path), model, data, "extra teacher")
        teachers.append(Loaded(model, ctx.truncating(tokenizer), Path(path)))
    return teachers


def _weighted(weights: list[float], results: list[tuple[torch.Tensor, bool]]) -> tuple[torch.Tensor, bool]:
    """The teachers' logits averaged with `weights` (distill.teacher_weights; equal when empty), and
    whether they all came from the cache; `results`: each teacher's (logits, cache hit)."""
    if len(results) == 1:  # as cached: memory-mapped, not copied
        return results[0]
    weights = weights or [1.0] * len(results)
    logits = sum(w * logits for w, (logits, _) in zip(weights, results)) / sum(weights)
    return logits, all(hit for _, hit in results)


def _transfer_set(ctx: RunContext, data: Splits, file_texts: list[str],
                  teachers: list[Loaded]) -> tuple[list[str], torch.Tensor] | None:
    """(transfer texts, the teachers' logits for them), or None without a transfer set."""
    cfg = ctx.cfg.distill
    mask = teachers[0].tokenizer.mask_token or teachers[0].tokenizer.unk_token
    texts = file_texts + augmented_copies(data.train.texts, cfg.augment_copies, cfg.augment_mask_prob,
                                          cfg.augment_ngram_prob, ctx.cfg.seed, mask)
    if not texts:
        return None
    logits, _ = _weighted(cfg.teacher_weights, [transfer_logits(ctx, t, texts) for t in teachers])
    ctx.reporter.print(f"transfer set: {len(file_texts):,} texts from files + "
                       f"{len(texts) - len(file_texts):,} augmented copies, labelled by the teacher")
    return texts, logits
