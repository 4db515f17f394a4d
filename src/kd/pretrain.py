"""`kd pretrain`: pre-training a student by distillation on unlabelled text, before any task.

The student's layers learn to reproduce the pretrained teacher's hidden states on plain texts
(`pretrain.files`, one per line), through a learned projection where the widths differ: the
general distillation of TinyBERT, in the spirit of "Well-Read Students Learn Better" (Turc et
al., 2019), where a compact model pre-trained before distillation beat one distilled from
scratch. The teacher is `teacher.name`'s pretrained encoder (not a fine-tuned classifier); the
student is built as `kd distill` builds it (`student.name`, `student.init`, `student.num_layers`)
and reads the teacher's tokenizer. One loop trains it: `train.fit` without labels or a val set.

The run folder holds `student/` (the encoder and tokenizer, a save_pretrained folder: start a
task from it with `student.name=<that folder> student.init=pretrained`), `config.yaml`,
`metrics.jsonl` and `final_metrics.json`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from kd.batches import EncodedDataset
from kd.checkpoint import state_path
from kd.config import Config
from kd.tokens import encode
from kd.distill import make_accelerator
from kd.preflight import check_output_folders, check_positions, run_folder
from kd.errors import KDError
from kd.layer_matching import LayerMatching
from kd.models import build_model, count_parameters, load_encoder, load_tokenizer
from kd.report import Reporter, write_json
from kd.student_start import resolve_init
from kd.train import Objective, fit
from kd.transfer import read_texts

UNLABELLED = ["unlabelled"]  # the student is built as a classifier; its 1-label head is not trained or saved


def pretrain(cfg: Config, resume: bool = False) -> Path:
    """Pre-train cfg.student on cfg.pretrain.files; returns the run folder (its `student/` folder
    is the pre-trained encoder). `resume` continues an interrupted run from its saved state."""
    if not cfg.pretrain.files:
        raise KDError("kd pretrain needs unlabelled texts: pretrain.files=[FILE, ...] (one text per line)")
    texts = read_texts(cfg.pretrain.files, "pretrain.files")
    cfg, _ = resolve_init(cfg)
    accelerator = make_accelerator(cfg)
    check_output_folders(cfg, accelerator)
    with run_folder(cfg, accelerator, resume) as run_dir, \
            Reporter(accelerator.is_main_process, run_dir / "metrics.jsonl") as reporter:
        result = pretrain_encoder(cfg, texts, accelerator, reporter, run_dir / "student",
                                  state_path(run_dir, "pretrain"), resume)
        if accelerator.is_main_process:
            write_json(run_dir / "final_metrics.json", {"student": {"path": str(run_dir / "student"), **result}})
            shutil.rmtree(run_dir / "state", ignore_errors=True)  # finished: nothing to resume
        reporter.print(f"pre-trained student: {run_dir / 'student'} "
                       "(a task run starts from it with student.name=<it> student.init=pretrained)")
    accelerator.end_training()
    return run_dir


def pretrain_encoder(cfg: Config, texts: list[str], accelerator: Accelerator, reporter: Reporter, folder: Path,
                     state_file: Path, resume: bool = False) -> dict:
    """Build cfg.student from cfg.student.init (kd-pretrain: from teacher-embeddings),
    train it to match cfg.teacher.name's pretrained hidden states on `texts`, save the encoder in
    `folder`; returns what it did (texts, parameters, train time, lr, loss by epoch)."""
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.teacher.name)
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
    reporter.print(f"pretrain: {len(texts):,} texts; student {cfg.student.name} ({init}), "
                   f"{count_parameters(student.base_model):,} parameters, matching {cfg.teacher.name}'s "
                   + _matched(matching))
    train_set = EncodedDataset(encode(tokenizer, texts, cfg.data.max_length),
                               np.zeros((len(texts), 1), np.float32), labelled_rows=0)
    result = fit(student, tokenizer, train_set, None, UNLABELLED, cfg.pretrain.train, accelerator, reporter,
                 folder, stage="pretrain", objective=Objective(matching=matching), state_file=state_file,
                 resume=resume)
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
