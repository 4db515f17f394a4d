"""The teacher's scores from a file computed anywhere (`teacher.soft_targets`: an LLM's zero-shot
probabilities, an ensemble's logits): no teacher model is loaded at all. One column per label,
rows keyed by an `id` column or in the train file's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kd.data.tables import read_any_table
from kd.data.texts import LabeledTexts
from kd.errors import KDError


def _score_columns(path: Path) -> dict[str, list]:
    """{column: values} of a CSV, TSV, JSON-lines or Parquet file."""
    table = read_any_table(path)
    header, rows = table.rows[0], table.rows[1:]
    return {name: [row[j] for row in rows] for j, name in enumerate(header)}


def file_soft_targets(path: str | Path, train: LabeledTexts, kind: str) -> torch.Tensor:
    """The teacher's logits for every train row from `path`: one column per label (probabilities
    or logits, as `kind` says), rows matched by an `id` column when the file and the data both have
    ids, else one row per data row of the train file, in order. A missing label, row or id, or a
    value that is no number (or, for probabilities, outside [0, 1]) is an error naming it."""
    path = Path(path)
    columns = _score_columns(path)
    missing = [name for name in train.label_names if name not in columns]
    if missing:
        raise KDError(f"{path} has no column for label(s) {missing}; it has {list(columns)}")
    scores = np.empty((len(next(iter(columns.values()))), len(train.label_names)), dtype=np.float64)
    for j, name in enumerate(train.label_names):
        try:
            scores[:, j] = np.array(columns[name], dtype=np.float64)  # one conversion per column
        except (TypeError, ValueError):
            for i, value in enumerate(columns[name]):  # name the first value that is no number
                try:
                    float(value)
                except (TypeError, ValueError):
                    raise KDError(f"{path}: row {i + 1}, label '{name}' holds {value!r}, not a number") from None
    bad = ~np.isfinite(scores) | ((scores < 0) | (scores > 1) if kind == "probabilities" else False)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise KDError(f"{path}: row {i + 1}, label '{train.label_names[j]}' holds {scores[i, j]}, not a "
                      + ("probability in [0, 1] (teacher.soft_targets_kind=logits?)" if kind == "probabilities"
                         else "finite number"))
    return torch.from_numpy(_as_logits(scores[_row_order(path, columns, train)], kind, train.single_label)).float()


def _row_order(path: Path, columns: dict[str, list], train: LabeledTexts) -> np.ndarray:
    """For each train row, its row in the scores file."""
    if "id" in columns and train.ids is not None:
        where: dict[str, int] = {}
        for i, key in enumerate(map(str, columns["id"])):
            if where.setdefault(key, i) != i:
                raise KDError(f"{path}: id {key!r} is on rows {where[key] + 1} and {i + 1}")
        absent = [key for key in train.ids if key not in where]
        if absent:
            raise KDError(f"{path} has no row for {len(absent)} train id(s), e.g. {absent[:5]}")
        return np.array([where[key] for key in train.ids])
    count = len(next(iter(columns.values())))
    if count != train.file_rows or train.rows is None:
        raise KDError(f"{path} has {count} rows and the train file {train.file_rows}: give one row per train row, "
                      "in order, or an 'id' column matching the data's ids")
    return train.rows


def _as_logits(scores: np.ndarray, kind: str, single_label: bool) -> np.ndarray:
    if kind == "logits":
        return scores
    p = np.clip(scores, 1e-6, 1 - 1e-6)
    return np.log(p) if single_label else np.log(p / (1 - p))  # softmax is shift-invariant: log p is a logit
