"""Labelled text files in, padded tensor batches out.

Three formats: `jigsaw` (Kaggle train.csv), `csv` (any CSV/TSV with a text column
and 0/1 label columns) and `goemotions` (TSV without header: text, comma-separated
label ids, id; label names from a file). Texts are tokenized once per tokenizer
into input ids; batches are padded to their longest row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kd.config import DataConfig
from kd.errors import KDError
from kd.models import accepts_token_type_ids

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
    """A hash that is equal for two tokenizers exactly when they produce the same ids."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


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


class EncodedDataset(torch.utils.data.Dataset):
    """Rows of token ids and labels, with the teacher's logits when distilling."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray,
                 teacher_logits: torch.Tensor | None = None):
        if teacher_logits is not None and len(teacher_logits) != len(input_ids):
            raise KDError(f"{len(teacher_logits)} teacher logits for {len(input_ids)} rows")
        self.input_ids = input_ids
        self.labels = torch.from_numpy(labels)
        self.teacher_logits = teacher_logits

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        item = {"index": index, "input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[index]
        return item


class PadCollator:
    """Pad a list of rows to the batch's longest; add token_type_ids only for models that take them."""

    def __init__(self, pad_token_id: int, token_type_ids: bool):
        self.pad_token_id = pad_token_id
        self.token_type_ids = token_type_ids

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            attention_mask[i, : len(row["input_ids"])] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "labels": torch.stack([row["labels"] for row in rows]),
                 "index": torch.tensor([row["index"] for row in rows])}
        if self.token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.stack([row["teacher_logits"] for row in rows])
        return batch


class LengthGroupedSampler(torch.utils.data.Sampler):
    """A shuffled order in which consecutive runs of `batch_size` rows have similar lengths.

    Each epoch: shuffle the rows, cut them into mega-batches of 50 batches, sort each by
    length, cut it into batches and shuffle the batches. Every row is still seen once per
    epoch in a random batch, but a batch pads to a near neighbour's length rather than to
    the longest of 32 random rows. `set_epoch` (called by Accelerate) reseeds the shuffle.
    The last incomplete batch comes last, where `drop_last` removes it.
    """

    MEGA_BATCHES = 50

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        mega = self.batch_size * self.MEGA_BATCHES
        batches = []
        for start in range(0, len(order), mega):
            chunk = order[start:start + mega]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        tail = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        for i in rng.permutation(len(batches)).tolist() + [len(batches)] * len(tail):
            yield from (batches + tail)[i].tolist()


def make_loader(dataset: EncodedDataset, tokenizer, model, batch_size: int, shuffle: bool,
                group_by_length: bool = False, seed: int = 0) -> DataLoader:
    """Training loaders shuffle (in length-grouped batches with `group_by_length`);
    evaluation loaders go in length order to pad little.

    A training epoch drops its last incomplete batch (different rows each epoch), so that
    every step has the same global batch on any number of processes: Accelerate would
    otherwise top it up with rows from the epoch's first batch.
    """
    collator = PadCollator(tokenizer.pad_token_id, accepts_token_type_ids(model))
    if shuffle and group_by_length:
        sampler = LengthGroupedSampler([len(ids) for ids in dataset.input_ids], batch_size, seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                          drop_last=len(dataset) > batch_size)
    if shuffle:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator,
                          drop_last=len(dataset) > batch_size)
    by_length = np.argsort([len(ids) for ids in dataset.input_ids], kind="stable").tolist()
    return DataLoader(dataset, batch_size=batch_size, sampler=by_length, collate_fn=collator)
