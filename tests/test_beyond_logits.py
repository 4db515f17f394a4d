"""Distillation beyond logits: layer matching, several teachers, the temperature schedule."""

from __future__ import annotations

import json

import pytest
import tiny
import torch

from kd.cli import main
from kd.errors import KDError
from kd.models.build import build_model
from kd.models.saved import load_classifier
from kd.student import stage as student_stage
from kd.training.layer_matching import (
    LayerMatching,
    attention_kl,
    attention_projections,
    evenly_mapped_layers,
    hidden_distance,
    relation_probs,
)
from kd.training.losses import scheduled_temperature


def test_scheduled_temperature():
    assert scheduled_temperature(2.0, None, 0.7) == 2.0
    assert [scheduled_temperature(4.0, 1.0, p) for p in (0.0, 0.5, 1.0, 1.5)] == [4.0, 2.5, 1.0, 1.0]


def test_distances_are_zero_for_equal_inputs_and_ignore_padding():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    x = torch.randn(1, 3, 8)
    assert hidden_distance(x, x, mask, "mse") == 0 and hidden_distance(x, x, mask, "cosine").abs() < 1e-6
    y = x.clone()
    y[0, 2] += 5.0  # a padded position
    assert hidden_distance(x, y, mask, "mse") == 0
    y[0, 0] += 1.0
    assert hidden_distance(x, y, mask, "mse") == pytest.approx(0.5 * 1.0)
    maps = torch.softmax(torch.randn(1, 2, 3, 3), dim=-1)
    assert attention_kl(maps, maps, mask).abs() < 1e-6
    assert attention_kl(torch.softmax(torch.randn(1, 2, 3, 3), dim=-1), maps, mask) > 0


def test_layer_matching_trains_its_projections_and_checks_shapes(models):
    assert evenly_mapped_layers(2, 6) == [[1, 3], [2, 6]]
    teacher = build_model(str(models["bert"]), "pretrained", tiny.LABELS, role="teacher")
    student = build_model(str(models["student"]), "pretrained", tiny.LABELS)
    for model in (teacher, student):
        model.set_attn_implementation("eager")
    matching = LayerMatching(student, teacher, None, 1.0, 1.0, "mse")
    assert matching.layer_map == [[1, 2], [2, 3]] and len(list(matching.parameters())) == 4  # 2 Linear 16->32
    assert not any(p.requires_grad for p in teacher.parameters())
    inputs = {"input_ids": torch.tensor([[2, 7, 8, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}
    loss = matching(student(**inputs, **matching.output_flags), inputs)
    loss.backward()
    assert loss > 0 and matching.projections[0].weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    with pytest.raises(KDError, match="layer_map pair"):
        LayerMatching(student, teacher, [[3, 1]], 1.0, 0.0)
    teacher.config.num_attention_heads = 4
    with pytest.raises(KDError, match="equal head counts"):
        LayerMatching(student, teacher, None, 0.0, 1.0)


def test_relation_probs_are_scaled_dot_products_softmaxed_over_real_keys():
    states = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    probs = relation_probs(states, 2, mask)
    assert probs.shape == (2, 2, 4, 4) and torch.allclose(probs.sum(dim=-1), torch.ones(2, 2, 4))
    assert (probs[0, :, :, 3] == 0).all()  # the padded key
    head = states[1, :, 4:]  # the second relation head of the second text
    assert torch.allclose(probs[1, 1], torch.softmax(head @ head.T / 2.0, dim=-1), atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in mixed-precision training
        assert torch.equal(relation_probs(states.bfloat16(), 2, mask), relation_probs(states.bfloat16().float(), 2, mask))
        assert torch.equal(relation_probs(states, 2, mask), probs)


def test_relations_compare_models_of_other_widths_and_train_the_students_last_layer(models):
    teacher = build_model(str(models["bert"]), "pretrained", tiny.LABELS, role="teacher")  # width 32, 3 layers
    student = build_model(str(models["student"]), "pretrained", tiny.LABELS)  # width 16, 2 layers
    inputs = {"input_ids": torch.tensor([[2, 7, 8, 9, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]])}
    matching = LayerMatching(student, teacher, None, 0.0, 0.0, relation_weight=1.0, relation_heads=4)
    assert matching.relation_layers == (2, 3) and not list(matching.parameters())  # nothing to project
    loss = matching(student(**inputs, **matching.output_flags), inputs)
    loss.backward()
    assert loss > 0
    query, key, value = attention_projections(student, 2)
    assert all(module.weight.grad.abs().sum() > 0 for module in (query, key, value))
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0  # through layer 2's input
    same = build_model(str(models["bert"]), "pretrained", tiny.LABELS, role="teacher")
    matching = LayerMatching(same, teacher, None, 0.0, 0.0, relation_weight=1.0, relation_heads=8)
    assert matching(same(**inputs, **matching.output_flags), inputs).abs() < 1e-5  # the teacher against itself
    with pytest.raises(KDError, match="relation_heads=3 must divide the student's width 16"):
        LayerMatching(student, teacher, None, 1.0, 0.0, relation_weight=1.0, relation_heads=3)
    distil = build_model(str(models["distilbert"]), "pretrained", tiny.LABELS, role="teacher")
    assert attention_projections(distil, 3)[0] is distil.distilbert.transformer.layer[2].attention.q_lin


def test_hidden_and_attention_matching_end_to_end(models, csv_data, tmp_path):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "distill.hidden_weight": 0.5, "distill.attention_weight": 1.0, "distill.layer_map": "[[0,0],[2,3]]",
        "distill.final_temperature": 1.0, "teacher.train.epochs": 1, "student.train.epochs": 2})
    assert main(["distill", *overrides]) == 0
    model, _, _ = load_classifier(tmp_path / "runs/run/student")  # the projections are not saved with it
    assert model.config.hidden_size == 16
    records = [json.loads(line) for line in (tmp_path / "runs/run/metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["teacher", "student", "student"]


def test_a_bad_layer_map_fails_before_the_teacher_trains(models, csv_data, tmp_path):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "distill.hidden_weight": 1.0, "distill.layer_map": "[[3,1]]"})  # the student has 2 layers
    assert main(["distill", *overrides]) == 2
    assert not (tmp_path / "runs").exists()


def test_layer_matching_needs_one_tokenization(models, csv_data, tmp_path, capsys):
    vocab = tiny.SPECIAL + sorted(set(tiny.VOCAB) - set(tiny.SPECIAL), reverse=True)
    student = tiny.make_model(tmp_path / "other-vocab", "bert", layers=1, hidden=16, vocab=vocab)
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "student.name": student, "distill.hidden_weight": 1.0, "teacher.train.epochs": 1})
    assert main(["distill", *overrides]) == 2
    assert "need the same tokenization" in capsys.readouterr().err


def test_several_teachers_average_their_logits(models, csv_data, tmp_path, monkeypatch):
    teachers = [tiny.make_classifier(tmp_path / f"teacher{i}", models["bert"], steps=30, seed=i) for i in (0, 1)]
    seen = []
    real_fit = student_stage.fit
    monkeypatch.setattr(student_stage, "fit", lambda ctx, job: seen.append(job.train_set.teacher_logits)
                        or real_fit(ctx, job))

    def distill_with(name, **extra):
        overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
            "teacher.path": teachers[0], "student.train.epochs": 1, "run_name": name, **extra})
        assert main(["distill", *overrides]) == 0

    distill_with("first")
    distill_with("second", **{"teacher.path": teachers[1]})
    distill_with("both", **{"distill.extra_teachers": f"[{teachers[1]}]", "distill.teacher_weights": "[1, 3]"})
    assert torch.allclose(seen[2], (seen[0] + 3 * seen[1]) / 4)
    final = json.loads((tmp_path / "runs/both/final_metrics.json").read_text())
    assert final["soft_targets_cache_hit"] is True  # each teacher's logits came from the cache
    with pytest.raises(KDError, match="teacher_weights"):
        from kd.config.settings import load_config
        load_config(overrides=["distill.extra_teachers=[a]", "distill.teacher_weights=[1]"])
