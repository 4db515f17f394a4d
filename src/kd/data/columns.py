"""Ragged columns: rows of variable length stored as one flat array and the offset where each row
starts (row i is values[offsets[i]:offsets[i + 1]]), saved as .npy files and memory-mapped back.

`TextColumn` holds texts as UTF-8 bytes; kd.data.tokens' `TokenColumns` holds token ids. Millions of
rows cost their bytes and 8 bytes of offset each, not a Python object per row, and a memory-mapped
column is read from disk as rows are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


def offsets_from(lengths) -> np.ndarray:
    """Where each row starts, and the end of the last: 0, then the running sum of the lengths."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class Ragged:
    """Rows of `values`, row i from offsets[i] to offsets[i + 1]; `index` maps rows to stored rows
    (a row subset that shares the arrays)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray, index: np.ndarray | None = None):
        self.values, self.offsets, self.index = values, offsets, index

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.index is None else len(self.index)

    def row(self, i: int) -> np.ndarray:
        stored = i if self.index is None else self.index[i]
        return self.values[self.offsets[stored]:self.offsets[stored + 1]]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        return self.row(key)

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        lengths = np.diff(self.offsets)
        return lengths if self.index is None else lengths[self.index]

    def take(self, rows: np.ndarray):
        """These rows, sharing the arrays."""
        rows = np.asarray(rows, dtype=np.int64)
        return type(self)(self.values, self.offsets, rows if self.index is None else self.index[rows])

    def slice(self, start: int, stop: int):
        """Rows start..stop-1, sharing the arrays."""
        if self.index is not None:
            return self.take(np.arange(start, stop))
        return type(self)(self.values, self.offsets[start:stop + 1])

    def save(self, folder: Path, name: str) -> None:
        """Two .npy files: `name`.npy (the values of every row, end to end) and `name`-offsets.npy."""
        whole = self.compact()
        np.save(folder / f"{name}.npy", whole.values[whole.offsets[0]:whole.offsets[-1]])
        np.save(folder / f"{name}-offsets.npy", whole.offsets - whole.offsets[0])

    @classmethod
    def load(cls, folder: Path, name: str):
        """Memory-mapped: rows are read from disk as they are used."""
        return cls(np.load(folder / f"{name}.npy", mmap_mode="r"), np.load(folder / f"{name}-offsets.npy", mmap_mode="r"))

    def compact(self):
        """The same rows with offsets from 0 and no index: a copy in memory, unless they already are."""
        if self.index is None and self.offsets[0] == 0:
            return self
        lengths = self.lengths
        offsets = offsets_from(lengths)
        starts = self.offsets[:-1] if self.index is None else self.offsets[self.index]
        positions = np.repeat(np.asarray(starts, np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1])
        return type(self)(np.asarray(self.values[positions]), offsets)

    @classmethod
    def concat(cls, parts: Sequence[Ragged]):
        """The rows of every part, in order, in memory."""
        parts = [part.compact() for part in parts]
        starts = np.cumsum([0] + [part.offsets[-1] for part in parts[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)] + [part.offsets[1:] + start
                                                            for part, start in zip(parts, starts)])
        return cls(np.concatenate([part.values[:part.offsets[-1]] for part in parts]), offsets)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self) or len(other) != len(self):
            return False
        mine, theirs = self.compact(), other.compact()
        return (np.array_equal(mine.offsets, theirs.offsets)
                and np.array_equal(mine.values[:mine.offsets[-1]], theirs.values[:theirs.offsets[-1]]))


class TextColumn(Ragged):
    """Texts stored as UTF-8 bytes: a row reads back as a str, a slice as a list of str."""

    def row(self, i: int) -> str:
        return bytes(super().row(i)).decode("utf-8", "surrogatepass")
