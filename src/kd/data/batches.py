"""Token ids in, padded tensor batches out.

Batches are padded to their longest row, rounded up to a multiple where asked (training in
bf16 asks for 8: see kd/training/loop.py). Training batches are shuffled, by default in
length-grouped batches (rows of similar length together, far less padding); evaluation
batches go in length order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from kd.data.tokens import TokenColumns
from kd.errors import KDError
from kd.models.build import accepts_token_type_ids


class EncodedDataset(torch.utils.data.Dataset):
    """Rows of token ids and labels, with the teacher's logits when distilling. With
    `labelled_rows`, only the first that many rows have labels; the rest are transfer-set
    rows (zero labels) and batches say which is which in a `labelled` mask."""

    def __init__(self, input_ids: TokenColumns | list[list[int]], labels: np.ndarray,
                 teacher_logits: torch.Tensor | None = None, labelled_rows: int | None = None):
        if teacher_logits is not None and len(teacher_logits) != len(input_ids):
            raise KDError(f"{len(teacher_logits)} teacher logits for {len(input_ids)} rows")
        self.input_ids = input_ids if isinstance(input_ids, TokenColumns) else TokenColumns.from_rows(input_ids)
        self.labels = torch.from_numpy(labels)
        self.teacher_logits = teacher_logits
        self.labelled_rows = labelled_rows

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitems__(self, indices: list[int]) -> dict:
        """The rows of a batch at once (DataLoader calls this rather than __getitem__ per row)."""
        index = torch.tensor(indices)
        rows = {"index": index, "input_ids": [self.input_ids[i] for i in indices], "labels": self.labels[index]}
        if self.teacher_logits is not None:
            rows["teacher_logits"] = self.teacher_logits[index]
        if self.labelled_rows is not None:
            rows["labelled"] = index < self.labelled_rows
        return rows

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])


class PadCollator:
    """Pad a batch's token ids to its longest row, rounded up to a multiple of `multiple`; add
    token_type_ids only for models that take them."""

    def __init__(self, pad_token_id: int, token_type_ids: bool, multiple: int = 1):
        self.pad_token_id = pad_token_id
        self.token_type_ids = token_type_ids
        self.multiple = multiple

    def __call__(self, rows: dict) -> dict[str, torch.Tensor]:
        lengths = np.array([len(ids) for ids in rows["input_ids"]])
        width = -(-lengths.max() // self.multiple) * self.multiple
        input_ids = np.full((len(lengths), width), self.pad_token_id, dtype=np.int64)
        for i, ids in enumerate(rows["input_ids"]):
            input_ids[i, : len(ids)] = ids
        batch = {**rows, "input_ids": torch.from_numpy(input_ids),
                 "attention_mask": torch.from_numpy(np.arange(input_ids.shape[1]) < lengths[:, None]).long()}
        if self.token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
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

    def __init__(self, lengths: np.ndarray | list[int], batch_size: int, seed: int = 0):
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
        in_order = batches + tail
        for i in rng.permutation(len(batches)).tolist() + [len(batches)] * len(tail):
            yield from in_order[i].tolist()


def make_loader(dataset: EncodedDataset, tokenizer, model, batch_size: int, shuffle: bool,
                group_by_length: bool = False, seed: int = 0, pad_to_multiple_of: int = 1) -> DataLoader:
    """Training loaders shuffle (in length-grouped batches with `group_by_length`);
    evaluation loaders go in length order to pad little. Batches are padded to their longest
    row, rounded up to a multiple of `pad_to_multiple_of`.

    A training epoch drops its last incomplete batch (different rows each epoch), so that
    every step has the same global batch on any number of processes: Accelerate would
    otherwise top it up with rows from the epoch's first batch.
    """
    collator = PadCollator(tokenizer.pad_token_id, accepts_token_type_ids(model), pad_to_multiple_of)
    lengths = dataset.input_ids.lengths
    if shuffle:
        sampler = LengthGroupedSampler(lengths, batch_size, seed) if group_by_length else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                          collate_fn=collator, drop_last=len(dataset) > batch_size)
    by_length = np.argsort(lengths, kind="stable").tolist()
    return DataLoader(dataset, batch_size=batch_size, sampler=by_length, collate_fn=collator)
