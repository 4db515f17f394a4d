"""Model folders written and read back: a classifier with its tokenizer and thresholds, or an
encoder alone (what `kd pretrain` leaves), each written whole or not at all."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd.errors import KDError
from kd.files import staged_folder
from kd.models.build import is_single_label, label_names
from kd.models.folder import read_decision, write_decision


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**20


def save_classifier(model, tokenizer, decision: np.ndarray | None, folder: Path) -> None:
    """A save_pretrained folder plus its decision rule (per-label thresholds, or a single-label
    model's class offsets: kd.models.folder), written whole or not at all."""
    names = label_names(model)
    with staged_folder(Path(folder)) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_decision(staging, names, decision, is_single_label(model))


def save_encoder(model, tokenizer, folder: Path) -> None:
    """A classifier's encoder without its head, with the tokenizer, as a save_pretrained folder
    that `init=pretrained` starts a classifier from; written whole or not at all."""
    with staged_folder(Path(folder)) as staging:
        model.base_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def load_classifier(folder: str | Path, **model_kwargs):
    """(model, tokenizer, decision rule: thresholds or class offsets) from a folder written by
    save_classifier."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise KDError(f"not a model folder (no config.json): {folder}")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, pickle.UnpicklingError) as err:  # weights_only refuses code
        raise KDError(f"cannot load the model in {folder}: {str(err).splitlines()[0]}") from None
    return model.eval(), tokenizer, read_decision(folder, label_names(model), is_single_label(model))
