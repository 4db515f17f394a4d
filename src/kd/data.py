"""Labelled text files in, padded tensor batches out.

Three formats: `jigsaw` (Kaggle train.csv), `csv` (any CSV/TSV with a text column
and 0/1 label columns) and `goemotions` (TSV without header: text, comma-separated
label ids, id; label names from a file). Texts are tokenized once per tokenizer
into input ids (kd.batches turns those into padded batches).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kd.config import DataConfig
from kd.errors import KDError

JIGSAW_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@dataclass
class LabeledTexts:
    texts: list[str]
    labels: np.ndarray  # (rows, labels) float32 of 0/1
    label_names: list[str]
    dropped: int = 0  # rows with empty texts left out (data.empty_texts=drop)

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> LabeledTexts:
        return LabeledTexts([self.texts[i] for i in rows], self.labels[rows], self.label_names,
                            self.dropped)

    def labels_without_positives(self) -> list[str]:
        return [n for n, count in zip(self.label_names, self.labels.sum(axis=0)) if count == 0]


def _read_table(path: Path, delimiter: str | None, header: bool) -> pd.DataFrame:
    if not path.is_file():
        raise KDError(f"data file not found: {path}")
    sep = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str,
                            keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise KDError(f"data file is empty: {path}") from None
    except UnicodeDecodeError as err:
        raise KDError(f"data file is not UTF-8: {path} ({err.reason} at byte {err.start})") from None
    except pd.errors.ParserError as err:
        raise KDError(f"cannot parse {path}: {err}") from None
    if frame.empty:
        raise KDError(f"data file has no rows: {path}")
    return frame


def _lines(rows, first_line: int) -> str:
    shown = ", ".join(str(r + first_line) for r in rows[:10])
    return f"line{'s' if len(rows) > 1 else ''} {shown}{', ...' if len(rows) > 10 else ''}"


def _finish(path: Path, texts: list[str], labels: np.ndarray, names: list[str],
            ids: list[str] | None, first_line: int, empty_texts: str) -> LabeledTexts:
    """Refuse duplicate ids; refuse or drop rows whose text is empty."""
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
                          f"{first + first_line} and {again + first_line}")
    empty = [row for row, text in enumerate(texts) if not text.strip()]
    if empty and empty_texts == "error":
        raise KDError(f"{path}: {len(empty)} empty text(s) on {_lines(empty, first_line)} "
                      "(set data.empty_texts=drop to leave them out)")
    keep = np.setdiff1d(np.arange(len(texts)), empty)
    return LabeledTexts([texts[i] for i in keep], labels[keep], names, dropped=len(empty))


def _delimiter_hint(frame: pd.DataFrame) -> str:
    if frame.shape[1] == 1:
        for name, sep in (("tab", "\t"), ("semicolon", ";"), ("comma", ","), ("pipe", "|")):
            if sep in frame.columns[0]:
                return f" (the header looks {name}-separated: set data.delimiter)"
    return ""


def _read_columns(path: Path, text_column: str, label_columns: list[str], delimiter: str | None,
                  id_column: str | None, empty_texts: str) -> LabeledTexts:
    frame = _read_table(path, delimiter, header=True)
    missing = [c for c in [text_column, *label_columns, *([id_column] if id_column else [])]
               if c not in frame.columns]
    if missing:
        raise KDError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}"
                      f"{_delimiter_hint(frame)}")
    raw = frame[label_columns]
    bad = ~raw.isin(["0", "1"])
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise KDError(f"{path}: label values must be 0 or 1; line {row + 2} column "
                      f"'{label_columns[col]}' holds {raw.iat[row, col]!r}")
    ids = frame[id_column].tolist() if id_column else None
    return _finish(path, frame[text_column].tolist(), raw.to_numpy().astype(np.float32),
                   list(label_columns), ids, 2, empty_texts)


def read_label_names(path: Path) -> list[str]:
    if not path.is_file():
        raise KDError(f"labels file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise KDError(f"labels file is empty: {path}")
    return names


def _read_goemotions(path: Path, label_names: list[str], empty_texts: str) -> LabeledTexts:
    frame = _read_table(path, "\t", header=False)
    if frame.shape[1] < 2:
        raise KDError(f"{path}: expected tab-separated text and label ids, found {frame.shape[1]} column")
    labels = np.zeros((len(frame), len(label_names)), dtype=np.float32)
    for row, ids in enumerate(frame[1]):
        try:
            indices = [int(i) for i in ids.split(",")]
        except ValueError:
            raise KDError(f"{path}: line {row + 1} has unparseable label ids {ids!r}") from None
        if any(not 0 <= i < len(label_names) for i in indices):
            raise KDError(f"{path}: line {row + 1} has label ids {ids!r} outside 0..{len(label_names) - 1}")
        labels[row, indices] = 1.0
    ids = frame[2].tolist() if frame.shape[1] > 2 else None
    return _finish(path, frame[0].tolist(), labels, label_names, ids, 1, empty_texts)


def read_labeled(path: str | Path, fmt: str, text_column: str = "comment_text",
                 label_columns: list[str] | None = None, labels_file: str | Path | None = None,
                 delimiter: str | None = None, id_column: str | None = None,
                 empty_texts: str = "error") -> LabeledTexts:
    """Read one labelled file in one of the supported formats.

    goemotions: label ids index the names in `labels_file`, or `label_columns` without one.
    Ids (jigsaw: `id`; goemotions: the third column; csv: `id_column`) must be unique. Rows
    with an empty text are an error, or with empty_texts="drop" left out and counted.
    """
    path = Path(path)
    if empty_texts not in ("error", "drop"):
        raise KDError(f"data.empty_texts must be error or drop, got {empty_texts!r}")
    if fmt == "jigsaw":
        return _read_columns(path, "comment_text", label_columns or JIGSAW_LABELS, delimiter,
                             id_column or "id", empty_texts)
    if fmt == "csv":
        if not label_columns:
            raise KDError("format csv needs the label column names (data.label_columns)")
        return _read_columns(path, text_column, label_columns, delimiter, id_column, empty_texts)
    if fmt == "goemotions":
        if labels_file is None and not label_columns:
            raise KDError("format goemotions needs a labels file (one label name per line)")
        names = read_label_names(Path(labels_file)) if labels_file else list(label_columns)
        return _read_goemotions(path, names, empty_texts)
    raise KDError(f"unknown data format {fmt!r}: use jigsaw, csv or goemotions")


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split of range(n) into (train rows, val rows)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_splits(cfg: DataConfig) -> tuple[LabeledTexts, LabeledTexts]:
    """Train and val as the config says: a val file, or a seeded split of train."""
    def read(path: str) -> LabeledTexts:
        return read_labeled(path, cfg.format, cfg.text_column, cfg.label_columns,
                            cfg.labels_file, cfg.delimiter, cfg.id_column, cfg.empty_texts)

    train = read(cfg.train)
    if cfg.val:
        val = read(cfg.val)
        if val.label_names != train.label_names:
            raise KDError(f"train and val have different labels: {train.label_names} vs {val.label_names}")
    else:
        if len(train) < 2:
            raise KDError(f"{cfg.train}: need at least 2 rows to split off a validation set")
        train_rows, val_rows = split_rows(len(train), cfg.val_fraction, cfg.split_seed)
        train, val = train.take(train_rows), train.take(val_rows)
        val.dropped = 0  # the file's count stays with train
    if cfg.max_train_samples:
        train = train.take(np.arange(min(cfg.max_train_samples, len(train))))
    if cfg.max_val_samples:
        val = val.take(np.arange(min(cfg.max_val_samples, len(val))))
    return train, val


def file_digest(paths: list[str | Path | None]) -> str:
    """sha256 over the contents of the given files (None entries are skipped)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash that is equal for two tokenizers exactly when they produce the same ids. The
    truncation and padding settings are left out: encoding a batch changes them in place, and
    encode() passes its own."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None), spec.pop("padding", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with special tokens, truncated to max_length, unpadded."""
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


class TokenCache:
    """Token ids per (tokenizer, split): each split is tokenized once per distinct tokenizer."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self._ids: dict[tuple[str, str], list[list[int]]] = {}

    def __call__(self, tokenizer, split: str, texts: list[str]) -> list[list[int]]:
        key = (tokenizer_fingerprint(tokenizer), split)
        if key not in self._ids:
            self._ids[key] = encode(tokenizer, texts, self.max_length)
        return self._ids[key]
