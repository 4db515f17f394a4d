"""Distillation beyond logits: the student's hidden states and attention maps matched to the
teacher's, layer by layer (as TinyBERT and MiniLM do), with the teacher run online at each step.

`layer_map` pairs layer numbers [student, teacher]; 0 is the embedding output (hidden states
only), L the last layer. Hidden states are compared through a learned linear projection where
the widths differ (MSE or 1 - cosine, over real tokens); attention maps by KL(teacher || student)
over the keys, per head, averaged over real query tokens, which needs equal head counts. The
projections train with the student and are not saved with it.

Self-attention relations (MiniLMv2, Wang et al. 2021) compare the last layers of models of any
widths and head counts: each model's queries (keys, values) are split into the same number of
relation heads, and the softmax over keys of their scaled dot products, token by token, is
matched by KL(teacher || student), as attention maps are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kd.errors import KDError
from kd.models.build import accepts_token_type_ids


def evenly_mapped_layers(student_layers: int, teacher_layers: int) -> list[list[int]]:
    """Student layer i <-> teacher layer round(i * L_t / L_s), e.g. 2 of 6: [[1, 3], [2, 6]]."""
    return [[i, round(i * teacher_layers / student_layers)] for i in range(1, student_layers + 1)]


def hidden_distance(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over real tokens of the squared error (mean over features) or of 1 - cosine."""
    if kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    else:
        per_token = (student - teacher).pow(2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum()


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the keys of each [batch, head, query, key] map, averaged over
    heads and real query tokens (padded keys have zero weight in both)."""
    kl = (torch.special.xlogy(teacher, teacher) - teacher * student.clamp_min(1e-12).log()).sum(dim=-1)
    per_query = kl.mean(dim=1)  # over heads: [batch, query]
    return (per_query * mask).sum() / mask.sum()


def relation_probs(states: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """MiniLMv2's self-attention relation of [batch, token, width] queries (keys, values) split
    into `heads` relation heads: [batch, head, token, token], softmax over real keys, in float32
    even under autocast (in bf16 the KL of two near distributions comes out below zero)."""
    batch, tokens, width = states.shape
    states = states.float().view(batch, tokens, heads, width // heads).transpose(1, 2)
    with torch.autocast(states.device.type, enabled=False):
        scores = states @ states.transpose(-1, -2) / math.sqrt(width // heads)
        return scores.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(dim=-1)


def attention_projections(model, layer: int) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """The query, key and value projections of `model`'s self-attention in layer `layer` (1..L)."""
    base = model.base_model
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):  # BERT, MiniLM, kd-lexical-bert
        attention = base.encoder.layer[layer - 1].attention.self
        return attention.query, attention.key, attention.value
    if hasattr(base, "transformer"):  # DistilBERT
        attention = base.transformer.layer[layer - 1].attention
        return attention.q_lin, attention.k_lin, attention.v_lin
    raise KDError(f"self-attention relations need a BERT- or DistilBERT-style encoder, not {type(base).__name__}")


def check_shapes(student_config, teacher_config, layer_map: list[list[int]] | None,
                 attention_weight: float, relation_heads: int = 0) -> list[list[int]]:
    """The layer map to use (the given one or evenly_mapped_layers); a KDError if a layer number
    is out of range, attention maps are to be matched across different head counts or
    `relation_heads` (0: no relations) does not divide both widths."""
    s_layers, t_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    layer_map = layer_map or evenly_mapped_layers(s_layers, t_layers)
    for s, t in layer_map:
        if s > s_layers or t > t_layers:
            raise KDError(f"distill.layer_map pair {[s, t]}: the student has layers 0..{s_layers}, "
                          f"the teacher 0..{t_layers}")
    s_heads, t_heads = student_config.num_attention_heads, teacher_config.num_attention_heads
    if attention_weight > 0 and s_heads != t_heads:
        raise KDError(f"distill.attention_weight needs equal head counts: the student has {s_heads} "
                      f"heads, the teacher {t_heads}")
    widths = (student_config.hidden_size, teacher_config.hidden_size)
    if relation_heads and any(width % relation_heads for width in widths):
        raise KDError(f"pretrain.relation_heads={relation_heads} must divide the student's width "
                      f"{widths[0]} and the teacher's {widths[1]}")
    return layer_map


class LayerMatching(torch.nn.Module):
    """The extra loss beta * hidden + gamma * attention + delta * relations; call it with the
    student's outputs (with hidden states and attentions as `output_flags` asks) and the batch's
    model inputs."""

    def __init__(self, student, teacher, layer_map: list[list[int]] | None, hidden_weight: float,
                 attention_weight: float, hidden_loss: str = "mse", relation_weight: float = 0.0,
                 relation_heads: int = 16):
        super().__init__()
        student_config = student.config
        self.layer_map = check_shapes(student_config, teacher.config, layer_map, attention_weight,
                                      relation_heads if relation_weight > 0 else 0)
        self.hidden_weight, self.attention_weight, self.hidden_loss = hidden_weight, attention_weight, hidden_loss
        self.relation_weight, self.relation_heads = relation_weight, relation_heads
        self.relation_layers = (student_config.num_hidden_layers, teacher.config.num_hidden_layers)
        # (student, teacher) query, key and value projections of those layers, found once; in a
        # list, so not submodules of this module
        self._relation_projections = (list(zip(attention_projections(student, self.relation_layers[0]),
                                                attention_projections(teacher, self.relation_layers[1])))
                                      if relation_weight > 0 else [])
        s_width, t_width = student_config.hidden_size, teacher.config.hidden_size
        self.projections = torch.nn.ModuleList(
            torch.nn.Linear(s_width, t_width) if s_width != t_width else torch.nn.Identity()
            for _ in (self.layer_map if hidden_weight > 0 else []))
        teacher.eval().requires_grad_(False)
        if attention_weight > 0:  # the fused attention kernels return no attention maps
            teacher.set_attn_implementation("eager")
        self.teacher_takes_token_types = accepts_token_type_ids(teacher)
        self._teacher = [teacher]  # in a list: not a submodule, so neither trained nor saved here
        self.output_flags = {"output_hidden_states": hidden_weight > 0 or relation_weight > 0,
                             "output_attentions": attention_weight > 0}

    @property
    def teacher(self):
        return self._teacher[0]

    def forward(self, student_outputs, inputs: dict) -> torch.Tensor:
        if not self.teacher_takes_token_types:
            inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
        with torch.no_grad():
            teacher_outputs = self.teacher(**inputs, **self.output_flags)
        mask = inputs["attention_mask"].to(student_outputs.logits.dtype)
        loss = student_outputs.logits.new_zeros(())
        if self.hidden_weight > 0:
            terms = [hidden_distance(project(student_outputs.hidden_states[s]).float(),
                                     teacher_outputs.hidden_states[t].float(), mask, self.hidden_loss)
                     for (s, t), project in zip(self.layer_map, self.projections)]
            loss = loss + self.hidden_weight * torch.stack(terms).mean()
        pairs = [(s, t) for s, t in self.layer_map if s > 0 and t > 0]
        if self.attention_weight > 0 and pairs:
            terms = [attention_kl(student_outputs.attentions[s - 1].float(),
                                  teacher_outputs.attentions[t - 1].float(), mask) for s, t in pairs]
            loss = loss + self.attention_weight * torch.stack(terms).mean()
        if self.relation_weight > 0:
            loss = loss + self.relation_weight * self._relation_loss(student_outputs, teacher_outputs, mask)
        return loss

    def _relation_loss(self, student_outputs, teacher_outputs, mask: torch.Tensor) -> torch.Tensor:
        """Mean over queries, keys and values of the last layers' relation KL."""
        (s, t), heads = self.relation_layers, self.relation_heads
        s_in, t_in = student_outputs.hidden_states[s - 1], teacher_outputs.hidden_states[t - 1]
        terms = []
        for s_project, t_project in self._relation_projections:
            with torch.no_grad():
                t_relation = relation_probs(t_project(t_in), heads, mask)
            terms.append(attention_kl(relation_probs(s_project(s_in), heads, mask), t_relation, mask))
        return torch.stack(terms).mean()
