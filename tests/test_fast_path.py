"""kd's fast training path computes what the plain reference recipe computes.

The reference pads every text to the maximum length, runs the teacher online at every step and
steps a per-tensor AdamW; kd pads each batch to its longest row, groups rows of similar length,
reads the teacher's cached logits and steps a fused AdamW. Speed is measured by
scripts/bench_train.py, never here; these tests check that the numbers are the same.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate import Accelerator

import tiny
from kd.batches import EncodedDataset, LengthGroupedSampler, make_loader
from kd.data import encode, read_labeled
from kd.evaluate import MODEL_INPUTS, evaluate_model, predict_logits
from kd.losses import distillation_loss
from kd.models import build_model, load_classifier, load_tokenizer
from kd.train import FastDropout, make_optimizer, use_fast_dropout


def test_length_grouped_sampler_is_a_reseeded_permutation_of_similar_length_batches():
    lengths = np.random.default_rng(0).integers(3, 200, size=1000)
    sampler = LengthGroupedSampler(lengths.tolist(), batch_size=10, seed=7)
    first = list(sampler)
    assert sorted(first) == list(range(1000))
    assert list(sampler) == first  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(1000))

    def padded_tokens(order):
        batches = np.array(order).reshape(-1, 10)
        return int(sum(lengths[b].max() * len(b) for b in batches))

    shuffled = np.random.default_rng(1).permutation(1000).tolist()
    assert padded_tokens(first) < 0.6 * padded_tokens(shuffled)


def test_length_grouped_sampler_puts_the_incomplete_batch_last():
    sampler = LengthGroupedSampler(list(range(25)), batch_size=10, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(25)) and len(set(order[20:]) & set(order[:20])) == 0
    assert sorted(LengthGroupedSampler([5, 6, 7], batch_size=10)) == [0, 1, 2]


def test_fast_path_loss_equals_reference_loss(models):
    """Mean distillation loss over a dataset: reference (pad to max length, teacher online, fixed
    batches) against kd (cached teacher logits, length-grouped dynamic batches)."""
    teacher = build_model(str(models["bert_nodropout"]), "pretrained", tiny.LABELS, role="teacher").eval()
    student = build_model(str(models["student_nodropout"]), "pretrained", tiny.LABELS, role="student").eval()
    tokenizer = load_tokenizer(str(models["bert_nodropout"]))
    texts, labels = tiny.make_texts(64, seed=3)
    labels = labels.astype(np.float32)
    with torch.no_grad():
        reference = []
        for start in range(0, 64, 16):
            inputs = tokenizer(texts[start:start + 16], padding="max_length", max_length=64,
                               truncation=True, return_tensors="pt")
            reference.append(distillation_loss(student(**inputs).logits, torch.from_numpy(labels[start:start + 16]),
                                               teacher(**inputs).logits, alpha=0.7, temperature=3.0))
        ids = encode(tokenizer, texts, 64)
        accelerator = Accelerator(cpu=True)
        cached, _ = predict_logits(teacher, make_loader(EncodedDataset(ids, labels), tokenizer, teacher, 8, False),
                                   accelerator)
        fast = []
        loader = make_loader(EncodedDataset(ids, labels, torch.from_numpy(cached)), tokenizer, student, 16,
                             shuffle=True, group_by_length=True, seed=5)
        for batch in loader:
            assert batch["input_ids"].shape[1] < 64
            logits = student(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits
            fast.append(distillation_loss(logits, batch["labels"], batch["teacher_logits"], 0.7, 3.0))
    assert len(fast) == 4
    assert torch.stack(fast).mean().item() == pytest.approx(torch.stack(reference).mean().item(), abs=1e-5)


def test_fused_adamw_steps_like_the_per_tensor_loop(models):
    texts, labels = tiny.make_texts(16, seed=4)
    tokenizer = load_tokenizer(str(models["student"]))
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    states = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = build_model(str(models["student_nodropout"]), "pretrained", tiny.LABELS, role="student")
        optimizer = make_optimizer(model, 1e-2, 0.01, fused=fused)
        for _ in range(3):
            loss = distillation_loss(model(**inputs).logits, torch.tensor(labels, dtype=torch.float32), alpha=0.0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        states.append(model.state_dict())
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, atol=1e-6, rtol=1e-5)


def test_bf16_training_evaluates_in_fp32(models, csv_data, tmp_path):
    """Under mixed_precision=bf16 only the training steps run in bf16: the val metrics a run reports
    are those of its saved model evaluated in fp32 (bf16 logits would tie and move them)."""
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, mixed_precision="bf16",
                                    **{"teacher.train.epochs": 1, "student.train.epochs": 1})
    subprocess.run([sys.executable, "-m", "kd.cli", "distill", *overrides], check=True,
                   capture_output=True, text=True)
    run_dir = tmp_path / "runs" / "run"
    reported = json.loads((run_dir / "final_metrics.json").read_text())["student"]["val"]
    model, tokenizer, _ = load_classifier(run_dir / "student")
    val = read_labeled(csv_data["val"], "csv", text_column="text", label_columns=tiny.LABELS)
    metrics, _ = evaluate_model(model, tokenizer, val, Accelerator(cpu=True), 32, 32)
    assert metrics["bce"] == pytest.approx(reported["bce"], abs=1e-6)
    assert metrics["macro_auc"] == pytest.approx(reported["macro_auc"], abs=1e-9)



def test_fast_dropout_is_bernoulli_dropout():
    torch.manual_seed(0)
    x = torch.randn(1000, 1000, requires_grad=True)
    dropout = FastDropout(0.1)
    y = dropout(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.9, abs=2e-3)
    torch.testing.assert_close(y[kept], x[kept] / 0.9)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.9)
    rows = kept[:, :500].float().mean(dim=1)  # lanes are independent: no row or column pattern
    assert rows.std().item() < 0.03
    assert torch.equal(dropout.eval()(x), x) and torch.equal(FastDropout(0.0)(x), x)


def test_use_fast_dropout_replaces_every_dropout_module(models):
    model = build_model(str(models["bert"]), "pretrained", tiny.LABELS, role="teacher")
    use_fast_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(type(m) is FastDropout and m.p == 0.1 for m in dropouts)
