"""The kd-lexical-bert architecture: a BERT classifier plus per-label weights of hashed wordpieces
and wordpiece pairs added to its logits (kd/models/lexical.py builds one from a BERT student).

This file imports only torch and transformers: save_pretrained copies it into the model folder
(config.json's auto_map names it), so plain transformers loads the folder without kd, with
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`. With kd
imported, the classes here are registered under model_type kd-lexical-bert and no remote code runs.

`lexical` has `lexical_buckets` rows of one weight per label. A text's wordpiece ids and pairs of
neighbouring ids are hashed to rows; their sum / sqrt(their count), times `lexical_scale`, is
added to the logits. The table starts at zero, so the model starts as the BERT it was made from.
`token_rows` (a saved buffer, one int per tokenizer id) maps every id to its row of the cut
word-embedding table; the tokenizer stays as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

DEFAULT_BUCKETS = 32768  # what student.lexical_buckets=null gives a kd-pretrain student: 0.9M parameters at 28 labels
LEXICAL_SCALE = 10.0
PAIR_HASH = 1_000_003  # a prime: row of the pair (a, b) = (a * PAIR_HASH + b) mod buckets


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
            raise ValueError("a kd-lexical-bert model reads input_ids (its lexical part hashes them), "
                             "not inputs_embeds")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = super().forward(input_ids=self.token_rows[input_ids], attention_mask=attention_mask, **kwargs)
        outputs.logits = outputs.logits + self.lexical_logits(input_ids, attention_mask).to(outputs.logits.dtype)
        if labels is not None:
            outputs.loss = (F.cross_entropy(outputs.logits, labels.view(-1))
                            if self.config.problem_type == "single_label_classification"
                            else F.binary_cross_entropy_with_logits(outputs.logits, labels.to(outputs.logits.dtype)))
        return outputs


LexicalBertConfig.register_for_auto_class()  # save_pretrained: this file and auto_map go into the folder
LexicalBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
