import numpy as np
import pytest
import tiny
import torch

from kd.errors import KDError
from kd.models import hub
from kd.models.build import (
    build_model,
    count_parameters,
    default_lr,
    evenly_spaced_layers,
    init_prior_bias,
)
from kd.models.hub import resolve_name


def test_aliases():
    assert resolve_name("distilbert") == "distilbert-base-uncased"
    assert resolve_name("bert-tiny") == "google/bert_uncased_L-2_H-128_A-2"
    assert resolve_name("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_name("some/hub-id") == "some/hub-id"


def test_teacher_layers_copies_the_chosen_pretrained_layers(models):
    teacher = build_model(str(models["bert"]), "pretrained", tiny.LABELS, role="teacher")
    student = build_model(str(models["bert"]), "teacher-layers", tiny.LABELS, layers=[0, 2],
                          teacher_name=str(models["bert"]))
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in enumerate([0, 2]):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(new)], t[key.format(old)])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])


def test_teacher_layers_works_for_distilbert_and_picks_evenly(models):
    student = build_model(str(models["distilbert"]), "teacher-layers", tiny.LABELS, num_layers=1,
                          teacher_name=str(models["distilbert"]))
    assert student.config.n_layers == 1
    assert evenly_spaced_layers(6, 2) == [0, 3] and evenly_spaced_layers(12, 6) == [0, 2, 4, 6, 8, 10]


def test_teacher_layers_needs_equal_hidden_sizes(models):
    with pytest.raises(KDError, match="equal hidden sizes"):
        build_model(str(models["student"]), "teacher-layers", tiny.LABELS, teacher_name=str(models["bert"]))


@pytest.mark.parametrize("teacher", ["bert", "distilbert"])
def test_teacher_embeddings_are_the_teachers_projected_by_pca(models, teacher):
    """A hidden-16 student of a hidden-32 teacher: each table is the teacher's times one
    orthonormal 32x16 map onto the word table's top principal directions; the layers stay random."""
    source = build_model(str(models[teacher]), "pretrained", tiny.LABELS, role="teacher")
    student = build_model(str(models["student"]), "teacher-embeddings", tiny.LABELS, teacher_name=str(models[teacher]))
    words = source.base_model.embeddings.word_embeddings.weight.detach()
    projection = torch.linalg.lstsq(words, student.base_model.embeddings.word_embeddings.weight.detach()).solution
    assert projection.shape == (32, 16)
    torch.testing.assert_close(projection.T @ projection, torch.eye(16), atol=1e-4, rtol=0)
    top = torch.linalg.svd(words - words.mean(dim=0), full_matrices=False).Vh[:16]
    torch.testing.assert_close((top @ projection).abs(), torch.eye(16), atol=1e-4, rtol=0)  # up to sign
    positions = source.base_model.embeddings.position_embeddings.weight.detach()
    torch.testing.assert_close(student.base_model.embeddings.position_embeddings.weight, positions @ projection)
    untouched = build_model(str(models["student"]), "random", tiny.LABELS)
    assert student.config.hidden_size == untouched.config.hidden_size == 16
    assert student.config.num_hidden_layers == untouched.config.num_hidden_layers == 2


def test_teacher_embeddings_need_a_teacher_at_least_as_wide(models):
    with pytest.raises(KDError, match="width up to the teacher's"):
        build_model(str(models["bert"]), "teacher-embeddings", tiny.LABELS, teacher_name=str(models["student"]))
    with pytest.raises(KDError, match="needs a teacher"):
        build_model(str(models["student"]), "teacher-embeddings", tiny.LABELS)


def test_missing_weights_name_the_alternatives(tmp_path):
    folder = tiny.make_model(tmp_path / "m", "bert")
    (folder / "model.safetensors").unlink()
    with pytest.raises(KDError, match="student.init=random or student.init=teacher-layers"):
        build_model(str(folder), "pretrained", tiny.LABELS)
    with pytest.raises(KDError, match="teacher.init=random"):
        build_model(str(folder), "pretrained", tiny.LABELS, role="teacher")


def test_known_alias_builds_offline_from_the_bundled_vocab(monkeypatch):
    asked = []

    def unreachable(name, **kwargs):
        asked.append((name, kwargs.get("local_files_only", False)))
        raise OSError("offline")

    monkeypatch.setattr(hub.AutoConfig, "from_pretrained", unreachable)
    monkeypatch.setattr(hub.AutoTokenizer, "from_pretrained", unreachable)
    model = build_model("bert-tiny", "random", tiny.LABELS)
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (128, 2, 30522)
    assert count_parameters(model.bert) == 4_385_920  # BERT-Tiny's published size
    tokenizer = hub.load_tokenizer("bert-tiny")
    assert tokenizer("the capital of france is [MASK].")["input_ids"] == [101, 1996, 3007, 1997, 2605, 2003, 103, 1012, 102]
    with pytest.raises(KDError, match="cannot load the config"):
        build_model("not/known", "random", tiny.LABELS)
    # known aliases look only in the local cache (no retries against an unreachable hub)
    assert set(asked) == {("google/bert_uncased_L-2_H-128_A-2", True), ("not/known", False)}


def test_random_init_depth_override_and_prior_bias(models):
    model = build_model(str(models["bert"]), "random", tiny.LABELS, num_layers=1)
    assert model.config.num_hidden_layers == 1 and model.config.problem_type == "multi_label_classification"
    labels = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=np.float32)
    init_prior_bias(model, labels)
    bias = model.classifier.bias.detach().numpy()
    assert np.allclose(bias[[0, 2]], [np.log(1 / 3), 0.0], atol=1e-6) and bias[1] < -9


def test_default_lr_follows_width():
    class Fake:
        def __init__(self, hidden):
            self.config = type("C", (), {"hidden_size": hidden})

    assert np.isclose(default_lr(Fake(128)), 1e-3) and np.isclose(default_lr(Fake(768)), 5e-5)
    assert np.isclose(default_lr(Fake(384)), 1.5e-4) and 1.5e-4 < default_lr(Fake(256)) < 1e-3
    assert np.isclose(default_lr(Fake(128), batch_size=128), 2e-3) and np.isclose(default_lr(Fake(1024)), 5e-5)
