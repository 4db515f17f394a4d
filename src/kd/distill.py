"""The main job: data -> teacher -> cached soft targets -> student -> run folder and table.

A run folder `checkpoints/<run>/` holds `teacher/` and `student/` (save_pretrained
folders with thresholds.json), `config.yaml` (the resolved config), `metrics.jsonl`
(one record per epoch of either stage) and `final_metrics.json`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed

from kd.checkpoint import state_path
from kd.config import Config
from kd.batches import EncodedDataset, make_loader
from kd.calibration import calibrate, write_calibration
from kd.card import write_run_cards
from kd.data import LabeledTexts, load_splits
from kd.tokens import TokenCache, TokenColumns
from kd.errors import KDError
from kd.evaluate import evaluate_model, predict_logits, prepare_for_inference
from kd.lexical import add_lexical_part, lexical_summary
from kd.layer_matching import LayerMatching
from kd.models import (TEACHER_INITS, build_model, count_parameters, folder_size_mb,
                       init_prior_bias, is_single_label, label_names, load_classifier, load_tokenizer, set_single_label)
from kd.preflight import check_models, check_output_folders, run_folder
from kd.report import Reporter, write_json
from kd.runtime import (precision_name, resolve_mixed_precision, training_device,
                        use_all_cores_under_accelerate_launch)
from kd.student_start import pretrained_student, resolve_init
from kd.soft_targets import cached_metrics, file_soft_targets, soft_targets, transfer_soft_targets
from kd.transfer import augmented_copies, read_texts
from kd.train import Objective, fit


def make_accelerator(cfg: Config) -> Accelerator:
    """Batch sizes in the config are global: Accelerate splits each batch across processes.

    Several processes on a machine without an accelerator (`accelerate launch --multi_gpu
    --num_processes N` on CPU) form a gloo process group only when Accelerate is told `cpu`.
    """
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not several and not torch.accelerator.is_available():
        use_all_cores_under_accelerate_launch()
    accelerator = Accelerator(cpu=several and not torch.accelerator.is_available(),
                              log_with=None if cfg.log_with == "none" else cfg.log_with,
                              project_config=ProjectConfiguration(cfg.output_dir, logging_dir=cfg.output_dir),
                              mixed_precision=resolve_mixed_precision(cfg.mixed_precision, training_device()),
                              dataloader_config=DataLoaderConfiguration(split_batches=True,
                                                                        use_seedable_sampler=True,
                                                                        data_seed=cfg.seed))
    for key, size in [("teacher.train.batch_size", cfg.teacher.train.batch_size),
                      ("student.train.batch_size", cfg.student.train.batch_size),
                      ("teacher.train.eval_batch_size", cfg.teacher.train.eval_batch_size),
                      ("student.train.eval_batch_size", cfg.student.train.eval_batch_size)]:
        if size % accelerator.num_processes:
            raise KDError(f"{key}={size} is the global batch and must divide by the "
                          f"{accelerator.num_processes} processes")
    return accelerator


def _model_summary(folder: Path, metrics: dict, model, train_time_s: float | None, **extra) -> dict:
    return {"path": str(folder), "val": metrics, "parameters": count_parameters(model),
            "size_mb": folder_size_mb(folder), "train_time_s": train_time_s, **extra}


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
        return _model_summary(folder, metrics, model, None, given=True), model, tokenizer, folder

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
    calibration = _calibrate(folder, best, tokenizer, val, tokens, cfg.teacher.train.eval_batch_size, accelerator,
                             reporter, "teacher")
    summary = _model_summary(folder, result.metrics, best, result.train_time_s,
                             best_epoch=result.best_epoch, lr=result.lr, calibration=calibration)
    return summary, best, tokenizer, folder


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
    return LayerMatching(model.config, teacher, distill.layer_map, distill.hidden_weight,
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
                 objective=Objective(cfg.distill.alpha, cfg.distill.temperature, cfg.distill.final_temperature, matching),
                 state_file=state_path(run_dir, "student"), resume=resume)
    best, _, _ = load_classifier(folder)
    calibration = _calibrate(folder, best, tokenizer, val, tokens, student.train.eval_batch_size, accelerator,
                             reporter, "student")
    return _model_summary(folder, result.metrics, best, result.train_time_s,
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


def _calibrate(folder: Path, model, tokenizer, val: LabeledTexts, tokens: TokenCache, batch_size: int,
               accelerator: Accelerator, reporter: Reporter, stage: str) -> dict:
    """Temperatures fitted on val for the saved model, written beside it (kd.calibration); its
    expected calibration error before and after (out of fold)."""
    dataset = EncodedDataset(tokens(tokenizer, "val", val.texts), val.labels)
    model, loader = prepare_for_inference(accelerator, model, make_loader(dataset, tokenizer, model, batch_size, False))
    with reporter.task(f"{stage} calibration", len(loader)) as advance:
        logits, labels = predict_logits(model, loader, accelerator, advance)
    temperatures, errors = calibrate(logits, labels, val.single_label)
    if accelerator.is_main_process:
        write_calibration(folder, val.label_names, temperatures, val.single_label)
    accelerator.wait_for_everyone()
    return {**errors, "temperatures": [round(float(t), 4) for t in temperatures]}


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
        teacher_summary, teacher_logits, cache_hit, transfer, online = _teacher_side(
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


def _teacher_side(cfg: Config, train: LabeledTexts, val: LabeledTexts, tokens: TokenCache, file_texts: list[str],
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
