"""kd pretrain on tiny models: the student learns the teacher's hidden states on unlabelled text,
and a task run starts from the encoder it writes."""

import json
from pathlib import Path

import pytest
import tiny
import torch
from transformers import AutoConfig, AutoModel

from kd.cli import main
from kd.config.settings import load_config
from kd.errors import KDError
from kd.models.build import build_model
from kd.models.lexical_bert import LexicalBertForSequenceClassification
from kd.models.saved import load_classifier
from kd.run.pipeline import distill as run
from kd.run.pipeline import pretrain
from kd.student.pretrain import pretraining_key

EPOCHS = 4


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("unlabelled") / "texts.txt"
    path.write_text("\n".join(tiny.make_texts(384, seed=5)[0]) + "\n")
    return path


def pretrain_overrides(models, texts_file, tmp_path, **extra) -> list[str]:
    values = {"teacher.name": models["bert"], "student.name": models["student"], "student.init": "random",
              "pretrain.files": f"[{texts_file}]", "pretrain.train.epochs": EPOCHS,
              "pretrain.train.lr": "5e-3", "data.max_length": 32, "output_dir": tmp_path / "runs",
              "run_name": "pre", **extra}
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def pretrained(models, texts_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    assert main(["pretrain", *pretrain_overrides(models, texts_file, tmp)]) == 0
    return tmp / "runs" / "pre"


def test_writes_an_encoder_folder_and_the_run_record(pretrained):
    written = {str(p.relative_to(pretrained)) for p in pretrained.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.jsonl", "final_metrics.json", "student/config.json",
            "student/model.safetensors", "student/tokenizer.json"} <= written
    assert not (pretrained / "state").exists()
    assert AutoConfig.from_pretrained(pretrained / "student").architectures == ["BertModel"]  # no head
    records = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["val"]) for r in records] == [("pretrain", e, None) for e in range(1, 5)]
    final = json.loads((pretrained / "final_metrics.json").read_text())["student"]
    assert final["texts"] == 384 and final["parameters"] == sum(
        p.numel() for p in AutoModel.from_pretrained(pretrained / "student").parameters())


def test_the_student_learns_the_teachers_hidden_states(pretrained):
    loss = json.loads((pretrained / "final_metrics.json").read_text())["student"]["train_loss"]
    assert all(later < earlier for earlier, later in zip(loss, loss[1:])) and loss[-1] < 0.7 * loss[0], loss


def test_a_task_run_starts_from_the_pretrained_encoder(pretrained, models, csv_data, tmp_path):
    encoder = AutoModel.from_pretrained(pretrained / "student")
    classifier = build_model(str(pretrained / "student"), "pretrained", tiny.LABELS)
    for name, weight in encoder.state_dict().items():
        assert torch.equal(classifier.base_model.state_dict()[name], weight), name
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "student.name": pretrained / "student", "student.init": "pretrained",
        "teacher.train.epochs": 1, "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    assert (tmp_path / "runs/run/student/thresholds.json").is_file()


def test_self_attention_relations_alone_are_learned_and_keyed_apart(models, texts_file, tmp_path, capsys):
    relations = {"pretrain.relation_weight": 1.0, "pretrain.hidden_weight": 0.0, "pretrain.relation_heads": 4}
    assert main(["pretrain", *pretrain_overrides(models, texts_file, tmp_path, **relations)]) == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("pretrain:"))
    assert "self-attention relations (4 heads, layers [2, 3], weight 1)" in line and "hidden states" not in line
    loss = json.loads((tmp_path / "runs/pre/final_metrics.json").read_text())["student"]["train_loss"]
    assert loss[-1] < 0.7 * loss[0], loss
    keys = {pretraining_key(load_config([], pretrain_overrides(models, texts_file, tmp_path, **extra)), ["a"], "no")
            for extra in ({}, relations, {"pretrain.relation_weight": 1.0}, {"pretrain.hidden_weight": 2.0})}
    assert len(keys) == 4  # each loss its own cached encoder
    with pytest.raises(KDError, match="needs a loss"):
        load_config([], ["pretrain.hidden_weight=0"])


def test_ctrl_c_then_resume_ends_where_an_uninterrupted_run_ends(pretrained, models, texts_file, tmp_path,
                                                                  monkeypatch):
    restore_loss = tiny.ctrl_c_at_loss_call(monkeypatch, 9)  # epoch 2 of 6 batches
    assert main(["pretrain", *pretrain_overrides(models, texts_file, tmp_path)]) == 130
    assert not (tmp_path / "runs/pre/final_metrics.json").exists()
    restore_loss()
    assert main(["pretrain", "--resume", str(tmp_path / "runs/pre")]) == 0
    final, expected = (json.loads((d / "final_metrics.json").read_text())["student"]
                       for d in (tmp_path / "runs/pre", pretrained))
    assert final["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-6)
    tiny.assert_same_weights(tmp_path / "runs/pre/student/model.safetensors", pretrained / "student/model.safetensors")


def test_errors(models, texts_file, tmp_path):
    with pytest.raises(KDError, match="pretrain.files"):
        pretrain(load_config([], pretrain_overrides(models, texts_file, tmp_path, **{"pretrain.files": "[]"})))
    with pytest.raises(KDError, match=r"text file \(pretrain.files\) not found: .*nope.txt"):
        pretrain(load_config([], pretrain_overrides(models, texts_file, tmp_path,
                                                    **{"pretrain.files": f"[{tmp_path / 'nope.txt'}]"})))
    other_vocab = tiny.make_model(tmp_path / "small_vocab", "bert", hidden=16, vocab=tiny.VOCAB[:20])
    with pytest.raises(KDError, match="teacher's vocab"):
        pretrain(load_config([], pretrain_overrides(models, texts_file, tmp_path,
                                                    **{"student.name": other_vocab})))
    with pytest.raises(KDError, match="pretrain.layer_map"):
        load_config([], ["pretrain.layer_map=[[1]]"])


@pytest.fixture(scope="module")
def student_without_weights(tmp_path_factory):
    """A BERT-Tiny stand-in: its architecture and vocab, no pretrained weights."""
    folder = tiny.make_model(tmp_path_factory.mktemp("no_weights") / "student", "bert", hidden=16)
    (folder / "model.safetensors").unlink()
    return folder


def recipe_run(models, csv_data, tmp_path, run_name: str, **extra) -> dict:
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "run_name": run_name, "cache_dir": tmp_path / "cache", "teacher.train.epochs": 1,
        "student.train.epochs": 1, "pretrain.train.epochs": 2, "pretrain.train.lr": "5e-3", **extra})
    assert main(["distill", *overrides]) == 0
    return json.loads((tmp_path / "runs" / run_name / "final_metrics.json").read_text())["student"]


def test_auto_init_takes_the_students_pretrained_weights_when_they_load(models, csv_data, tmp_path):
    student = recipe_run(models, csv_data, tmp_path, "auto")
    assert student["recipe"].startswith("student.init=auto -> pretrained: ") and "pretraining" not in student
    assert not (tmp_path / "cache/pretrained_students").exists()


def test_auto_init_without_student_weights_pre_trains_it_from_the_teacher_once(
        models, csv_data, student_without_weights, texts_file, tmp_path, capsys):
    first = recipe_run(models, csv_data, tmp_path, "first", **{"student.name": student_without_weights,
                                                                "pretrain.files": f"[{texts_file}]"})
    assert first["recipe"].startswith("student.init=auto -> kd-pretrain: no pretrained weights for ")
    assert first["recipe"].endswith("; with a lexical part of 32,768 rows (student.lexical_buckets; 0: without)")
    assert isinstance(load_classifier(tmp_path / "runs/first/student")[0], LexicalBertForSequenceClassification)
    assert f"its start: {first['recipe']}." in (tmp_path / "runs/first/student/README.md").read_text()
    pretraining = first["pretraining"]
    cached = Path(pretraining["path"])
    assert cached.parent == tmp_path / "cache/pretrained_students" and (cached / "model.safetensors").is_file()
    assert pretraining["texts"] == len(set(tiny.make_texts(512, seed=0)[0]) | set(tiny.make_texts(384, seed=5)[0]))
    assert len(pretraining["train_loss"]) == 2 and pretraining["train_loss"][1] < pretraining["train_loss"][0]
    assert not (tmp_path / "runs/first/pretrained_student").exists()
    written = cached.stat().st_mtime_ns
    capsys.readouterr()
    second = recipe_run(models, csv_data, tmp_path, "second", **{
        "student.name": student_without_weights, "pretrain.files": f"[{texts_file}]", "seed": 7})
    assert "pre-trained encoder from the cache" in capsys.readouterr().err
    assert second["pretraining"] == pretraining and cached.stat().st_mtime_ns == written
    third = recipe_run(models, csv_data, tmp_path, "third", **{
        "student.name": student_without_weights, "pretrain.files": f"[{texts_file}]", "pretrain.train.epochs": 1})
    assert Path(third["pretraining"]["path"]) != cached  # another setting, another pre-training


def test_auto_init_without_any_weights_names_the_students_missing_weights(models, csv_data, student_without_weights,
                                                                          tmp_path):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "student.name": student_without_weights, "teacher.init": "random"})
    with pytest.raises(KDError, match="the student's pretrained weights: the folder .* holds no weights"):
        run(load_config([], overrides))
