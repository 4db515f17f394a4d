"""Texts into token ids, once per tokenizer: `encode`, a tokenizer's fingerprint (equal exactly
when two tokenizers give the same ids) and `TokenCache`, which tokenizes each split once per
distinct tokenizer with a progress bar. kd.batches turns the ids into padded batches."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext


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
    """Token ids per (tokenizer, split): each split is tokenized once per distinct tokenizer,
    with a progress bar when a `reporter` is given."""

    CHUNK = 4096  # texts per tokenizer call (one progress step)

    def __init__(self, max_length: int, reporter=None):
        self.max_length, self.reporter = max_length, reporter
        self._ids: dict[tuple[str, str], list[list[int]]] = {}

    def __call__(self, tokenizer, split: str, texts: list[str]) -> list[list[int]]:
        key = (tokenizer_fingerprint(tokenizer), split)
        if key not in self._ids:
            chunks = range(0, len(texts), self.CHUNK)
            ids: list[list[int]] = []
            bar = (self.reporter.task(f"tokenizing {split}", len(chunks)) if self.reporter is not None
                   else nullcontext(lambda: None))
            with bar as advance:
                for start in chunks:
                    ids += encode(tokenizer, texts[start:start + self.CHUNK], self.max_length)
                    advance()
            self._ids[key] = ids
        return self._ids[key]
