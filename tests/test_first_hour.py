"""A new user's first hour: every missing model named at once before anything trains, and a
run that fails before training leaves no folder behind."""

import pytest
import tiny

from kd.cli import main
from kd.errors import KDError
from kd.run import pipeline


def test_every_missing_model_is_listed_before_anything_trains(models, csv_data, tmp_path, capsys):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.name": "nonexistent-org/no-such-teacher", "teacher.init": "pretrained",
        "student.name": "bert-tiny", "student.init": "pretrained",
        "distill.extra_teachers": f"[{tmp_path / 'not-a-model'}]"})
    assert main(["distill", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kd: error: 3 model(s) this run needs cannot be loaded: " in err
    assert "nonexistent-org/no-such-teacher is not in the local hub cache" in err and "teacher.init=random" in err
    assert "google/bert_uncased_L-2_H-128_A-2" in err and "student.init=random" in err
    assert f"extra teacher {tmp_path / 'not-a-model'} is not a model folder" in err
    assert not (tmp_path / "runs").exists()  # the cache holds the data, read before (and reused next time)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["data"]


def test_a_run_that_fails_before_training_leaves_no_folder(models, csv_data, tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise KDError("the teacher cannot start")
    monkeypatch.setattr(pipeline, "teacher_stage", fails)
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 2
    assert not (tmp_path / "runs/run").exists()


def test_a_run_that_fails_after_training_started_keeps_its_folder(models, csv_data, tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise KDError("the student cannot start")
    monkeypatch.setattr(pipeline, "student_stage", fails)
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 2
    kept = {p.name for p in (tmp_path / "runs/run").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "teacher"} <= kept  # resumable: the teacher is not trained again


def test_an_existing_folder_is_never_removed(models, csv_data, tmp_path, monkeypatch):
    (tmp_path / "runs/run").mkdir(parents=True)
    monkeypatch.setattr(pipeline, "teacher_stage", lambda *a, **k: (_ for _ in ()).throw(KDError("no")))
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 2
    assert (tmp_path / "runs/run/config.yaml").is_file()


@pytest.mark.parametrize("init", ["teacher-layers", "teacher-embeddings"])
def test_a_student_built_from_the_teacher_needs_the_teachers_weights(models, csv_data, tmp_path, capsys, init):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.name": "distilbert", "teacher.init": "random", "student.init": init})
    assert main(["distill", *overrides]) == 2
    err = capsys.readouterr().err
    assert f"1 model(s) this run needs cannot be loaded: student.init={init} needs the teacher's" in err


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_evaluate_scores_the_folders_kd_export_writes(models, csv_data, tmp_path, capsys, quantize):
    import json

    from kd.deployment.export import export_model

    folder = tiny.make_classifier(tmp_path / "clf", models["bert"], steps=60)
    export_model(folder, tmp_path / "onnx", onnx=True, quantize=quantize)
    scores = {}
    for name in ("clf", "onnx"):
        assert main(["evaluate", "--model", str(tmp_path / name), "--data", str(csv_data["val"]),
                     "--format", "csv", "--text-column", "text"]) == 0
        scores[name] = json.loads(capsys.readouterr().out)
    assert scores["onnx"]["n"] == scores["clf"]["n"] == 96
    tolerance = 0.03 if quantize else 1e-4
    assert scores["onnx"]["macro_auc"] == pytest.approx(scores["clf"]["macro_auc"], abs=tolerance)
    assert scores["onnx"]["bce"] == pytest.approx(scores["clf"]["bce"], abs=tolerance)


@pytest.mark.parametrize("environment, stderr_tty, stdout_tty, drawn", [
    ({}, True, True, True),                                     # a terminal
    ({}, False, False, False),                                  # a log file or a pipe: quiet
    ({"ACCELERATE_MIXED_PRECISION": "no"}, False, True, True),  # accelerate launch tees stderr to the terminal
    ({"ACCELERATE_MIXED_PRECISION": "no"}, False, False, False),
])
def test_progress_bars_are_drawn_on_terminals_only(monkeypatch, environment, stderr_tty, stdout_tty, drawn):
    import sys

    from kd.runtime.report import Reporter

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: stderr_tty)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: stdout_tty)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert Reporter(True).console.is_terminal == drawn


def test_tokenizing_shows_progress(models):
    from contextlib import contextmanager

    from kd.data.tokens import TokenCache
    from kd.models.hub import load_tokenizer

    class Recorder:
        def __init__(self):
            self.steps = []

        @contextmanager
        def task(self, description, total):
            self.steps.append((description, total))
            yield lambda: self.steps.append("step")

    recorder = Recorder()
    tokenizer = load_tokenizer(str(models["bert"]))
    tokenizer.model_max_length = 16
    ids = TokenCache(recorder)(tokenizer, "train", ["happy day"] * 10000)
    assert len(ids) == 10000 and recorder.steps == [("tokenizing train", 2), "step", "step"]


def test_distill_on_a_users_csv_with_labels_inferred_from_its_0_1_columns(models, csv_data, tmp_path):
    import json

    assert main(["distill", "--train", str(csv_data["train"]), "--val", str(csv_data["val"]),
                 f"teacher.name={models['bert']}", f"student.name={models['student']}", "data.max_length=32",
                 f"output_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", "run_name=mine",
                 "teacher.train.epochs=1", "student.train.epochs=1"]) == 0
    config = json.loads((tmp_path / "mine/student/config.json").read_text())
    assert list(config["id2label"].values()) == tiny.LABELS  # every 0/1 column but the text and id
    assert config["problem_type"] == "multi_label_classification"


@pytest.mark.parametrize("content, message", [
    ("text,topic,source\nhi,a,x\nho,b,y\n", "cannot tell the label columns: none of \\['topic', 'source'\\] holds only 0 and 1"),
    ("text,label\nhi,0\nho,2\nhu,1\n", "label values must be 0 or 1; line 3 column 'label' holds '2' \\(one class column: "
                                       "set data.problem_type=single_label\\)"),
    ("text,a,b\nhi,1,1\nho,0,1\n", "single-label data needs exactly one label per row; line 2 holds another number"),
])
def test_labels_that_cannot_be_told_apart_are_a_clear_error(tmp_path, capsys, content, message):
    import re

    path = tmp_path / "mine.csv"
    path.write_text(content)
    argv = ["distill", "--train", str(path), f"output_dir={tmp_path}"]
    if "exactly one" in message:
        argv.append("data.problem_type=single_label")
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_class_ids_read_as_classes_when_single_label_is_set(tmp_path):
    from kd.data.formats import read_labeled

    path = tmp_path / "ids.csv"
    path.write_text("text,label\nhi,0\nho,2\nhu,1\nha,10\n")
    data = read_labeled(path, "csv", "text", ["label"], problem_type="single_label")
    assert data.single_label and data.label_names == ["0", "1", "2", "10"]  # numeric order
    assert data.labels.argmax(axis=1).tolist() == [0, 2, 1, 3]


def test_own_data_flags_go_with_train_only(capsys):
    assert main(["distill", "--val", "v.csv"]) == 2
    assert "go with --train FILE" in capsys.readouterr().err
