"""Run configuration: typed dataclasses, every numeric setting with its range.

Precedence, lowest first: the dataclass defaults (mirrored by configs/base.yaml),
each `--config` file in order, then `key=value` overrides (read by kd.config.sources).
Unknown keys, values of the wrong type and values out of range are errors. The
resolved config is saved beside every run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from kd.config.sources import merge, parse_override, read_yaml_mapping
from kd.errors import KDError

SAMPLE_DIR = "data/goemotions-sample"
MIN_MAX_LENGTH = 8  # tokens: [CLS], [SEP] and a few words
SEED_RANGE = (0, 2**32 - 1)  # what numpy's global seed takes


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; every float must also be finite."""
    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        return (math.isfinite(value) and (value > self.low if self.open_low else value >= self.low)
                and (value < self.high if self.open_high else value <= self.high))

    def __str__(self) -> str:
        def number(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"
        high = "inf)" if math.isinf(self.high) else f"{number(self.high)}{')' if self.open_high else ']'}"
        return f"{'(' if self.open_low else '['}{number(self.low)}, {high}"


POSITIVE, AT_LEAST_0, AT_LEAST_1 = Range(0, open_low=True), Range(0), Range(1)
FRACTION = Range(0, 1)
SEED = Range(*SEED_RANGE)
SpeedupName = Literal["fused_adamw", "cls_only_last_layer", "sparse_embedding_gradient"]  # kd/training/speedups.py


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Every numeric setting in its RANGES entry (lists item by item), every float finite,
    recursively through nested config dataclasses."""
    ranges = getattr(obj, "RANGES", {})
    for item in dataclasses.fields(obj):
        value, key = getattr(obj, item.name), f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
            continue
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue
            allowed = ranges.get(item.name, Range(-math.inf))
            if not allowed.holds(number):
                raise KDError(f"{key} must be in {allowed}, got {value}")


def check_delimiter(delimiter: str | None) -> None:
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise KDError(f"data.delimiter must be one character other than a double quote or a line break "
                      f"(e.g. ',', ';', '\\t', '|'), got {delimiter!r}")


@dataclass
class DataConfig:
    format: Literal["jigsaw", "csv", "goemotions"] = "goemotions"
    train: str = f"{SAMPLE_DIR}/train.tsv"
    val: str | None = f"{SAMPLE_DIR}/dev.tsv"
    text_column: str = "comment_text"
    label_columns: list[str] = field(default_factory=list)
    labels_file: str | None = f"{SAMPLE_DIR}/emotions.txt"
    delimiter: str | None = None
    id_column: str | None = None
    empty_texts: Literal["error", "drop"] = "error"
    quoting: Literal["csv", "none"] = "csv"  # none: double quotes are ordinary characters
    problem_type: Literal["auto", "multi_label", "single_label"] = "auto"  # kd/data/labels.py
    class_names: list[str] | None = None  # names of a class column's classes (ids 0, 1, 2, ... in order)
    val_fraction: float = 0.2
    split_seed: int = 42
    max_length: int = 200
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    num_proc: int = 1  # tokenizer processes (kd/data/tokens.py)
    RANGES: ClassVar[dict[str, Range]] = {
        "val_fraction": Range(0, 1, open_low=True, open_high=True), "split_seed": SEED,
        "max_length": Range(MIN_MAX_LENGTH), "max_train_samples": AT_LEAST_1, "max_val_samples": AT_LEAST_1,
        "num_proc": AT_LEAST_1}

    def validate(self) -> None:
        check_delimiter(self.delimiter)
        if self.format == "goemotions" and not self.labels_file:
            raise KDError("data.format=goemotions needs data.labels_file (one label name per line)")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float | None = None  # None: from the model's hidden size and the batch (models.default_lr)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    prior_bias_init: bool = True
    select_by: Literal["bce", "macro_auc"] = "bce"
    save_every_steps: int = 200  # resumable state every N batches (0: only after each epoch)
    group_by_length: bool = True  # batches of similar lengths: less padding
    pad_to_multiple_of: int | None = None  # batch widths; None: 8 in mixed precision, else 1 (kd/training/loop.py)
    lazy_embedding_update: bool = False  # AdamW updates only the word-embedding rows a batch uses
    speedups: list[SpeedupName] | None = None  # None: this device's defaults (kd/training/speedups.py)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: rare classes weigh more in the label loss
    RANGES: ClassVar[dict[str, Range]] = {
        "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "eval_batch_size": AT_LEAST_1, "lr": POSITIVE,
        "weight_decay": AT_LEAST_0, "warmup_ratio": Range(0, 1, open_high=True),
        "max_grad_norm": AT_LEAST_0, "save_every_steps": AT_LEAST_0, "pad_to_multiple_of": AT_LEAST_1}


@dataclass
class TeacherConfig:
    name: str = "distilbert"
    init: Literal["pretrained", "random"] = "pretrained"
    path: str | None = None  # an already fine-tuned teacher folder: training is skipped
    soft_targets: str | None = None  # a file of the teacher's per-label scores (CSV, TSV, JSONL, Parquet): no teacher model
    soft_targets_kind: Literal["probabilities", "logits"] = "probabilities"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3))


@dataclass
class StudentConfig:
    name: str = "bert-tiny"
    init: Literal["auto", "pretrained", "kd-pretrain", "teacher-layers", "teacher-embeddings", "random"] = "auto"
    num_layers: int | None = None  # override the depth (random) or choose K (teacher-layers)
    layers: list[int] | None = None  # teacher-layers: which teacher layers to keep
    lexical_buckets: int | None = None  # a lexical part of this many rows (kd/models/lexical.py); None: kd-pretrain's, else 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, batch_size=64))
    RANGES: ClassVar[dict[str, Range]] = {"num_layers": AT_LEAST_1, "layers": AT_LEAST_0, "lexical_buckets": AT_LEAST_0}


def check_layer_map(layer_map: list[list[int]] | None, key: str) -> None:
    for pair in layer_map or []:
        if len(pair) != 2 or min(pair) < 0:
            raise KDError(f"{key} holds [student_layer, teacher_layer] pairs of layer numbers >= 0 "
                          f"(0: the embeddings), got {pair}")


@dataclass
class DistillConfig:
    alpha: float = 0.5
    temperature: float = 2.0
    final_temperature: float | None = None  # None: constant; else annealed linearly to this value
    transfer_files: list[str] = field(default_factory=list)  # unlabelled texts, one per line
    augment_copies: int = 0  # augmented copies of each train text, labelled by the teacher
    augment_mask_prob: float = 0.1
    augment_ngram_prob: float = 0.25
    extra_teachers: list[str] = field(default_factory=list)  # more fine-tuned teacher folders
    teacher_weights: list[float] = field(default_factory=list)  # main teacher first; []: equal
    hidden_weight: float = 0.0  # beta: student hidden states matched to the teacher's (teacher online)
    hidden_loss: Literal["mse", "cosine"] = "mse"
    attention_weight: float = 0.0  # attention maps matched (KL); needs equal head counts
    layer_map: list[list[int]] | None = None  # [[student_layer, teacher_layer], ...]; None: evenly spaced
    RANGES: ClassVar[dict[str, Range]] = {
        "alpha": FRACTION, "temperature": POSITIVE, "final_temperature": POSITIVE, "augment_copies": AT_LEAST_0,
        "augment_mask_prob": FRACTION, "augment_ngram_prob": FRACTION, "teacher_weights": AT_LEAST_0,
        "hidden_weight": AT_LEAST_0, "attention_weight": AT_LEAST_0}

    @property
    def matches_layers(self) -> bool:
        """Hidden states or attention maps are matched: the teacher runs at every student step."""
        return self.hidden_weight > 0 or self.attention_weight > 0

    def validate(self) -> None:
        if (self.transfer_files or self.augment_copies) and self.alpha == 0.0:
            raise KDError("a transfer set (distill.transfer_files, distill.augment_copies) needs "
                          "distill.alpha > 0: its texts have only the teacher's soft targets")
        if self.teacher_weights and (len(self.teacher_weights) != 1 + len(self.extra_teachers)
                                     or sum(self.teacher_weights) <= 0):
            raise KDError(f"distill.teacher_weights needs one weight >= 0 per teacher (the main one first, "
                          f"then {len(self.extra_teachers)} extra), not all 0; got {self.teacher_weights}")
        check_layer_map(self.layer_map, "distill.layer_map")


@dataclass
class PretrainConfig:
    """`kd pretrain`: the student's layers learn, on unlabelled text and before any task, to
    reproduce the pretrained teacher's hidden states (general distillation) and, with
    relation_weight > 0, its last layer's self-attention relations (MiniLMv2)."""
    files: list[str] = field(default_factory=list)  # unlabelled texts, one per line (kd-pretrain: with the train texts)
    layer_map: list[list[int]] | None = None  # [[student_layer, teacher_layer], ...]; None: evenly spaced
    hidden_loss: Literal["mse", "cosine"] = "mse"
    hidden_weight: float = 1.0  # the hidden-state loss at layer_map's pairs
    relation_weight: float = 0.0  # the last layers' query-query, key-key, value-value relations (KL)
    relation_heads: int = 16  # relation heads: must divide the student's and the teacher's widths
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=64))
    RANGES: ClassVar[dict[str, Range]] = {"hidden_weight": AT_LEAST_0, "relation_weight": AT_LEAST_0,
                                          "relation_heads": AT_LEAST_1}

    def validate(self) -> None:
        check_layer_map(self.layer_map, "pretrain.layer_map")
        if self.hidden_weight == 0 and self.relation_weight == 0:
            raise KDError("kd pretrain needs a loss: pretrain.hidden_weight or pretrain.relation_weight > 0")


@dataclass
class Config:
    seed: int = 42
    output_dir: str = "checkpoints"
    run_name: str | None = None
    cache_dir: str = "checkpoints/cache"
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    log_with: Literal["none", "tensorboard", "mlflow", "wandb"] = "none"  # Accelerate's experiment trackers
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    RANGES: ClassVar[dict[str, Range]] = {"seed": SEED}

    def validate(self) -> Config:
        check_ranges(self)
        self.data.validate()
        self.distill.validate()
        self.pretrain.validate()
        self._check_soft_targets_file()
        if self.student.layers is not None:
            if self.student.init != "teacher-layers":
                raise KDError("student.layers applies only to student.init=teacher-layers")
            if self.student.num_layers not in (None, len(self.student.layers)):
                raise KDError("student.layers and student.num_layers disagree")
        return self

    def _check_soft_targets_file(self) -> None:
        """teacher.soft_targets replaces the teacher model: nothing may need one."""
        if not self.teacher.soft_targets:
            return
        needs_model = [key for key, on in [
            ("teacher.path", self.teacher.path), ("distill.transfer_files", self.distill.transfer_files),
            ("distill.augment_copies", self.distill.augment_copies), ("distill.extra_teachers", self.distill.extra_teachers),
            ("distill.hidden_weight / attention_weight", self.distill.matches_layers)] if on]
        if needs_model:
            raise KDError(f"teacher.soft_targets takes the teacher's scores from a file, without a teacher model; "
                          f"{', '.join(needs_model)} need one")
        if self.distill.alpha == 0:
            raise KDError("teacher.soft_targets needs distill.alpha > 0: with alpha 0 the student never sees them")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(files: list[str | Path] = (), overrides: list[str] = (),
                updates: list[dict[str, Any]] = ()) -> Config:
    """Build a validated Config from defaults, YAML files, nested `updates` (dicts shaped like
    a config file) and key=value overrides, in that order."""
    config = Config()
    for path in files:
        merge(config, read_yaml_mapping(path, "config file"))
    for update in updates:
        merge(config, update)
    for text in overrides:
        merge(config, parse_override(text))
    return config.validate()


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
