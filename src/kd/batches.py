"""Token ids in, padded tensor batches out.

Batches are padded to their longest row. Training batches are shuffled, by default in
length-grouped batches (rows of similar length together, far less padding); evaluation
batches go in length order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from kd.errors import KDError
from kd.models import accepts_token_type_ids


class EncodedDataset(torch.utils.data.Dataset):
    """Rows of token ids and labels, with the teacher's logits when distilling. With
    `labelled_rows`, only the first that many rows have labels; the rest are transfer-set
    rows (zero labels) and batches say which is which in a `labelled` mask."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray,
                 teacher_logits: torch.Tensor | None = None, labelled_rows: int | None = None):
        if teacher_logits is not None and len(teacher_logits) != len(input_ids):
            raise KDError(f"{len(teacher_logits)} teacher logits for {len(input_ids)} rows")
        self.input_ids = input_ids
        self.labels = torch.from_numpy(labels)
        self.teacher_logits = teacher_logits
        self.labelled_rows = labelled_rows

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        item = {"index": index, "input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[index]
        if self.labelled_rows is not None:
            item["labelled"] = index < self.labelled_rows
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
        if "labelled" in rows[0]:
            batch["labelled"] = torch.tensor([row["labelled"] for row in rows])
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
    lengths = [len(ids) for ids in dataset.input_ids]
    if shuffle:
        sampler = LengthGroupedSampler(lengths, batch_size, seed) if group_by_length else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                          collate_fn=collator, drop_last=len(dataset) > batch_size)
    by_length = np.argsort(lengths, kind="stable").tolist()
    return DataLoader(dataset, batch_size=batch_size, sampler=by_length, collate_fn=collator)
