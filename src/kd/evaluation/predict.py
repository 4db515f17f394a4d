"""Batched prediction under Accelerate, and a model's metrics on labelled data.

`predict_logits` runs a model over a prepared loader on every process and gathers the rows once
each (`gather_for_metrics` drops the duplicates Accelerate adds to even out the last batch).
"""

from __future__ import annotations

import numpy as np
import torch

from kd.data.batches import EncodedDataset, make_loader
from kd.data.texts import LabeledTexts
from kd.data.tokens import TokenColumns, encode
from kd.evaluation.metrics import score, tuned_metrics
from kd.models.folder import SINGLE_LABEL

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def prepare_for_inference(accelerator, model, loader):
    """accelerator.prepare without its mixed-precision wrapper: predictions are computed in
    fp32, since bf16 rounds nearby logits to one value (ties in the ranking, a false AUC)."""
    model, loader = accelerator.prepare(model, loader)
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    return model, loader


@torch.no_grad()
def predict_logits(model, loader, accelerator, on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) for every row of the loader's dataset, in dataset order, on every process."""
    model.eval()
    logits, labels, rows = [], [], []
    for batch in loader:
        out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits.float()
        out, batch_labels, index = accelerator.gather_for_metrics(
            (out, batch["labels"], batch["index"]))
        logits.append(out.cpu())
        labels.append(batch_labels.cpu())
        rows.append(index.cpu())
        if on_batch is not None:
            on_batch()
    order = torch.argsort(torch.cat(rows))
    return torch.cat(logits)[order].numpy(), torch.cat(labels)[order].numpy()


def evaluate_model(model, tokenizer, data: LabeledTexts, accelerator, batch_size: int,
                   decision: np.ndarray | None = None, input_ids: TokenColumns | None = None,
                   temperatures: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """(metrics, decision rule) of a model on labelled data, its texts truncated at the tokenizer's
    model_max_length unless `input_ids` are given: at the model's own `decision` (thresholds or
    class offsets, kd.models.folder), or with one tuned on these rows when None (tuned_metrics)."""
    ids = input_ids if input_ids is not None else encode(tokenizer, data.texts, tokenizer.model_max_length)
    dataset = EncodedDataset(ids, data.labels)
    single = model.config.problem_type == SINGLE_LABEL  # before prepare: with several processes it wraps the model
    model, loader = prepare_for_inference(accelerator, model,
                                          make_loader(dataset, tokenizer, model, batch_size, False))
    logits, labels = predict_logits(model, loader, accelerator)
    if decision is None:
        return tuned_metrics(logits, labels, data.label_names, single)
    return score(logits, labels, decision, data.label_names, single, temperatures), decision
