"""The student stage: the student built from its start (kd.student.start), given a lexical part
where asked, and trained on the labels and the teacher's soft targets (and, with layer matching,
on the teacher's hidden states or attention maps at every step)."""

from __future__ import annotations

import numpy as np
import torch
from accelerate.utils import set_seed

from kd.data.batches import EncodedDataset
from kd.data.splits import Splits
from kd.data.tokens import TokenColumns
from kd.errors import KDError
from kd.evaluation.stage import stage_summary
from kd.models.build import (
    TEACHER_INITS,
    build_model,
    count_parameters,
    init_prior_bias,
    set_single_label,
)
from kd.models.lexical import add_lexical_part, lexical_summary
from kd.runtime.context import RunContext
from kd.student.start import StudentStart
from kd.teacher.soft_targets import SoftTargets
from kd.teacher.stage import teacher_folder
from kd.training.layer_matching import LayerMatching
from kd.training.loop import Objective, TrainingJob, class_weights, fit


def student_stage(ctx: RunContext, data: Splits, targets: SoftTargets, start: StudentStart) -> dict:
    """Train the student on the train rows (and the transfer rows); its summary. The best epoch is
    saved in the run folder's student/ and held by the context as "student"."""
    ctx = ctx.with_config(start.cfg)
    cfg, train = ctx.cfg, data.train
    set_seed(cfg.seed)
    tokenizer = ctx.tokenizer(cfg.teacher.name if cfg.student.init in TEACHER_INITS else cfg.student.name)
    model = build_model(cfg.student.name, cfg.student.init, train.label_names, role="student",
                        num_layers=cfg.student.num_layers, layers=cfg.student.layers, teacher_name=cfg.teacher.name)
    set_single_label(model, train.single_label)
    train_set = _train_set(ctx, tokenizer, train, targets)
    if cfg.student.lexical_buckets:  # word embeddings for the ids of every text it learned from
        learned_rows = [ctx.tokens(tokenizer, "learned", start.learned)] if start.learned else []
        kept = np.unique(TokenColumns.concat([train_set.input_ids, *learned_rows]).values)
        model = add_lexical_part(model, kept, cfg.student.lexical_buckets, tokenizer.unk_token_id)
    if cfg.student.train.prior_bias_init:
        init_prior_bias(model, train.labels)
    distill = cfg.distill
    matching = _layer_matching(ctx, model, tokenizer, data) if distill.matches_layers else None
    ctx.reporter.print(f"student: {cfg.student.name} ({cfg.student.init}){lexical_summary(model)}, "
                       f"{count_parameters(model):,} parameters, alpha {distill.alpha}, T {distill.temperature}")
    folder = ctx.run_dir / "student"
    val_set = EncodedDataset(ctx.tokens(tokenizer, "val", data.val.texts), data.val.labels)
    objective = Objective(distill.alpha, distill.temperature, distill.final_temperature, matching,
                          class_weights(cfg.student.train, train))
    result = fit(ctx, TrainingJob("student", model, tokenizer, train_set, val_set, cfg.student.train, folder,
                                  objective))
    best = ctx.model("student", folder)
    return stage_summary(folder, result.metrics, best.model, result.train_time_s, best_epoch=result.best_epoch,
                         lr=result.lr)


def _train_set(ctx: RunContext, tokenizer, train, targets: SoftTargets) -> EncodedDataset:
    """The train rows with their soft targets, then the transfer-set rows (soft targets only)."""
    rows = EncodedDataset(ctx.tokens(tokenizer, "train", train.texts), train.labels, targets.train)
    if targets.transfer is None:
        return rows
    texts, logits = targets.transfer
    return EncodedDataset(
        TokenColumns.concat([rows.input_ids, ctx.tokens(tokenizer, "transfer", texts)]),
        np.concatenate([train.labels, np.zeros((len(texts), train.labels.shape[1]), np.float32)]),
        torch.cat([targets.train, logits]), labelled_rows=len(train))


def _layer_matching(ctx: RunContext, model, tokenizer, data: Splits) -> LayerMatching:
    """The hidden-state / attention matching loss against the teacher the run holds."""
    distill, teacher = ctx.cfg.distill, ctx.model("teacher", teacher_folder(ctx))
    texts = data.train.texts
    if ctx.tokens(tokenizer, "train", texts) != ctx.tokens(teacher.tokenizer, "train", texts):
        raise KDError("distill.hidden_weight / distill.attention_weight run the teacher on the student's "
                      "tokens, so both need the same tokenization; these tokenizers differ")
    if distill.attention_weight > 0:
        model.set_attn_implementation("eager")  # the fused attention kernels return no attention maps
    return LayerMatching(model, teacher.model, distill.layer_map, distill.hidden_weight, distill.attention_weight,
                         distill.hidden_loss)
