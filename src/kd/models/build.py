"""The four ways to initialise a classifier, and what kd needs to know of a model.

`pretrained` loads hub (or local) weights; `random` builds the architecture from its
config; `teacher-layers` keeps K layers of the pretrained (not fine-tuned) teacher,
as DistilBERT was initialised from BERT; `teacher-embeddings` is `random` with the
pretrained teacher's embedding tables reduced to the student's width by PCA, for a
narrower student. Known aliases also work offline with `random` init (kd.models.hub).
"""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig

import kd.models.lexical  # noqa: F401  registers kd-lexical-bert with transformers' Auto classes
from kd.errors import KDError
from kd.models.folder import SINGLE_LABEL
from kd.models.hub import load_model_config, resolve_name


def label_kwargs(label_names: list[str]) -> dict:
    return {"num_labels": len(label_names), "problem_type": "multi_label_classification",
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)}}


def _from_pretrained(name: str, label_names: list[str] | None, role: str):
    """The pretrained weights of `name`: a classifier for `label_names`, or with None the bare encoder."""
    model_id = resolve_name(name)
    try:
        if label_names is None:
            return AutoModel.from_pretrained(model_id)
        return AutoModelForSequenceClassification.from_pretrained(model_id, **label_kwargs(label_names))
    except OSError as err:
        alternatives = ("" if label_names is None else ", or use teacher.init=random" if role == "teacher"
                        else ", or use student.init=random or student.init=teacher-layers")
        raise KDError(f"cannot load pretrained weights of {role} '{name}' ({model_id}): "
                      f"{str(err).splitlines()[0]} Offline, point HF_HUB_CACHE at a cache that has "
                      f"them{alternatives}.") from None


def _random_model(name: str, label_names: list[str], num_layers: int | None):
    config = load_model_config(name)
    config.update(label_kwargs(label_names))
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    return AutoModelForSequenceClassification.from_config(config)


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """DistilBERT's choice: every (total/keep)-th layer from the bottom, e.g. 6 -> 2 keeps [0, 3]."""
    if not 1 <= keep <= total:
        raise KDError(f"cannot keep {keep} of the teacher's {total} layers")
    return [int(i * total / keep) for i in range(keep)]


def _teacher_layers_model(teacher_name: str, label_names: list[str], keep: list[int]):
    """A shallower copy of the pretrained teacher: embeddings plus the chosen layers."""
    full = _from_pretrained(teacher_name, label_names, "teacher (for teacher-layers)")
    total = full.config.num_hidden_layers
    if any(not 0 <= k < total for k in keep) or len(set(keep)) != len(keep):
        raise KDError(f"student.layers {keep} must be distinct layer indices in 0..{total - 1}")
    config = full.config.__class__.from_dict(full.config.to_dict())
    config.num_hidden_layers = len(keep)
    student = AutoModelForSequenceClassification.from_config(config)
    renumber = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in full.state_dict().items():
        match = re.search(r"\.layer\.(\d+)\.", key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[key.replace(match.group(0), f".layer.{renumber[int(match.group(1))]}.", 1)] = value
    student.load_state_dict(state, strict=True)
    return student

TEACHER_INITS = ("teacher-layers", "teacher-embeddings", "kd-pretrain")  # built from the pretrained teacher, read with its tokenizer


def _projected_embeddings_model(name: str, teacher_name: str, label_names: list[str],
                                num_layers: int | None):
    """A random-init `name` whose word, position and token-type embeddings are the pretrained
    teacher's, mapped to its narrower width by the top principal directions of the teacher's word
    table. One linear map for all three keeps their sum the projection of the teacher's."""
    student = _random_model(name, label_names, num_layers)
    t_emb = _from_pretrained(teacher_name, None, "teacher (for teacher-embeddings)").embeddings
    s_emb = student.base_model.embeddings
    words = t_emb.word_embeddings.weight.detach()
    width = student.config.hidden_size
    if words.shape[0] != s_emb.word_embeddings.weight.shape[0] or width > words.shape[1]:
        raise KDError(f"init=teacher-embeddings needs the teacher's vocab and a width up to the teacher's: "
                      f"student '{name}' has {s_emb.word_embeddings.weight.shape[0]} tokens x {width}, "
                      f"teacher '{teacher_name}' {words.shape[0]} x {words.shape[1]}")
    _, _, directions = torch.linalg.svd(words - words.mean(dim=0), full_matrices=False)
    projection = directions[:width].T  # [teacher width, student width]
    with torch.no_grad():
        for key, table in s_emb.named_children():
            source = getattr(t_emb, key, None)
            if isinstance(table, torch.nn.Embedding) and isinstance(source, torch.nn.Embedding):
                rows = min(table.num_embeddings, source.num_embeddings)
                table.weight[:rows] = source.weight[:rows] @ projection
    return student


def build_model(name: str, init: str, label_names: list[str], role: str = "student",
                num_layers: int | None = None, layers: list[int] | None = None,
                teacher_name: str | None = None):
    """A multi-label classifier for `label_names`, initialised as `init` says."""
    if init == "pretrained":
        if num_layers is not None:
            raise KDError(f"{role}.num_layers needs init=random or init=teacher-layers")
        return _from_pretrained(name, label_names, role)
    if init == "random":
        return _random_model(name, label_names, num_layers)
    if init in TEACHER_INITS and teacher_name is None:
        raise KDError(f"init={init} needs a teacher")
    if init == "teacher-embeddings":
        return _projected_embeddings_model(name, teacher_name, label_names, num_layers)
    if init == "teacher-layers":
        teacher_config = load_model_config(teacher_name)
        student_config = load_model_config(name)
        if student_config.hidden_size != teacher_config.hidden_size:
            raise KDError(f"init=teacher-layers needs equal hidden sizes: student '{name}' has "
                          f"{student_config.hidden_size}, teacher '{teacher_name}' has "
                          f"{teacher_config.hidden_size}. Use --student {teacher_name} with "
                          f"student.num_layers=K, or student.init=random.")
        keep = layers or evenly_spaced_layers(teacher_config.num_hidden_layers,
                                              num_layers or student_config.num_hidden_layers)
        return _teacher_layers_model(teacher_name, label_names, keep)
    raise KDError(f"unknown init {init!r}: use pretrained, teacher-layers, teacher-embeddings or random")


def classifier_head(model) -> torch.nn.Linear:
    """The final linear layer that produces one logit per label."""
    heads = [m for m in model.modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels]
    if not heads:
        raise KDError(f"{type(model).__name__} has no linear layer with one output per label")
    return heads[-1]


def set_single_label(model, single_label: bool) -> None:
    """problem_type single_label_classification (softmax over classes) or multi-label (sigmoids);
    it is saved in config.json, where kd and transformers' pipeline read it."""
    model.config.problem_type = SINGLE_LABEL if single_label else "multi_label_classification"


def is_single_label(model) -> bool:
    return model.config.problem_type == SINGLE_LABEL


def init_prior_bias(model, labels: np.ndarray) -> None:
    """Set the head's bias to each label's prior log-odds (single-label: log class priors), so
    training starts at the base rates."""
    prior = np.clip(labels.mean(axis=0), 1e-4, 1 - 1e-4)
    bias = np.log(prior) if is_single_label(model) else np.log(prior / (1 - prior))
    with torch.no_grad():
        classifier_head(model).bias.copy_(torch.from_numpy(bias))


def default_lr(model, batch_size: int = 32) -> float:
    """A learning rate that suits the model's width and the batch: at batch 32, 1e-3 at hidden
    128 down to 5e-5 at 768, scaled by sqrt(batch_size / 32) for other batches.

    The width points were measured (BERT-Tiny 1e-3, MiniLM-L6 1.5e-4, DistilBERT 5e-5) and are
    interpolated on a log scale; the square-root batch scaling was measured for BERT-Tiny on
    GoEmotions at batch 64 (docs/benchmarks/training.md).
    """
    hidden, lr = np.log([128, 384, 768]), np.log([1e-3, 1.5e-4, 5e-5])  # clamped beyond the ends
    return float(np.exp(np.interp(math.log(model.config.hidden_size), hidden, lr)) * math.sqrt(batch_size / 32))


def accepts_token_type_ids(model) -> bool:
    """DistilBERT's forward takes no token_type_ids; BERT's does."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def label_names(model) -> list[str]:
    """The model's label names in output order."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def load_encoder(name: str):
    """The pretrained encoder of `name` without a head (alias, hub id, or a folder, a classifier's too)."""
    return _from_pretrained(name, None, "teacher (for kd pretrain)")


def check_positions(max_length: int, configs: dict[str, PretrainedConfig]) -> None:
    """Refuse a max_length beyond the position embeddings of a model ({who: config})."""
    for who, config in configs.items():
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise KDError(f"data.max_length={max_length} is beyond the {positions} position embeddings "
                          f"of the {who}; set data.max_length={positions} or less")
