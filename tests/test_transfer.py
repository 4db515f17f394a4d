"""The transfer set: unlabelled and augmented texts that only the teacher labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny
import torch
import torch.nn.functional as F
from safetensors import safe_open

from kd.cli import main
from kd.data.transfer import augmented_copies, read_texts
from kd.errors import KDError
from kd.training.losses import distillation_loss


def test_augmented_copies_mask_and_cut_reproducibly():
    texts = [" ".join(f"w{i}" for i in range(20))] * 200
    copies = augmented_copies(texts, 2, mask_prob=0.2, ngram_prob=0.25, seed=3, mask_token="[MASK]")
    assert len(copies) == 400 and copies == augmented_copies(texts, 2, 0.2, 0.25, 3, "[MASK]")
    words = [c.split() for c in copies]
    cut = [w for w in words if len(w) < 20]
    assert 0.15 < len(cut) / len(words) < 0.35 and all(1 <= len(w) <= 5 for w in cut)
    masked = np.mean([t == "[MASK]" for w in words for t in w])
    assert 0.15 < masked < 0.25
    assert augmented_copies(texts, 0, 0.2, 0.25, 3, "[MASK]") == []


def test_read_texts_skips_blank_lines_and_refuses_bad_files(tmp_path):
    good = tmp_path / "unlabelled.txt"
    good.write_text("first text\n\n  second text  \n")
    assert read_texts([str(good)]) == ["first text", "second text"]
    with pytest.raises(KDError, match="not found"):
        read_texts([str(tmp_path / "missing.txt")])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(KDError, match="not UTF-8"):
        read_texts([str(bad)])


def test_transfer_rows_take_no_part_in_the_hard_term():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float)
    labelled = torch.tensor([True, True, True, False, False, False])
    hard = F.binary_cross_entropy_with_logits(student[:3], labels[:3])
    soft = F.binary_cross_entropy_with_logits(student / 2, torch.sigmoid(teacher / 2))
    expected = 0.3 * hard + 0.7 * 4 * soft
    got = distillation_loss(student, labels, teacher, alpha=0.7, temperature=2.0, labelled=labelled)
    assert torch.allclose(got, expected)


def test_pipeline_trains_on_a_transfer_set(models, csv_data, tmp_path, capsys):
    unlabelled = tmp_path / "unlabelled.txt"
    texts, _ = tiny.make_texts(50, seed=9)
    unlabelled.write_text("\n".join(texts) + "\n")
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "distill.transfer_files": f"[{unlabelled}]", "distill.augment_copies": 1,
        "teacher.train.epochs": 1, "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    assert "transfer set: 50 texts from files + 512 augmented copies" in capsys.readouterr().err
    [cached] = (tmp_path / "cache/soft_targets").glob("transfer-*.safetensors")
    with safe_open(cached, framework="pt") as handle:
        assert handle.get_tensor("logits").shape == (562, 3)
    final = json.loads((tmp_path / "runs/run/final_metrics.json").read_text())
    assert final["student"]["val"]["macro_auc"] is not None


def test_a_transfer_set_needs_distillation(models, csv_data, tmp_path, capsys):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{"distill.alpha": 0, "distill.augment_copies": 1})
    assert main(["distill", *overrides]) == 2
    assert "needs distill.alpha > 0" in capsys.readouterr().err


def test_batches_mark_transfer_rows(models):
    from kd.data.batches import EncodedDataset, make_loader
    from kd.models.build import build_model
    from kd.models.hub import load_tokenizer

    model = build_model(str(models["student"]), "pretrained", tiny.LABELS, role="student")
    dataset = EncodedDataset([[2, 5, 3]] * 10, np.zeros((10, 3), np.float32), torch.zeros(10, 3), labelled_rows=4)
    batches = list(make_loader(dataset, load_tokenizer(str(models["student"])), model, 5, shuffle=True,
                               group_by_length=True))
    marks = {int(i): bool(m) for b in batches for i, m in zip(b["index"], b["labelled"])}
    assert marks == {i: i < 4 for i in range(10)}
