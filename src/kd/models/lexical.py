"""A lexical part for a small BERT student: per-label weights of hashed wordpieces and wordpiece
pairs added to the transformer's logits (wide and deep; fastText's hashed n-grams), paid for by
cutting the word-embedding table to the wordpieces the student trains on.

Why: the BERT-Tiny-shaped student and TF-IDF + LR are wrong on different texts (their rank
average beats both: docs/benchmarks/lexical_ensemble.md), and 3.9M of that student's 4.4M
parameters are word embeddings, most of them for wordpieces its training texts never contain.

The architecture (model_type kd-lexical-bert) is in kd/models/lexical_bert.py, a file that save_pretrained
copies into the model folder. The table starts at zero; under Adam an output scaled by s moves s
times as fast, which a sparse linear model whose rows see few steps needs (scale 10: what was
measured for 1, 10, 30 and 100 is in docs/benchmarks/tiny_levers.md). Ids the training texts never
held read [UNK]'s row. Importing kd.models registers the architecture with transformers' Auto
classes, so kd's loaders, `kd.Classifier` and `kd export` read it like any BERT.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from kd.errors import KDError
from kd.models.lexical_bert import (
    LexicalBertConfig,
    LexicalBertForSequenceClassification,
)

WORD_TABLE = "bert.embeddings.word_embeddings.weight"

AutoConfig.register(LexicalBertConfig.model_type, LexicalBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(LexicalBertConfig, LexicalBertForSequenceClassification, exist_ok=True)


def add_lexical_part(model, kept_ids: np.ndarray, buckets: int, unk_id: int) -> LexicalBertForSequenceClassification:
    """`model` (a BERT classifier) with a `buckets`-row lexical part and its word embeddings cut to
    `kept_ids` and [UNK] (every other id reads [UNK]'s row); its other weights as they were."""
    if model.config.model_type != "bert":
        raise KDError(f"student.lexical_buckets needs a BERT student (model_type bert), got "
                      f"{model.config.model_type}: use it with bert-tiny or another BERT, or set it to 0")
    vocab = model.config.vocab_size
    kept = np.union1d(np.asarray(kept_ids, dtype=np.int64), [unk_id])
    if kept[0] < 0 or kept[-1] >= vocab:
        raise KDError(f"token ids must be in 0..{vocab - 1} (the model's vocab), got {kept[0]}..{kept[-1]}")
    settings = {k: v for k, v in model.config.to_dict().items()
                if k not in ("model_type", "architectures", "transformers_version", "vocab_size")}
    config = LexicalBertConfig(lexical_buckets=buckets, tokenizer_vocab_size=vocab, vocab_size=len(kept), **settings)
    lexical = LexicalBertForSequenceClassification(config)
    state = model.state_dict()
    kept_rows = torch.from_numpy(kept)
    state[WORD_TABLE] = state[WORD_TABLE][kept_rows]
    state["token_rows"] = torch.full((vocab,), int(np.searchsorted(kept, unk_id)), dtype=torch.long)
    state["token_rows"][kept_rows] = torch.arange(len(kept))
    state["lexical.weight"] = lexical.lexical.weight.detach().clone()
    lexical.load_state_dict(state, strict=True)
    return lexical


def lexical_summary(model) -> str:
    """', a lexical part of N rows and K of V word embeddings' for a kd-lexical-bert model, else ''."""
    config = model.config
    if not isinstance(config, LexicalBertConfig):
        return ""
    return (f", a lexical part of {config.lexical_buckets:,} rows and {config.vocab_size:,} of "
            f"{config.tokenizer_vocab_size:,} word embeddings")
