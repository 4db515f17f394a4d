"""Where the student starts: `student.init=auto` picks a recipe, `kd-pretrain` runs one.

auto: the student's own pretrained weights (`pretrained`) when they load; without them (BERT-Tiny
offline, or any alias with no weights at hand) `kd-pretrain` when the teacher's pretrained encoder
loads, shares the student's vocab and is at least as wide; else `pretrained`, so that the preflight
names the missing weights.

kd-pretrain: the student starts from the teacher's embedding tables reduced to its width by PCA
(`teacher-embeddings`) and is pre-trained by distillation on unlabelled text before the task:
`kd pretrain`'s loss (the pretrained teacher's hidden states) over the run's train texts and
`pretrain.files`, with `pretrain.train`'s settings. It beats random init on both datasets
(docs/benchmarks/quality_with_random_tiny/) and the teacher's embeddings alone (quality_all_students/). The
pre-trained encoder is cached under cache_dir/pretrained_students/<key>, the key covering the
texts and every setting it depends on, and it is pre-trained with seed 0 whatever the run's seed:
runs over seeds or alphas share it, as they share the teacher's soft targets. A kd-pretrain
student also gets a lexical part (kd/models/lexical.py) unless student.lexical_buckets says otherwise:
it beat the same student without one on both datasets (docs/benchmarks/quality.md).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass

from kd.config.settings import Config
from kd.data.splits import Splits
from kd.data.transfer import read_texts
from kd.errors import KDError
from kd.files import staged_folder
from kd.models.hub import load_model_config, missing_weights
from kd.models.lexical_bert import DEFAULT_BUCKETS
from kd.runtime.context import RunContext
from kd.runtime.report import write_json
from kd.student.pretrain import PRETRAIN_SEED, pretrain_encoder, pretraining_key

SUMMARY_FILE = "pretrain.json"  # beside the cached encoder: what its pre-training did


@dataclass
class StudentStart:
    cfg: Config  # the run's config, the student starting from the pre-trained encoder where there is one
    pretraining: dict | None  # what the pre-training did (kd-pretrain), else None
    learned: list[str]  # texts beside the train texts its word embeddings learned from (pretrain.files)


def resolve_init(cfg: Config) -> tuple[Config, str]:
    """cfg with student.init=auto replaced by the recipe it picks and student.lexical_buckets=None
    by its value for that recipe, and a line that says which."""
    init, line = _pick_init(cfg)
    buckets = cfg.student.lexical_buckets
    if buckets is None:
        buckets = DEFAULT_BUCKETS if init == "kd-pretrain" else 0
    if buckets:
        line += f"; with a lexical part of {buckets:,} rows (student.lexical_buckets; 0: without)"
    return dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, init=init, lexical_buckets=buckets)), line


def _pick_init(cfg: Config) -> tuple[str, str]:
    student, teacher = cfg.student, cfg.teacher
    pre_training = (f"pre-trained by distillation from {teacher.name}'s pretrained encoder on the train texts"
                    + (" and pretrain.files" if cfg.pretrain.files else ""))
    if student.init == "kd-pretrain":
        return student.init, f"student.init=kd-pretrain: {pre_training}"
    if student.init != "auto":
        return student.init, f"student.init={student.init}"
    if not missing_weights(student.name):
        init, why = "pretrained", f"{student.name}'s pretrained weights"
    elif (teacher.init == "pretrained" and not teacher.soft_targets and not missing_weights(teacher.name)
          and _shares_vocab_and_fits(student.name, teacher.name)):
        init, why = "kd-pretrain", f"no pretrained weights for {student.name}: {pre_training}"
    else:
        init, why = "pretrained", f"{student.name}'s pretrained weights (no teacher to pre-train it from)"
    return init, f"student.init=auto -> {init}: {why}"


def _shares_vocab_and_fits(student_name: str, teacher_name: str) -> bool:
    student, teacher = load_model_config(student_name), load_model_config(teacher_name)
    return student.vocab_size == teacher.vocab_size and student.hidden_size <= teacher.hidden_size


def student_start(ctx: RunContext, data: Splits) -> StudentStart:
    """The pre-training stage: for student.init=kd-pretrain the cached pre-trained encoder, or
    pre-train it now (in the run folder, resumable, then cached); other starts need none."""
    cfg = ctx.cfg
    if cfg.student.init != "kd-pretrain":
        return StudentStart(cfg, None, [])
    files = read_texts(cfg.pretrain.files, "pretrain.files")
    key = pretraining_key(cfg, [data.train.texts, files], ctx.accelerator.mixed_precision)
    cached = ctx.cache_dir / "pretrained_students" / key
    if (cached / SUMMARY_FILE).is_file():
        summary = json.loads((cached / SUMMARY_FILE).read_text(encoding="utf-8"))
        ctx.reporter.print(f"student: pre-trained encoder from the cache, {cached} ({summary['texts']:,} texts, "
                           f"{len(summary['train_loss'])} epochs)")
    else:
        folder = ctx.run_dir / "pretrained_student"
        texts = sorted(set(data.train.texts) | set(files))  # pre-training itself reads them all
        summary = pretrain_encoder(ctx.with_config(dataclasses.replace(cfg, seed=PRETRAIN_SEED)), texts, folder)
        if ctx.is_main:
            with staged_folder(cached) as staging:
                shutil.copytree(folder, staging, dirs_exist_ok=True)
                write_json(staging / SUMMARY_FILE, summary)
            shutil.rmtree(folder)
        ctx.accelerator.wait_for_everyone()
    if not (cached / "config.json").is_file():
        raise KDError(f"the pre-trained student {cached} holds no config.json: remove the folder to pre-train again")
    student = dataclasses.replace(cfg.student, name=str(cached), init="pretrained", num_layers=None, layers=None)
    return StudentStart(dataclasses.replace(cfg, student=student), {"path": str(cached), **summary}, files)
