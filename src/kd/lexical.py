"""A lexical part for a small BERT student: per-label weights of hashed wordpieces and wordpiece
pairs added to the transformer's logits (wide and deep; fastText's hashed n-grams), paid for by
cutting the word-embedding table to the wordpieces the student trains on.

Why: the BERT-Tiny-shaped student and TF-IDF + LR are wrong on different texts (their rank
average beats both: docs/benchmarks/lexical_ensemble.md), and 3.9M of that student's 4.4M
parameters are word embeddings, most of them for wordpieces its training texts never contain.

`lexical` has `lexical_buckets` rows of one weight per label. A text's wordpiece ids and pairs of
neighbouring ids are hashed to rows; their sum / sqrt(their count), times `lexical_scale`, is
added to the logits. The table starts at zero, so the student starts as it would without it;
under Adam an output scaled by s moves s times as fast, which a sparse linear model whose rows
see few steps needs (10: what was measured for 1, 10, 30 and 100 is in docs/benchmarks/tiny_levers.md).
`token_rows` (a saved buffer, one int per tokenizer id) maps every id to its row of the cut
embedding table, ids the training texts never held to [UNK]'s; the tokenizer stays as it was.
Importing kd.models registers the architecture (model_type kd-lexical-bert) with transformers'
Auto classes, so kd's loaders, `kd.Classifier` and `kd export` read it like any BERT.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from kd.errors import KDError
from kd.model_folder import SINGLE_LABEL

DEFAULT_BUCKETS = 32768  # what student.lexical_buckets=null gives a kd-pretrain student: 0.9M parameters at 28 labels
LEXICAL_SCALE = 10.0
PAIR_HASH = 1_000_003  # a prime: row of the pair (a, b) = (a * PAIR_HASH + b) mod buckets
WORD_TABLE = "bert.embeddings.word_embeddings.weight"


class LexicalBertConfig(BertConfig):
    model_type = "kd-lexical-bert"

    def __init__(self, lexical_buckets: int = DEFAULT_BUCKETS, lexical_scale: float = LEXICAL_SCALE,
                 tokenizer_vocab_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lexical_buckets, self.lexical_scale = lexical_buckets, lexical_scale
        self.tokenizer_vocab_size = tokenizer_vocab_size or self.vocab_size


def hashed_ngrams(input_ids: torch.Tensor, attention_mask: torch.Tensor, buckets: int):
    """(rows, weights): every real token's id and every pair of neighbouring real tokens, hashed
    to rows of a `buckets`-row table; weight 1 for real n-grams, 0 for padding."""
    mask = attention_mask.to(torch.float32)
    pairs = (input_ids[:, :-1] * PAIR_HASH + input_ids[:, 1:]) % buckets
    return (torch.cat([input_ids % buckets, pairs], dim=1),
            torch.cat([mask, mask[:, :-1] * mask[:, 1:]], dim=1))


class LexicalBertForSequenceClassification(BertForSequenceClassification):
    config_class = LexicalBertConfig

    def __init__(self, config: LexicalBertConfig):
        super().__init__(config)
        self.lexical = torch.nn.Embedding(config.lexical_buckets, config.num_labels)
        torch.nn.init.zeros_(self.lexical.weight)
        rows = torch.arange(config.tokenizer_vocab_size).clamp(max=config.vocab_size - 1)
        self.register_buffer("token_rows", rows)

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "lexical", None):
            torch.nn.init.zeros_(module.weight)

    def lexical_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows, weights = hashed_ngrams(input_ids, attention_mask, self.config.lexical_buckets)
        total = (self.lexical(rows).float() * weights.unsqueeze(-1)).sum(dim=1)
        return self.config.lexical_scale * total / weights.sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs):
        if input_ids is None:
            raise KDError("a kd-lexical-bert model reads input_ids (its lexical part hashes them), not inputs_embeds")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = super().forward(input_ids=self.token_rows[input_ids], attention_mask=attention_mask, **kwargs)
        outputs.logits = outputs.logits + self.lexical_logits(input_ids, attention_mask).to(outputs.logits.dtype)
        if labels is not None:
            outputs.loss = (F.cross_entropy(outputs.logits, labels.view(-1))
                            if self.config.problem_type == SINGLE_LABEL
                            else F.binary_cross_entropy_with_logits(outputs.logits, labels.to(outputs.logits.dtype)))
        return outputs


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
