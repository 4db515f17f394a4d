"""The main job: data -> teacher (kd.teacher) -> cached soft targets -> student -> run folder and table.

A run folder `checkpoints/<run>/` holds `teacher/` and `student/` (save_pretrained
folders with thresholds.json), `config.yaml` (the resolved config), `metrics.jsonl`
(one record per epoch of either stage) and `final_metrics.json`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from kd.training.checkpoint import state_path
from kd.config.settings import Config
from kd.data.batches import EncodedDataset
from kd.deployment.card import write_run_cards
from kd.data.texts import LabeledTexts
from kd.data.splits import load_splits
from kd.data.tokens import TokenCache, TokenColumns
from kd.errors import KDError
from kd.evaluation.stage import calibrate_saved, stage_summary
from kd.models.lexical import add_lexical_part, lexical_summary
from kd.training.layer_matching import LayerMatching
from kd.models.build import TEACHER_INITS, build_model, count_parameters, init_prior_bias, set_single_label
from kd.models.saved import load_classifier
from kd.models.hub import load_tokenizer
from kd.run.preflight import check_models, check_output_folders, run_folder
from kd.runtime.report import Reporter, write_json
from kd.runtime.hardware import make_accelerator, precision_name
from kd.student.pretrain import pretrain_encoder
from kd.student.start import pretrained_student, resolve_init
from kd.teacher.stage import teacher_side
from kd.data.transfer import read_texts
from kd.training.loop import Objective, fit


def _layer_matching(cfg: Config, model, tokenizer, teacher, teacher_tokenizer, train: LabeledTexts,
                    tokens: TokenCache) -> LayerMatching | None:
    """The hidden-state / attention matching loss, when the config asks for one."""
    distill = cfg.distill
    if not distill.matches_layers:
        return None
    if tokens(tokenizer, "train", train.texts) != tokens(teacher_tokenizer, "train", train.texts):
        raise KDError("distill.hidden_weight / distill.attention_weight run the teacher on the student's "
                      "tokens, so both need the same tokenization; these tokenizers differ")
    if distill.attention_weight > 0:
        model.set_attn_implementation("eager")  # the fused attention kernels return no attention maps
    return LayerMatching(model, teacher, distill.layer_map, distill.hidden_weight,
                         distill.attention_weight, distill.hidden_loss)


def _student_stage(cfg: Config, train: LabeledTexts, val: LabeledTexts, tokens: TokenCache,
                   teacher_logits, transfer: tuple[list[str], torch.Tensor] | None, teacher,
                   accelerator: Accelerator, reporter: Reporter, run_dir: Path, resume: bool,
                   learned: list[str]) -> dict:
    """The student trained on the train rows (and transfer rows); `learned`: the texts its word
    embeddings learned from before (kd-pretrain's), whose rows a lexical part's cut keeps too."""
    student = cfg.student
    tokenizer = load_tokenizer(cfg.teacher.name if student.init in TEACHER_INITS else student.name)
    tokenizer.model_max_length = cfg.data.max_length  # saved with the model: inference truncates there too
    model = build_model(student.name, student.init, train.label_names, role="student",
                        num_layers=student.num_layers, layers=student.layers,
                        teacher_name=cfg.teacher.name)
    set_single_label(model, train.single_label)
    train_set = EncodedDataset(tokens(tokenizer, "train", train.texts), train.labels, teacher_logits)
    if transfer is not None:  # transfer-set rows after the labelled ones: soft targets only
        texts, logits = transfer
        train_set = EncodedDataset(
            TokenColumns.concat([train_set.input_ids, tokens(tokenizer, "transfer", texts)]),
            np.concatenate([train.labels, np.zeros((len(texts), train.labels.shape[1]), np.float32)]),
            torch.cat([teacher_logits, logits]), labelled_rows=len(train))
    if student.lexical_buckets:  # word embeddings for the ids of every text it learned from
        learned_rows = [tokens(tokenizer, "learned", learned)] if learned else []
        kept = np.unique(TokenColumns.concat([train_set.input_ids, *learned_rows]).values)
        model = add_lexical_part(model, kept, student.lexical_buckets, tokenizer.unk_token_id)
    if student.train.prior_bias_init:
        init_prior_bias(model, train.labels)
    matching = _layer_matching(cfg, model, tokenizer, *teacher, train, tokens)
    reporter.print(f"student: {student.name} ({student.init}){lexical_summary(model)}, "
                   f"{count_parameters(model):,} parameters, alpha {cfg.distill.alpha}, T {cfg.distill.temperature}")
    folder = run_dir / "student"
    result = fit(model, tokenizer, train_set, EncodedDataset(tokens(tokenizer, "val", val.texts), val.labels),
                 train.label_names, student.train, accelerator, reporter, folder, stage="student",
                 objective=Objective(cfg.distill.alpha, cfg.distill.temperature, cfg.distill.final_temperature,
                                     matching),
                 state_file=state_path(run_dir, "student"), resume=resume)
    best, _, _ = load_classifier(folder)
    calibration = calibrate_saved(folder, best, tokenizer, val, tokens, student.train.eval_batch_size,
                                  accelerator, reporter, "student")
    return stage_summary(folder, result.metrics, best, result.train_time_s,
                         best_epoch=result.best_epoch, lr=result.lr, calibration=calibration)


def _student_side(cfg: Config, train: LabeledTexts, val: LabeledTexts, tokens: TokenCache, teacher_logits,
                  transfer, teacher, accelerator: Accelerator, reporter: Reporter, run_dir: Path,
                  resume: bool) -> dict:
    """The student stage, after its pre-training by distillation for student.init=kd-pretrain."""
    pretraining, learned = None, []
    if cfg.student.init == "kd-pretrain":
        cfg, pretraining, learned = pretrained_student(cfg, train.texts, accelerator, reporter, run_dir, resume)
    set_seed(cfg.seed)
    summary = _student_stage(cfg, train, val, tokens, teacher_logits, transfer, teacher, accelerator, reporter,
                             run_dir, resume, learned)
    return summary if pretraining is None else {**summary, "pretraining": pretraining}


def _warn_about(train: LabeledTexts, val: LabeledTexts, reporter: Reporter) -> None:
    for split, data in (("train", train), ("val", val)):
        if data.dropped:
            reporter.print(f"data: left out {data.dropped:,} rows with an empty text from the {split} file")
        for name in data.labels_without_positives():
            reporter.print(f"warning: label '{name}' has no positive example in {split}; "
                           f"its AUC is undefined (null)")
        for name in data.labels_on_every_row():
            reporter.print(f"warning: label '{name}' is positive on every row of {split}; "
                           f"nothing can be learnt about it and its AUC is undefined (null)")


def run(cfg: Config, resume: bool = False, teacher_only: bool = False) -> Path:
    """Run the whole job, or with `resume` continue it from its saved state; returns the run folder.
    `teacher_only`: stop after the teacher and its cached soft targets (see shared_teacher)."""
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    check_output_folders(cfg, accelerator)
    with accelerator.main_process_first():  # bad data fails first; its columns are cached only once all reads
        train, val = load_splits(cfg.data, Path(cfg.cache_dir) / "data")
    given, (cfg, student_recipe) = cfg, resolve_init(cfg)  # config.yaml keeps init=auto: a resume resolves it again
    check_models(cfg)
    file_texts = read_texts(cfg.distill.transfer_files)
    with run_folder(given, accelerator, resume) as run_dir, \
            Reporter(accelerator.is_main_process, run_dir / "metrics.jsonl", _tracking(cfg, accelerator, run_dir)) \
            as reporter:
        reporter.print(f"data: {len(train):,} train / {len(val):,} val rows, {len(train.label_names)} labels, "
                       f"{accelerator.num_processes} process(es) on {accelerator.device}, training in "
                       f"{precision_name(accelerator.mixed_precision, accelerator.device)}")
        _warn_about(train, val, reporter)
        reporter.print(f"student recipe: {student_recipe}")
        tokens = TokenCache(cfg.data.max_length, reporter, Path(cfg.cache_dir) / "tokens",
                            cfg.data.num_proc, accelerator.main_process_first)
        teacher_summary, teacher_logits, cache_hit, transfer, online = teacher_side(
            cfg, train, val, tokens, file_texts, accelerator, reporter, run_dir, resume, teacher_only)
        summary = {"teacher": teacher_summary, "soft_targets_cache_hit": cache_hit,
                   "num_processes": accelerator.num_processes}
        if not teacher_only:
            summary["student"] = _student_side(cfg, train, val, tokens, teacher_logits, transfer, online,
                                               accelerator, reporter, run_dir, resume)
            summary["student"]["recipe"] = student_recipe
        if accelerator.is_main_process:
            write_json(run_dir / "final_metrics.json", summary)
            shutil.rmtree(run_dir / "state", ignore_errors=True)  # finished: nothing to resume
            if not teacher_only:
                write_run_cards(["student"] + ([] if cfg.teacher.path or cfg.teacher.soft_targets else ["teacher"]),
                                {"teacher": teacher_summary, "student": summary["student"]}, train.label_names,
                                train.single_label, {"train": cfg.data.train, "val": cfg.data.val},
                                {"alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature}, val.texts)
        if not teacher_only:
            reporter.final_table({"teacher": teacher_summary, "student": summary["student"]})
        reporter.print(f"run folder: {run_dir}")
    accelerator.end_training()
    return run_dir


def _tracking(cfg: Config, accelerator: Accelerator, run_dir: Path):
    """accelerator.log of the tracker cfg.log_with, its run named for the run folder (TensorBoard
    writes its event file into that folder); None for none."""
    if cfg.log_with == "none":
        return None
    try:
        accelerator.init_trackers(run_dir.name)
    except ImportError as err:
        raise KDError(f"log_with={cfg.log_with} needs its package: {err}") from None
    return accelerator.log


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
