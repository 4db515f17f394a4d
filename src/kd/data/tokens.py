"""Texts into token ids, once per tokenizer.

Token ids live in two flat arrays (`TokenColumns`, a kd.data.columns.Ragged): every row's ids end to
end (uint16 where the vocabulary fits, else int32) and the offset where each row starts. Five million rows of 27 tokens
take 0.3 GB so, against about 5 GB as Python lists of ints (docs/benchmarks/scale.md).

`encode` runs the Rust tokenizer directly, in chunks, in `num_proc` processes when asked.
`TokenCache` tokenizes each split once per tokenizer and, given a folder, once per (tokenizer,
max_length, texts) across runs: the arrays are saved as .npy files there and memory-mapped back.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kd.data.columns import Ragged, offsets_from
from kd.files import staged_folder

CHUNK = 8192  # texts per tokenizer call (one progress step)


class TokenColumns(Ragged):
    """Rows of token ids (kd.data.columns.Ragged): a row reads back as a numpy array of ids."""

    def tolist(self) -> list[list[int]]:
        return [row.tolist() for row in self]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], dtype=np.int32) -> TokenColumns:
        offsets = offsets_from([len(row) for row in rows])
        return cls(np.fromiter((i for row in rows for i in row), dtype, int(offsets[-1])), offsets)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash that is equal for two tokenizers exactly when they produce the same ids. The
    truncation and padding settings are left out: encoding a batch changes them in place, and
    encode() passes its own."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None), spec.pop("padding", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _backend_spec(tokenizer, max_length: int) -> str:
    """The Rust tokenizer as JSON, truncating at max_length and padding nothing: what a
    transformers tokenizer call with truncation=True, max_length=max_length encodes with."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length)
    return backend.to_str()


_worker_tokenizer = None


def _start_worker(spec: str, worker: bool = True) -> None:
    global _worker_tokenizer
    from tokenizers import Tokenizer

    if worker:  # one tokenizer thread per worker process
        os.environ["TOKENIZERS_PARALLELISM"] = "false"

    _worker_tokenizer = Tokenizer.from_str(spec)


def _encode_chunk(texts: list[str], dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, ids end to end) of a chunk, with the worker's tokenizer."""
    encodings = _worker_tokenizer.encode_batch_fast(texts)
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    return lengths, np.fromiter((i for e in encodings for i in e.ids), dtype, int(lengths.sum()))


def _pool(processes: int, spec: str):
    """Workers started by a fork server where the platform has one (Linux), else spawned (macOS,
    Windows), never forked from this process: it has imported torch, whose threads a forked child
    inherits half-alive (on macOS a fork after system frameworks have started is unsafe outright).
    The workers import only this module and the tokenizer; as with any spawned worker, the
    caller's script is imported again, so code at its top level belongs under
    `if __name__ == "__main__":`."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(processes, _start_worker, (spec,))


def encode(tokenizer, texts: Sequence[str], max_length: int, num_proc: int = 1,
           on_chunk: Callable[[], None] | None = None) -> TokenColumns:
    """Token ids with special tokens, truncated to max_length, unpadded (the ids a transformers
    tokenizer call gives), in chunks of CHUNK texts; `num_proc` > 1 spreads the chunks over
    that many processes. `on_chunk` is called after each chunk."""
    spec, dtype = _backend_spec(tokenizer, max_length), np.uint16 if len(tokenizer) <= 1 << 16 else np.int32
    chunks = (list(texts[start:start + CHUNK]) for start in range(0, len(texts), CHUNK))
    lengths, ids = [np.zeros(0, np.int64)], [np.zeros(0, dtype)]
    processes = min(num_proc, -(-len(texts) // CHUNK))
    with (_pool(processes, spec) if processes > 1 else nullcontext()) as pool:
        if pool is None:
            _start_worker(spec, worker=False)
        for chunk_lengths, chunk_ids in (pool.imap(_encode_chunk, chunks) if pool else map(_encode_chunk, chunks)):
            lengths.append(chunk_lengths)
            ids.append(chunk_ids.astype(dtype, copy=False))
            if on_chunk is not None:
                on_chunk()
    return TokenColumns(np.concatenate(ids), offsets_from(np.concatenate(lengths)))


def texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(texts), CHUNK):
        digest.update("\0".join(texts[start:start + CHUNK]).encode("utf-8", "surrogatepass") + b"\1")
    return digest.hexdigest()


class TokenCache:
    """Token ids per (tokenizer, texts): the same texts are tokenized once per distinct tokenizer, at the
    tokenizer's own model_max_length (the run sets it from data.max_length), with a progress bar when
    a `reporter` is given. With a `folder`, the ids are saved there, keyed by tokenizer, length and
    the texts, and memory-mapped back by later runs; `main_process_first` (Accelerate's) lets the
    main process write them before the others read."""

    def __init__(self, reporter=None, folder: Path | None = None, num_proc: int = 1,
                 main_process_first=nullcontext):
        self.reporter, self.folder, self.num_proc = reporter, folder, num_proc
        self.main_process_first = main_process_first
        self._ids: dict[tuple[str, int, str], TokenColumns] = {}

    def __call__(self, tokenizer, split: str, texts: Sequence[str]) -> TokenColumns:
        """The ids of `texts` (`split` names them in the progress bar)."""
        key = (tokenizer_fingerprint(tokenizer), tokenizer.model_max_length, texts_digest(texts))
        if key not in self._ids:
            if self.folder is None:
                self._ids[key] = self._encode(tokenizer, split, texts)
            else:
                with self.main_process_first():
                    self._ids[key] = self._stored(tokenizer, split, texts, key)
        return self._ids[key]

    def _encode(self, tokenizer, split: str, texts: Sequence[str]) -> TokenColumns:
        bar = (self.reporter.task(f"tokenizing {split}", -(-len(texts) // CHUNK)) if self.reporter is not None
               else nullcontext(None))
        with bar as advance:
            return encode(tokenizer, texts, tokenizer.model_max_length, self.num_proc, advance)

    def _stored(self, tokenizer, split: str, texts: Sequence[str], key: tuple[str, int, str]) -> TokenColumns:
        name = hashlib.sha256(json.dumps(list(key)).encode())
        folder = self.folder / name.hexdigest()[:24]
        try:
            columns = TokenColumns.load(folder, "ids")
            if len(columns) == len(texts):
                return columns
        except (OSError, ValueError):
            pass  # not there yet, or damaged: (re)written below
        columns = self._encode(tokenizer, split, texts)
        with staged_folder(folder) as staging:
            columns.save(staging, "ids")
        return TokenColumns.load(folder, "ids")
