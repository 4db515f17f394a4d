"""A teacher's logits over many rows, labelled once and cached on disk (cache_dir/soft_targets/).

The cache key hashes the teacher checkpoint (weights and config), the data file
contents with every setting that decides which rows are train rows, and the
tokenization (tokenizer and max_length). Same key: the logits are read back; any
change: they are recomputed. Files are safetensors with a sha256 of the logits in their
metadata, written to a temporary name and renamed; an entry that is unreadable or does not
match its checksum is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate.utils import broadcast_object_list

from kd.config.settings import DataConfig
from kd.data.batches import EncodedDataset, make_loader
from kd.data.tables import expand
from kd.data.texts import LabeledTexts
from kd.data.tokens import TokenColumns, tokenizer_fingerprint
from kd.errors import KDError
from kd.evaluation.predict import MODEL_INPUTS
from kd.files import file_digest, write_atomically
from kd.runtime.context import Loaded, RunContext


def checkpoint_digest(folder: Path) -> str:
    """sha256 of a save_pretrained folder's weights and config."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + [folder / "config.json"]
    return file_digest(files)


def soft_targets_key(teacher_folder: Path, data_cfg: DataConfig, tokenizer) -> str:
    split = {k: v for k, v in vars(data_cfg).items()
             if k not in ("train", "val", "labels_file", "max_val_samples", "max_length", "num_proc")}
    # settings added after caches were written: left out at their defaults, so those caches stay valid
    for key, default in (("quoting", "csv"), ("problem_type", "auto"), ("class_names", None)):
        if split[key] == default:
            del split[key]
    parts = {
        "teacher": checkpoint_digest(teacher_folder),
        "train_file": file_digest(expand(data_cfg.train)),  # every shard of a glob
        "labels_file": file_digest([data_cfg.labels_file]) if data_cfg.labels_file else None,
        "val_file_given": data_cfg.val is not None,
        "split": split,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": data_cfg.max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _mapped_logits(path: Path) -> tuple[torch.Tensor, dict]:
    """The `logits` tensor of a safetensors file, memory-mapped (copy on write: pages are read from
    disk as rows are used, and never written back), and the file's metadata."""
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
    entry = header["logits"]
    if entry["dtype"] != "F32":
        raise ValueError(f"logits are {entry['dtype']}")
    array = np.memmap(path, np.float32, "c", offset=8 + size + entry["data_offsets"][0], shape=tuple(entry["shape"]))
    return torch.from_numpy(array), header.get("__metadata__") or {}


def _digest_rows(arrays) -> str:
    """sha256 of float32 arrays' bytes end to end, as if they were one array."""
    digest = hashlib.sha256()
    for array in arrays:
        for start in range(0, len(array), 1 << 16):
            digest.update(np.ascontiguousarray(array[start:start + (1 << 16)], dtype="<f4").tobytes())
    return digest.hexdigest()


def read_cached_logits(path: Path, shape: tuple[int, int] | None) -> torch.Tensor | None:
    """The cached logits (memory-mapped), or None when the file is unreadable, of another shape
    than `shape` (None: any), or its contents do not match the checksum written with them."""
    try:
        logits, metadata = _mapped_logits(path)
    except Exception:  # damaged: a short file, a header that is not JSON, ...
        return None
    if (shape is not None and tuple(logits.shape) != shape) or metadata.get("sha256") != _digest_rows([logits.numpy()]):
        return None
    return logits


def _write_logits(path: Path, shards: list[Path], shape: tuple[int, int]) -> None:
    """One safetensors file of the shards' logits end to end, with their sha256 in its metadata,
    written a shard at a time (never the whole matrix in memory)."""
    sha = _digest_rows(np.load(shard, mmap_mode="r") for shard in shards)
    header = json.dumps({"__metadata__": {"rows": str(shape[0]), "sha256": sha},
                         "logits": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 4 * shape[0] * shape[1]]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)

    def write(partial: Path) -> None:
        with open(partial, "wb") as handle:
            handle.write(struct.pack("<Q", len(header)) + header)
            for shard in shards:
                handle.write(np.ascontiguousarray(np.load(shard), dtype="<f4").tobytes())

    write_atomically(path, write)


def joined_digest(texts: Sequence[str]) -> str:
    """sha256 of the texts joined by newlines, computed a text at a time (never the joined string)."""
    digest = hashlib.sha256()
    for i, text in enumerate(texts):
        digest.update(("\n" + text if i else text).encode())
    return digest.hexdigest()


def train_logits_file(ctx: RunContext, teacher: Loaded) -> Path:
    """Where the teacher's logits for the run's train rows are cached."""
    return ctx.cache_dir / "soft_targets" / f"{soft_targets_key(teacher.folder, ctx.cfg.data, teacher.tokenizer)}.safetensors"


def train_logits(ctx: RunContext, teacher: Loaded, train: LabeledTexts) -> tuple[torch.Tensor, bool]:
    """(the teacher's logits for every train row, whether they came from the cache)."""
    return _cached_logits(ctx, train_logits_file(ctx, teacher), teacher,
                          ctx.tokens(teacher.tokenizer, "train", train.texts))


def transfer_logits(ctx: RunContext, teacher: Loaded, texts: list[str]) -> tuple[torch.Tensor, bool]:
    """The teacher's logits for transfer-set texts, cached by teacher, tokenization and texts."""
    parts = [checkpoint_digest(teacher.folder), tokenizer_fingerprint(teacher.tokenizer),
             ctx.cfg.data.max_length, joined_digest(texts)]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
    return _cached_logits(ctx, ctx.cache_dir / "soft_targets" / f"transfer-{key}.safetensors", teacher,
                          ctx.tokens(teacher.tokenizer, "transfer", texts))


SHARD_ROWS = 1 << 16  # rows the teacher labels between two saves


def _cached_logits(ctx: RunContext, path: Path, teacher: Loaded, input_ids: TokenColumns) -> tuple[torch.Tensor, bool]:
    """The teacher's logits for every row, from the cache at `path` or computed in shards of
    SHARD_ROWS rows: each process of the run labels every num_processes-th shard and saves it
    beside `path`, so that a killed run labels only the shards it had not saved; the main process
    then joins them into the cache file."""
    accelerator, reporter, model = ctx.accelerator, ctx.reporter, teacher.model
    num_labels, batch_size = model.config.num_labels, ctx.cfg.teacher.train.eval_batch_size
    shape = (len(input_ids), num_labels)
    if path.is_file():
        logits = _checked_on_main(ctx, path, shape)
        if logits is not None:
            reporter.print(f"soft targets: cache hit {path}")
            return logits, True
        reporter.print(f"soft targets: {path} is corrupt or truncated (checksum); recomputing")
    folder = path.with_name(f"{path.stem}.shards")
    shards = [folder / f"{k:05d}-of-{-(-shape[0] // SHARD_ROWS):05d}.npy" for k in range(-(-shape[0] // SHARD_ROWS))]
    mine = [k for k in range(accelerator.process_index, len(shards), accelerator.num_processes)
            if not _saved_shard(shards[k], min(SHARD_ROWS, shape[0] - k * SHARD_ROWS), num_labels)]
    model.to(accelerator.device)
    steps = sum(-(-min(SHARD_ROWS, shape[0] - k * SHARD_ROWS) // batch_size) for k in mine)
    with reporter.task("teacher soft targets", steps) as advance:
        for k in mine:
            rows = input_ids.slice(k * SHARD_ROWS, min((k + 1) * SHARD_ROWS, shape[0]))
            loader = make_loader(EncodedDataset(rows, np.zeros((len(rows), num_labels), np.float32)),
                                 teacher.tokenizer, model, batch_size, shuffle=False)
            logits = _logits_in_order(model, loader, accelerator.device, advance)
            write_atomically(shards[k], lambda partial: _save_array(partial, logits))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_logits(path, shards, shape)
        shutil.rmtree(folder, ignore_errors=True)
        reporter.print(f"soft targets: computed and cached {path}")
    accelerator.wait_for_everyone()
    ctx.release()
    logits = _checked_on_main(ctx, path, shape)
    if logits is None:
        raise KDError(f"the soft targets just written to {path} do not read back (the disk?); run again")
    return logits, False


def _checked_on_main(ctx: RunContext, path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached logits, checked against their checksum by the main process alone (reading every
    row once, not once per process); the others map the file on its word. None: recompute."""
    good = None
    if ctx.is_main:
        good = read_cached_logits(path, shape) is not None
    if not broadcast_object_list([good])[0]:
        return None
    return _mapped_logits(path)[0]


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save(path) would add .npy to a partial file's name
        np.save(handle, array)


def _saved_shard(path: Path, rows: int, num_labels: int) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape == (rows, num_labels)
    except (OSError, ValueError):
        return False


@torch.no_grad()
def _logits_in_order(model, loader, device, advance) -> np.ndarray:
    """The model's fp32 logits for every row of the loader's dataset, in dataset order, in this
    process alone (each process labels its own shards)."""
    model.eval()
    logits = np.empty((len(loader.dataset), model.config.num_labels), np.float32)
    for batch in loader:
        out = model(**{k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}).logits
        logits[batch["index"].numpy()] = out.float().cpu().numpy()
        advance()
    return logits
