"""Run a BERT classifier's last layer for the first token only: all its head reads.

A sequence classifier reads one row of the last layer's output: the first ([CLS]) token's,
through BERT's pooler. That row needs the keys and values of every token, but the query,
the attention output, the feed-forward block and their norms and dropouts of that one row
only: for BERT-Tiny (two layers) that is about 40% of the multiply-adds per token. The
logits are the same; only what no head reads is left uncomputed. Weights, state-dict keys
and saved folders are unchanged.
"""

from __future__ import annotations

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import BertLayer, eager_attention_forward

# Attention implementations whose masks are 4-D (batch, 1, query, key): their first query
# row is the first token's. Flash attention's 2-D padding masks are left alone.
ROW_MASKED = {"eager", "sdpa"}


class FirstTokenBertLayer(BertLayer):
    """A BertLayer whose output is the first token's row only, (batch, 1, hidden)."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args, **kwargs) -> torch.Tensor:
        attention, first = self.attention.self, hidden_states[:, :1]

        def heads(x: torch.Tensor) -> torch.Tensor:  # (batch, heads, rows, head size)
            return x.view(x.shape[0], x.shape[1], -1, attention.attention_head_size).transpose(1, 2)

        attend = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation,
                                                       eager_attention_forward)
        context, _ = attend(attention, heads(attention.query(first)), heads(attention.key(hidden_states)),
                            heads(attention.value(hidden_states)),
                            None if attention_mask is None else attention_mask[..., :1, :],
                            dropout=attention.dropout.p if self.training else 0.0,
                            scaling=attention.scaling)
        return self.feed_forward_chunk(self.attention.output(context.reshape(first.shape), first))


def use_first_token_last_layer(model: torch.nn.Module) -> bool:
    """Make a BERT sequence classifier compute its last layer for the first token only (in
    place; True if it did). Its `last_hidden_state` then has one row: use it only where the
    logits are all that is read (no hidden-state or attention matching)."""
    bert = getattr(model, "bert", None)
    layers = getattr(getattr(bert, "encoder", None), "layer", None)
    if (not layers or type(layers[-1]) is not BertLayer or model.config.is_decoder
            or getattr(bert, "pooler", None) is None
            or model.config._attn_implementation not in ROW_MASKED):
        return False
    layers[-1].__class__ = FirstTokenBertLayer
    return True
