"""Train and val as the config says: a val file, or a seeded split of train; read once into
memory-mapped columns in the cache (kd.data.stored) when given a store folder."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from kd.config.settings import DataConfig
from kd.data.formats import _read_one, read_labeled
from kd.data.labels import class_ids, name_classes
from kd.data.stored import read_stored
from kd.data.texts import LabeledTexts
from kd.errors import KDError
from kd.files import file_digest


class Splits(NamedTuple):
    """The data stage's result: the rows a run trains on and the rows it evaluates on."""
    train: LabeledTexts
    val: LabeledTexts


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split of range(n) into (train rows, val rows)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_splits(cfg: DataConfig, store: Path | None = None) -> Splits:
    """Train and val as the config says: a val file, or a seeded split of train. With a `store`
    folder, the files are read into memory-mapped columns there once (kd.data.stored)."""
    def read(path: str, columns: list[str], problem_type: str, classes: list[str] | None = None) -> LabeledTexts:
        settings = (cfg.format, cfg.text_column, columns, cfg.labels_file, cfg.delimiter, cfg.id_column,
                    cfg.empty_texts, cfg.quoting, problem_type)
        if store is None:
            return read_labeled(path, *settings, classes)
        labels_file = file_digest([cfg.labels_file]) if cfg.labels_file else None
        return read_stored(path, store, lambda one, known: _read_one(one, *settings, known or classes),
                           {"settings": settings, "labels_file": labels_file, "classes": classes})

    named = class_ids(cfg.class_names) if cfg.class_names else None  # ids 0, 1, 2, ... to be named
    train = read(cfg.train, cfg.label_columns, "single_label" if named else cfg.problem_type, named)
    _check_rows(train, cfg.train, "train")
    if cfg.val:  # with the train file's label columns and classes
        if train.class_column:
            val = read(cfg.val, [train.class_column], "single_label", train.label_names)
        else:
            val = read(cfg.val, cfg.label_columns or (train.label_names if cfg.format == "csv" else []),
                       "single_label" if train.single_label else "multi_label")
        if val.label_names != train.label_names:
            raise KDError(f"train and val have different labels: {train.label_names} vs {val.label_names}")
        _check_rows(val, cfg.val, "val")
    else:
        if len(train) < 2:
            raise KDError(f"{cfg.train}: need at least 2 rows to split off a validation set")
        train_rows, val_rows = split_rows(len(train), cfg.val_fraction, cfg.split_seed)
        if not len(train_rows):
            raise KDError(f"data.val_fraction={cfg.val_fraction} of {len(train)} rows leaves no train rows")
        train, val = train.take(train_rows), train.take(val_rows)
        val.dropped = 0  # the file's count stays with train
    train, val = (name_classes(data, cfg.class_names) for data in (train, val))
    return Splits(_sample(train, cfg.max_train_samples, cfg.split_seed),
                  _sample(val, cfg.max_val_samples, cfg.split_seed + 1))


def _check_rows(data: LabeledTexts, path: str, split: str) -> None:
    """A split with no row left (every text empty and dropped) is refused before anything trains."""
    if not len(data):
        raise KDError(f"{path}: no {split} row is left: all {data.dropped:,} text(s) are empty and "
                      "data.empty_texts=drop left them out")


def _sample(data: LabeledTexts, size: int | None, seed: int) -> LabeledTexts:
    """`size` rows drawn at random with `seed` (kept in file order), or all of them: the first rows
    of a file sorted by label would hold one label only."""
    if not size or size >= len(data):
        return data
    return data.take(np.sort(np.random.default_rng(seed).choice(len(data), size, replace=False)))
