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
import tiny
import torch
from accelerate import Accelerator

from kd.config.settings import load_config
from kd.data.batches import EncodedDataset, LengthGroupedSampler, make_loader
from kd.data.formats import read_labeled
from kd.data.tokens import encode
from kd.errors import KDError
from kd.evaluation.predict import MODEL_INPUTS, evaluate_model, predict_logits
from kd.models.build import build_model
from kd.models.first_token import FirstTokenBertLayer, use_first_token_last_layer
from kd.models.hub import load_tokenizer
from kd.models.saved import load_classifier
from kd.runtime.hardware import precision_name, resolve_mixed_precision
from kd.training import speedups
from kd.training.loop import train_pad_multiple
from kd.training.losses import distillation_loss
from kd.training.optim import clip_grad_norm, make_optimizer


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


@pytest.mark.parametrize("multiple", [1, 8])
def test_fast_path_loss_equals_reference_loss(models, multiple):
    """Mean distillation loss over a dataset: reference (pad to max length, teacher online, fixed
    batches) against kd (cached teacher logits, length-grouped dynamic batches, their widths
    rounded up to `multiple` as in bf16 training)."""
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
                             shuffle=True, group_by_length=True, seed=5, pad_to_multiple_of=multiple)
        for batch in loader:
            assert batch["input_ids"].shape[1] < 64 and batch["input_ids"].shape[1] % multiple == 0
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


def test_training_batches_pad_to_multiples_of_8_in_mixed_precision():
    assert train_pad_multiple(None, "bf16") == train_pad_multiple(None, "fp16") == 8
    assert train_pad_multiple(None, "no") == 1
    assert train_pad_multiple(1, "bf16") == 1
    assert train_pad_multiple(16, "no") == 16
    with pytest.raises(KDError, match=r"student.train.pad_to_multiple_of must be in \[1, inf\)"):
        load_config([], ["student.train.pad_to_multiple_of=0"])


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
    tokenizer.model_max_length = 32
    metrics, _ = evaluate_model(model, tokenizer, val, Accelerator(cpu=True), 32)
    assert metrics["bce"] == pytest.approx(reported["bce"], abs=1e-6)
    # rounding can reorder near ties (see test_pipeline); bf16 logits would tie them all (AUC 0.5
    # here, against 0.73) and move the BCE by ~3e-5
    assert metrics["macro_auc"] == pytest.approx(reported["macro_auc"], abs=0.005)



@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_token_last_layer_gives_the_same_logits_and_gradients(models, tmp_path, attention):
    """The last layer run for [CLS] alone: same logits and gradients on a padded batch (no
    dropout, so both runs draw nothing), same weights and keys in the saved folder."""
    torch.manual_seed(0)
    full = build_model(str(models["bert_nodropout"]), "pretrained", tiny.LABELS, role="teacher")
    full.set_attn_implementation(attention)
    cut = build_model(str(models["bert_nodropout"]), "pretrained", tiny.LABELS, role="teacher")
    cut.load_state_dict(full.state_dict())
    cut.set_attn_implementation(attention)
    assert use_first_token_last_layer(cut) and type(cut.bert.encoder.layer[-1]) is FirstTokenBertLayer
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 9, 3], [2, 8, 3, 0, 0, 0], [2, 11, 12, 13, 3, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])}
    logits = [model.train()(**inputs).logits for model in (full, cut)]
    torch.testing.assert_close(logits[1], logits[0])
    for model, out in zip((full, cut), logits):
        out.square().sum().backward()
    for (name, a), b in zip(full.named_parameters(), cut.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    cut.save_pretrained(tmp_path)
    reloaded = type(full).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(**inputs).logits, full.eval()(**inputs).logits)


def test_first_token_last_layer_leaves_other_architectures_alone(models):
    model = build_model(str(models["distilbert"]), "pretrained", tiny.LABELS, role="teacher")
    assert not use_first_token_last_layer(model)
    bert = build_model(str(models["bert"]), "pretrained", tiny.LABELS, role="teacher")
    bert.config._attn_implementation = "flash_attention_2"  # 2-D padding masks: not cut
    assert not use_first_token_last_layer(bert)


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(monkeypatch):
    cpu, capabilities = torch.device("cpu"), {"avx512_bf16": False, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert resolve_mixed_precision("auto", cpu) == "no"  # emulated bf16 is slower than fp32
    assert precision_name("auto", cpu) == "fp32"
    capabilities["avx512_bf16"] = True
    assert resolve_mixed_precision("auto", cpu) == "bf16"
    assert precision_name("auto", cpu) == "bf16 autocast"
    assert resolve_mixed_precision("auto", torch.device("mps")) == "no"
    assert [resolve_mixed_precision(s, cpu) for s in ("no", "bf16", "fp16")] == ["no", "bf16", "fp16"]


def _embedding_model(sparse: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(6, 4, sparse=sparse), torch.nn.Linear(4, 1))
    model.get_input_embeddings = lambda: model[0]
    return model


def _train(model, batches, clip=None, lazy=False):
    optimizer = make_optimizer(model, 0.1, 0.01, lazy=lazy)
    for ids in batches:
        model(ids).pow(2).sum().backward()
        if clip:
            clip(model.parameters(), 0.5)
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_sparse_embedding_gradient_takes_the_dense_adamw_step():
    """Rows a batch skips still move (momentum, weight decay), as in dense AdamW; the kept
    buffer is zero again after every step."""
    batches = [torch.tensor([[1, 2, 2]]), torch.tensor([[2, 4]]), torch.tensor([[0, 0, 5]])]
    dense, sparse = _embedding_model(False), _embedding_model(True)
    expected = _train(dense, batches, torch.nn.utils.clip_grad_norm_).state_dict()["state"]
    optimizer = _train(sparse, batches, clip_grad_norm)
    for a, b in zip(dense.parameters(), sparse.parameters()):
        torch.testing.assert_close(b, a)
    torch.testing.assert_close(optimizer.state_dict()["state"], expected)  # resumes like dense AdamW
    assert all(not buffer.any() for buffer in optimizer._dense_grads.values())
    assert sparse[0].weight.grad is None


def test_lazy_embedding_update_is_adamw_on_the_rows_a_batch_uses():
    every_row = [torch.tensor([[0, 1, 2, 3, 4, 5, 5]])] * 3  # all rows used: lazy = dense AdamW
    dense, lazy = _embedding_model(False), _embedding_model(True)
    _train(dense, every_row, torch.nn.utils.clip_grad_norm_)
    _train(lazy, every_row, clip_grad_norm, lazy=True)
    for a, b in zip(dense.parameters(), lazy.parameters()):
        torch.testing.assert_close(a, b)

    lazy = _embedding_model(True)
    before = lazy[0].weight.detach().clone()
    optimizer = _train(lazy, [torch.tensor([[1, 2, 2]]), torch.tensor([[2, 4]])], clip_grad_norm, lazy=True)
    moved = (lazy[0].weight != before).any(dim=1).tolist()
    assert moved == [False, True, True, False, True, False]
    state = optimizer.state[lazy[0].weight]
    assert state["exp_avg"][[0, 3, 5]].abs().sum() == 0 and state["exp_avg"][[1, 2, 4]].abs().min(dim=1).values.all()
    assert float(state["step"]) == 2


def test_clip_grad_norm_counts_repeated_rows_of_a_sparse_gradient_once():
    dense, lazy = _embedding_model(False), _embedding_model(True)
    ids = torch.tensor([[1, 2, 2, 2]])
    for model in (dense, lazy):
        model(ids).pow(2).sum().mul(10).backward()
    expected = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.5)
    torch.testing.assert_close(clip_grad_norm(lazy.parameters(), 0.5), expected)
    torch.testing.assert_close(lazy[0].weight.grad.to_dense(), dense[0].weight.grad)


def test_default_speedups_by_device_and_what_rules_them_out():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert speedups.resolve(None, cpu, 1, "no", False, False) == (list(speedups.ALL), [])
    assert speedups.resolve(None, gpu, 1, "bf16", False, False) == (["fused_adamw"], [])
    assert speedups.resolve([], cpu, 1, "no", False, False) == ([], [])
    assert speedups.resolve(None, cpu, 2, "no", True, False) == (["fused_adamw"], [])  # defaults: silently
    names, notes = speedups.resolve(["cls_only_last_layer", "sparse_embedding_gradient"], cpu, 2, "no", True, False)
    assert names == [] and [n.split(":")[0] for n in notes] == ["cls_only_last_layer left out",
                                                               "sparse_embedding_gradient left out"]
    assert speedups.resolve([], gpu, 1, "no", False, True) == (["sparse_embedding_gradient"], [])  # lazy needs it
    assert speedups.resolve(None, gpu, 1, "fp16", False, True)[1] == [
        "sparse_embedding_gradient left out: it needs one process and no fp16"]
    with pytest.raises(KDError, match="student.train.speedups"):
        load_config([], ["student.train.speedups=[fast_dropout]"])


def test_a_run_without_speedups_computes_what_the_default_computes(models, csv_data, tmp_path):
    """Every speedup changes how a step is computed, not what: with none of them the student's
    weights and val metrics are those of kd's defaults (fp32, no dropout, so no RNG draws)."""
    from kd.run.pipeline import distill as run
    results = []
    for name, listed in [("default", "null"), ("none", "[]")]:
        overrides = tiny.tiny_overrides(
            {**models, "bert": models["bert_nodropout"], "student": models["student_nodropout"]}, csv_data, tmp_path,
            mixed_precision="no", run_name=name, **{"teacher.train.epochs": 1, "student.train.epochs": 2,
                                                    "student.train.lr": "3e-2", "student.train.select_by": "macro_auc",
                                                    "teacher.train.speedups": listed,
                                                    "student.train.speedups": listed})
        run(load_config([], overrides))
        model, _, _ = load_classifier(tmp_path / "runs" / name / "student")
        results.append((json.loads((tmp_path / "runs" / name / "final_metrics.json").read_text()), model))
    (default, fast), (none, plain) = results
    assert default["student"]["val"]["bce"] == pytest.approx(none["student"]["val"]["bce"], abs=1e-5)
    for (key, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        if not key.endswith("key.bias"):  # its gradient is 0 up to rounding, which AdamW scales up to lr
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=key)
