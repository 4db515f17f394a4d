"""Labelled text files in: the three formats, each read strictly into LabeledTexts.

`jigsaw` (Kaggle train.csv), `csv` (a text column and label columns, from a CSV, TSV, JSON-lines
or Parquet file; kd.data.labels reads the labels) and `goemotions` (TSV without header: text,
comma-separated label ids, id; label names from a file). A file name may be a glob of shards,
read as one file. kd.data.tables parses the files.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from kd.data.labels import (
    Labels,
    check_one_class_per_row,
    class_order,
    infer_label_columns,
    read_labels,
)
from kd.data.tables import (
    RECORD_SUFFIXES,
    Table,
    default_delimiter,
    delimiter_hint,
    expand,
    lines_text,
    read_records,
    read_table,
)
from kd.data.texts import LabeledTexts, blank
from kd.errors import KDError
from kd.files import read_text

JIGSAW_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def _finish(path: Path, table: Table, texts: list[str], labels: Labels, ids: list[str] | None,
            empty_texts: str) -> LabeledTexts:
    """Refuse duplicate ids; refuse or drop rows whose text is empty or invisible."""
    if ids is not None:
        first_row: dict[str, int] = {}
        repeated = []
        for row, i in enumerate(ids):
            if i in first_row:
                repeated.append((first_row[i], row))
            first_row.setdefault(i, row)
        if repeated:
            first, again = repeated[0]
            raise KDError(f"{path}: {len(repeated)} duplicate id(s), e.g. {ids[again]!r} on lines "
                          f"{table.lines[first]} and {table.lines[again]}")
    empty = [row for row, text in enumerate(texts) if blank(text)]
    if empty and empty_texts == "error":
        raise KDError(f"{path}: {len(empty)} empty text(s) on {lines_text([table.lines[r] for r in empty])} "
                      "(no visible character; set data.empty_texts=drop to leave them out)")
    keep = np.setdiff1d(np.arange(len(texts)), empty)
    return LabeledTexts([texts[i] for i in keep], labels.matrix[keep], labels.names, len(empty),
                        labels.single_label, labels.class_column, None if ids is None else [ids[i] for i in keep],
                        keep, len(texts))


def _check_unique(names: list[str], where: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise KDError(f"{where} names label {name!r} twice; every label needs its own name")
        seen.add(name)


def _read_columns(path: Path, text_column: str, label_columns: list[str], delimiter: str | None,
                  id_column: str | None, empty_texts: str, quoting: str, problem_type: str,
                  classes: list[str] | None) -> LabeledTexts:
    """A delimited file with a header; label columns named, or inferred (kd.data.labels)."""
    sep = delimiter if delimiter is not None else default_delimiter(path)
    keys = [text_column, *([id_column] if id_column else [])]
    wanted = keys + list(label_columns)
    seen: dict[str, set[str]] = {}

    def looks_like_row(fields: list[str], rows: list[list[str]]) -> bool:
        """Every label field holds a value that its column holds on the rows that were read."""
        header = rows[0]
        if len(fields) != len(header):
            return False
        for c in [h for h in header if h not in keys] if not label_columns else label_columns:
            if c not in header:
                return False
            j = header.index(c)
            values = seen.get(c) or seen.setdefault(c, {r[j].strip() for r in rows[1:] if len(r) == len(header)})
            if values <= {"0", "1"}:
                values = seen[c] = {"0", "1"}
            if fields[j].strip() not in values:
                return False
        return True

    def check_header(header: list[str], first_line: str) -> None:
        missing = [c for c in wanted if c not in header]
        if missing:
            raise KDError(f"{path}: missing column(s) {missing}; columns are {header}"
                          f"{delimiter_hint(first_line, sep, wanted)}")
        twice = sorted({c for c in wanted if header.count(c) > 1})
        if twice:
            raise KDError(f"{path}: the header names column(s) {twice} more than once; rename them")

    if path.suffix.lower() in RECORD_SUFFIXES:
        table = read_records(path)
        check_header(table.rows[0], "")
    else:
        table = read_table(path, sep, quoting, looks_like_row, check_header)
    header, rows = table.rows[0], table.rows[1:]
    if not rows:
        raise KDError(f"data file has no rows: {path}")
    table = Table(rows, table.lines[1:])
    columns = list(label_columns) or infer_label_columns(path, header, rows, [*keys, "id"])
    labels = read_labels(path, [[row[header.index(c)] for c in columns] for row in rows], columns, table.lines,
                         problem_type, classes)
    ids = [row[header.index(id_column)] for row in rows] if id_column else None
    return _finish(path, table, [row[header.index(text_column)] for row in rows], labels, ids, empty_texts)


def read_label_names(path: Path) -> list[str]:
    """One name per line; label ids count lines, so a blank line before the last name is an error."""
    names = [line.strip() for line in read_text(path, "labels file").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise KDError(f"labels file is empty: {path}")
    blank = [number for number, name in enumerate(names, 1) if not name]
    if blank:
        raise KDError(f"labels file {path}: {lines_text(blank)} blank; label ids count lines, so every "
                      "line up to the last name must hold a name")
    _check_unique(names, f"labels file {path}")
    return names

LABEL_IDS = re.compile(r"[0-9]+(,[0-9]+)*")


def _read_goemotions(path: Path, label_names: list[str], empty_texts: str, quoting: str,
                     problem_type: str) -> LabeledTexts:
    table = read_table(path, "\t", quoting, lambda fields, _: len(fields) in (2, 3)
                       and LABEL_IDS.fullmatch(fields[1].replace(" ", "")) is not None)
    if len(table.rows[0]) < 2:
        raise KDError(f"{path}: expected tab-separated text and label ids, found 1 column")
    labels = np.zeros((len(table.rows), len(label_names)), dtype=np.float32)
    for row, (line, fields) in enumerate(zip(table.lines, table.rows)):
        ids = fields[1].replace(" ", "")
        if not LABEL_IDS.fullmatch(ids):
            raise KDError(f"{path}: line {line} has unparseable label ids {fields[1]!r} "
                          "(comma-separated numbers, e.g. 3,17)")
        indices = [int(i) for i in ids.split(",")]
        if any(not 0 <= i < len(label_names) for i in indices):
            raise KDError(f"{path}: line {line} has label ids {ids!r} outside 0..{len(label_names) - 1}")
        labels[row, indices] = 1.0
    if problem_type == "single_label":
        check_one_class_per_row(path, labels, table.lines)
    ids = [fields[2] for fields in table.rows] if len(table.rows[0]) > 2 else None
    return _finish(path, table, [fields[0] for fields in table.rows],
                   Labels(labels, label_names, problem_type == "single_label"), ids, empty_texts)


def read_labeled(path: str | Path, fmt: str, text_column: str = "comment_text",
                 label_columns: list[str] | None = None, labels_file: str | Path | None = None,
                 delimiter: str | None = None, id_column: str | None = None,
                 empty_texts: str = "error", quoting: str = "csv", problem_type: str = "auto",
                 classes: list[str] | None = None) -> LabeledTexts:
    """One labelled file, or every file a glob matches (shards, in name order, read as one), in one
    of the supported formats: see _read_one. Shards of a class column share one set of classes."""
    def read(one: Path, known: list[str] | None) -> LabeledTexts:
        return _read_one(one, fmt, text_column, label_columns, labels_file, delimiter, id_column, empty_texts,
                         quoting, problem_type, known)

    shards = [read(one, classes) for one in expand(path)]
    if len(shards) == 1:
        return shards[0]
    if shards[0].class_column and classes is None:
        union = class_order({c for shard in shards for c in shard.label_names})
        shards = [read(one, union) for one in expand(path)]
    for one, shard in zip(expand(path), shards):
        if shard.label_names != shards[0].label_names or shard.single_label != shards[0].single_label:
            raise KDError(f"{one} has labels {shard.label_names}, the first shard {shards[0].label_names}")
    ids = None if shards[0].ids is None else [i for shard in shards for i in shard.ids]
    if ids is not None and len(set(ids)) < len(ids):
        seen: set[str] = set()
        again = next(i for i in ids if i in seen or seen.add(i))
        raise KDError(f"{path}: id {again!r} is in more than one shard")
    offsets = np.cumsum([0] + [shard.file_rows for shard in shards[:-1]])
    return dataclasses.replace(
        shards[0], texts=[t for shard in shards for t in shard.texts],
        labels=np.concatenate([shard.labels for shard in shards]), dropped=sum(shard.dropped for shard in shards),
        ids=ids,
        rows=np.concatenate([shard.rows + offset for shard, offset in zip(shards, offsets)]),
        file_rows=sum(shard.file_rows for shard in shards))


def _read_one(path: str | Path, fmt: str, text_column: str = "comment_text",
                 label_columns: list[str] | None = None, labels_file: str | Path | None = None,
                 delimiter: str | None = None, id_column: str | None = None,
                 empty_texts: str = "error", quoting: str = "csv", problem_type: str = "auto",
                 classes: list[str] | None = None) -> LabeledTexts:
    """Read one labelled file in one of the supported formats (parsed by kd.data.tables.read_table).

    goemotions: label ids index the names in `labels_file`, or `label_columns` without one.
    csv: `label_columns` are 0/1 columns or one class column (kd.data.labels); none: inferred.
    Ids (jigsaw: `id`; goemotions: the third column; csv: `id_column`) must be unique. Rows
    with an empty text are an error, or with empty_texts="drop" left out and counted.
    `classes`: the classes a class column may hold, in order (a val file, a model's data).
    """
    path = Path(path)
    if empty_texts not in ("error", "drop"):
        raise KDError(f"data.empty_texts must be error or drop, got {empty_texts!r}")
    if label_columns:
        _check_unique(label_columns, "data.label_columns")
    if fmt == "jigsaw":
        return _read_columns(path, "comment_text", label_columns or JIGSAW_LABELS, delimiter,
                             id_column or "id", empty_texts, quoting, problem_type, classes)
    if fmt == "csv":
        return _read_columns(path, text_column, label_columns or [], delimiter, id_column, empty_texts, quoting,
                             problem_type, classes)
    if fmt == "goemotions":
        if labels_file is None and not label_columns:
            raise KDError("format goemotions needs a labels file (one label name per line)")
        names = read_label_names(Path(labels_file)) if labels_file else list(label_columns)
        return _read_goemotions(path, names, empty_texts, quoting, problem_type)
    raise KDError(f"unknown data format {fmt!r}: use jigsaw, csv or goemotions")
