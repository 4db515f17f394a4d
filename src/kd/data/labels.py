"""Label columns into a (rows, labels) 0/1 matrix, multi-label or single-label.

Multi-label data has one 0/1 column per label. Single-label (multi-class) data has one class
column (class names or ids; the classes become the labels, one-hot) or 0/1 columns with exactly
one 1 per row. `problem_type` "auto" reads one label column in which no value is 0 or 1 as a


class column (class names), and everything else as multi-label: a stray value in a 0/1 column
is an error, never a new class. Class ids (0, 1, 2, ...) need problem_type single_label. Without label column names, the columns
other than the text and id ones that hold only 0 and 1 are the labels; when none does and one
column is left, it is the class column.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kd.data.tables import lines_text
from kd.errors import KDError

PROBLEM_TYPES = ("auto", "multi_label", "single_label")
BINARY = ("0", "1")


@dataclass
class Labels:
    matrix: np.ndarray  # (rows, labels) float32 of 0/1
    names: list[str]
    single_label: bool
    class_column: str | None = None  # the column the classes came from (single-label)


def infer_label_columns(path, header: list[str], rows: list[list[str]], exclude: list[str]) -> list[str]:
    """The 0/1 columns among those not excluded, or the one column left (a class column)."""
    others = [c for c in header if c not in exclude]
    binary = [c for c in others if all(row[header.index(c)].strip() in BINARY for row in rows)]
    if binary:
        return binary
    if len(others) == 1:
        return others
    raise KDError(f"{path}: cannot tell the label columns: none of {others} holds only 0 and 1; "
                  "name them (data.label_columns, or --label-columns A,B)")


def read_labels(path, values: list[list[str]], columns: list[str], lines: list[int], problem_type: str,
                classes: list[str] | None = None) -> Labels:
    """`values[row][j]`: the text of label column `columns[j]` on the row that starts on `lines[row]`.
    `classes`: the class names in the model's order (a val or evaluation file of single-label data)."""
    if problem_type not in PROBLEM_TYPES:
        raise KDError(f"data.problem_type must be one of {list(PROBLEM_TYPES)}, got {problem_type!r}")
    raw = np.array([[v.strip() for v in row] for row in values], dtype=object).reshape(len(values), len(columns))
    no_binary = not np.isin(raw, BINARY).any()
    if len(columns) == 1 and (classes is not None or problem_type == "single_label"
                              or (problem_type == "auto" and no_binary)):
        return _class_column(path, raw[:, 0], columns[0], lines, classes)
    bad = ~np.isin(raw, BINARY)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise KDError(f"{path}: label values must be 0 or 1; line {lines[row]} column '{columns[col]}' holds "
                      f"{raw[row, col]!r}" + (" (one class column: set data.problem_type=single_label)"
                                              if len(columns) == 1 else ""))
    matrix = (raw == "1").astype(np.float32)
    if problem_type == "single_label":
        check_one_class_per_row(path, matrix, lines)
    return Labels(matrix, list(columns), problem_type == "single_label")


def check_one_class_per_row(path, matrix: np.ndarray, lines: list[int]) -> None:
    bad = np.flatnonzero(matrix.sum(axis=1) != 1)
    if len(bad):
        raise KDError(f"{path}: single-label data needs exactly one label per row; "
                      f"{lines_text([lines[i] for i in bad])} hold{'s' if len(bad) == 1 else ''} another number")


def class_order(classes) -> list[str]:
    """Class names sorted, numbers by value (2 before 10)."""
    return sorted(classes, key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c))


def _class_column(path, values: np.ndarray, column: str, lines: list[int], classes: list[str] | None) -> Labels:
    empty = [lines[i] for i, v in enumerate(values) if not v]
    if empty:
        raise KDError(f"{path}: column '{column}' has no class on {lines_text(empty)}")
    found = set(values.tolist())
    if classes is None:
        classes = class_order(found)
        if len(classes) < 2:
            raise KDError(f"{path}: column '{column}' holds one class only ({classes[0]!r}); "
                          "a classifier needs two or more")
    unknown = [i for i, v in enumerate(values) if v not in classes]
    if unknown:
        raise KDError(f"{path}: {lines_text([lines[i] for i in unknown])} of column '{column}' hold "
                      f"class(es) {sorted({values[i] for i in unknown})} that the model does not know "
                      f"(its classes: {classes})")
    index = {name: j for j, name in enumerate(classes)}
    matrix = np.zeros((len(values), len(classes)), dtype=np.float32)
    matrix[np.arange(len(values)), [index[v] for v in values]] = 1.0
    return Labels(matrix, list(classes), True, column)


def class_ids(names: list[str]) -> list[str]:
    """The class ids data.class_names names: 0, 1, 2, ... one per name."""
    return [str(k) for k in range(len(names))]


def name_classes(data, names: list[str] | None):
    """LabeledTexts read with class_ids(names) as its classes, its classes called `names`
    (data.class_names: id k is the k-th name); `names` None: as they are."""
    if names is None:
        return data
    if len(set(names)) != len(names):
        raise KDError(f"data.class_names names a class twice: {names}")
    if not data.class_column:
        raise KDError("data.class_names names the class ids of one class column (single-label data); "
                      f"these labels come from {len(data.label_names)} 0/1 column(s): name those columns instead")
    return dataclasses.replace(data, label_names=list(names))
