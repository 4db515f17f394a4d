"""The data stage: labelled files read strictly into texts and labels, train and val splits,
memory-mapped columns for millions of rows, token ids and padded batches.

The names most code needs are here: `read_labeled`, `load_splits`, `LabeledTexts`, `encode`."""

from kd.data.formats import read_labeled
from kd.data.splits import load_splits
from kd.data.texts import LabeledTexts
from kd.data.tokens import encode

__all__ = ["LabeledTexts", "encode", "load_splits", "read_labeled"]
