"""Pre-training a student by distillation on unlabelled text, before any task (`kd pretrain`, and
the kd-pretrain start of kd.student.start).

The student's layers learn to reproduce the pretrained teacher's hidden states on plain texts
(`pretrain.files`, one per line), through a learned projection where the widths differ: the
general distillation of TinyBERT, in the spirit of "Well-Read Students Learn Better" (Turc et
al., 2019), where a compact model pre-trained before distillation beat one distilled from
scratch. The teacher is `teacher.name`'s pretrained encoder (not a fine-tuned classifier); the
student is built as `kd distill` builds it (`student.name`, `student.init`, `student.num_layers`)
and reads the teacher's tokenizer. One loop trains it: kd.training.loop's `fit` without labels or a
val set.

The run folder holds `student/` (the encoder and tokenizer, a save_pretrained folder: start a
task from it with `student.name=<that folder> student.init=pretrained`), `config.yaml`,
`metrics.jsonl` and `final_metrics.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from accelerate.utils import set_seed

from kd.config.settings import Config, PretrainConfig
from kd.data.batches import EncodedDataset
from kd.data.texts import distinct_texts_digest
from kd.data.tokens import encode
from kd.errors import KDError
from kd.models.build import build_model, check_positions, count_parameters, load_encoder
from kd.runtime.context import RunContext
from kd.training.layer_matching import LayerMatching
from kd.training.loop import Objective, TrainingJob, fit

UNLABELLED = ["unlabelled"]  # the student is built as a classifier; its 1-label head is not trained or saved
PRETRAIN_SEED = 0


def pretrain_encoder(ctx: RunContext, texts: list[str], folder: Path) -> dict:
    """Build cfg.student from cfg.student.init (kd-pretrain: from teacher-embeddings),
    train it to match cfg.teacher.name's pretrained hidden states on `texts`, save the encoder in
    `folder`; returns what it did (texts, parameters, train time, lr, loss by epoch)."""
    cfg = ctx.cfg
    set_seed(cfg.seed)
    tokenizer = ctx.tokenizer(cfg.teacher.name)
    teacher = load_encoder(cfg.teacher.name)
    init = "teacher-embeddings" if cfg.student.init == "kd-pretrain" else cfg.student.init  # that recipe's start
    student = build_model(cfg.student.name, init, UNLABELLED, num_layers=cfg.student.num_layers,
                          layers=cfg.student.layers, teacher_name=cfg.teacher.name)
    if student.config.vocab_size < len(tokenizer):
        raise KDError(f"student '{cfg.student.name}' has {student.config.vocab_size} token embeddings, the "
                      f"teacher's tokenizer {len(tokenizer)} tokens: kd pretrain needs the teacher's vocab")
    check_positions(cfg.data.max_length, {f"teacher {cfg.teacher.name}": teacher.config,
                                          f"student {cfg.student.name}": student.config})
    pre = cfg.pretrain
    matching = LayerMatching(student, teacher, pre.layer_map, pre.hidden_weight, 0.0, pre.hidden_loss,
                             pre.relation_weight, pre.relation_heads)
    ctx.reporter.print(f"pretrain: {len(texts):,} texts; student {cfg.student.name} ({init}), "
                       f"{count_parameters(student.base_model):,} parameters, matching {cfg.teacher.name}'s "
                       + _matched(matching))
    train_set = EncodedDataset(encode(tokenizer, texts, tokenizer.model_max_length),
                               np.zeros((len(texts), 1), np.float32), labelled_rows=0)
    result = fit(ctx, TrainingJob("pretrain", student, tokenizer, train_set, None, cfg.pretrain.train, folder,
                                  Objective(matching=matching)))
    return {"texts": len(texts), "parameters": count_parameters(student.base_model),
            "train_time_s": result.train_time_s, "lr": result.lr,
            "train_loss": [record["train_loss"] for record in result.history]}


def _matched(matching: LayerMatching) -> str:
    """What the pre-training loss matches, in words."""
    parts = []
    if matching.hidden_weight > 0:
        parts.append(f"hidden states at layer pairs {matching.layer_map} ({matching.hidden_loss}, "
                     f"weight {matching.hidden_weight:g})")
    if matching.relation_weight > 0:
        parts.append(f"last-layer self-attention relations ({matching.relation_heads} heads, layers "
                     f"{list(matching.relation_layers)}, weight {matching.relation_weight:g})")
    return " and ".join(parts)


def pretraining_key(cfg: Config, corpus: list[Sequence[str]], mixed_precision: str) -> str:
    """A digest of every setting the pre-trained encoder depends on and of the distinct texts of
    `corpus` (the run's train texts and pretrain.files'), computed without holding them at once."""
    settings = {"teacher": cfg.teacher.name, "student": cfg.student.name, "num_layers": cfg.student.num_layers,
                "max_length": cfg.data.max_length, "layer_map": cfg.pretrain.layer_map,
                "hidden_loss": cfg.pretrain.hidden_loss, "train": dataclasses.asdict(cfg.pretrain.train),
                **_loss_settings(cfg.pretrain),
                "mixed_precision": mixed_precision, "seed": PRETRAIN_SEED}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(distinct_texts_digest(corpus).encode())
    return digest.hexdigest()[:16]


def _loss_settings(pre: PretrainConfig) -> dict:
    """The pre-training loss's weights, when not the hidden states alone (keys from before they
    were settings stay valid)."""
    if (pre.hidden_weight, pre.relation_weight) == (1.0, 0.0):
        return {}
    return {"hidden_weight": pre.hidden_weight, "relation_weight": pre.relation_weight,
            "relation_heads": pre.relation_heads}
