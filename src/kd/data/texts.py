"""Labelled texts as kd holds them in memory: the texts (a list or a memory-mapped column), a 0/1
label matrix, the label names and where each row came from; and what counts as an empty text."""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CHUNK = 8192  # texts hashed at a time

BLANK_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me"}


BLANK_FILLERS = set("\u115f\u1160\u3164\uffa0\u2800")  # Hangul fillers, the blank Braille pattern


@dataclass
class LabeledTexts:
    texts: Sequence[str]  # a list, or a memory-mapped kd.data.columns.TextColumn (kd.data.stored)
    labels: np.ndarray  # (rows, labels) float32 of 0/1
    label_names: list[str]
    dropped: int = 0  # rows with empty texts left out (data.empty_texts=drop)
    single_label: bool = False  # one class per row (softmax), else any number of labels (sigmoid)
    class_column: str | None = None  # single-label data read from one class column
    ids: Sequence[str] | None = None  # the rows' ids, where the format has them
    rows: np.ndarray | None = None  # each row's position among the file's data rows
    file_rows: int = 0  # data rows in the file, empty texts included

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> LabeledTexts:
        return dataclasses.replace(self, texts=_take(self.texts, rows), labels=self.labels[rows],
                                   ids=None if self.ids is None else _take(self.ids, rows),
                                   rows=None if self.rows is None else self.rows[rows])

    def labels_without_positives(self) -> list[str]:
        return [n for n, count in zip(self.label_names, self.labels.sum(axis=0)) if count == 0]

    def labels_on_every_row(self) -> list[str]:
        return [n for n, count in zip(self.label_names, self.labels.sum(axis=0)) if count == len(self)]


def _take(texts: Sequence[str], rows: np.ndarray) -> Sequence[str]:
    """These rows of a list, or of a column (kd.data.columns: a view that shares its arrays)."""
    return texts.take(rows) if hasattr(texts, "take") else [texts[i] for i in rows]


def blank(text: str) -> bool:
    """No visible character: only whitespace, control and format characters (zero-width
    spaces and joiners, direction marks, byte-order marks), lone combining marks, and the
    Unicode fillers that render as nothing."""
    return all(unicodedata.category(c) in BLANK_CATEGORIES or c in BLANK_FILLERS for c in text)


def distinct_texts_digest(collections: list[Sequence[str]]) -> str:
    """A digest of the distinct texts of `collections` together, whatever their order and repeats
    (what a sorted set of them would give), computed a chunk at a time: each text hashed alone to
    64 bits, the distinct hashes sorted. It holds 9 bytes per text, never the texts themselves."""
    hashes, filled = np.empty(sum(len(texts) for texts in collections), np.uint64), 0
    for texts in collections:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            hashes[filled:filled + len(chunk)] = np.fromiter(
                (int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                "little") for text in chunk), np.uint64, len(chunk))
            filled += len(chunk)
    hashes.sort()
    distinct = np.ones(len(hashes), bool)
    np.not_equal(hashes[1:], hashes[:-1], out=distinct[1:])
    digest = hashlib.sha256()
    for start in range(0, len(hashes), CHUNK):
        digest.update(hashes[start:start + CHUNK][distinct[start:start + CHUNK]].tobytes())
    return digest.hexdigest()
