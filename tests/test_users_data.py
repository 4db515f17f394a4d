"""A user's own data from training to prediction: every command reads a file as kd distill read
its data, classes keep the names the user gives them, and bad input is refused in one line
before anything trains."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tiny

from kd.cli import main


@pytest.fixture(scope="module")
def own_run(models, tmp_path_factory):
    """kd distill on a user's CSV whose texts sit in a `body` column and whose classes are ids 0,
    1, 2, named anger, joy, fear by data.class_names."""
    tmp = tmp_path_factory.mktemp("own")
    for split, rows, seed in (("train", 300, 0), ("val", 90, 1)):
        rng = np.random.default_rng(seed)
        with open(tmp / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["body", "class"])
            for _ in range(rows):
                k = int(rng.integers(3))
                words = list(rng.choice(tiny.FILLER, size=4)) + [str(rng.choice(tiny.LABEL_WORDS[tiny.LABELS[k]]))]
                writer.writerow([" ".join(words), k])
    assert main(["distill", "--train", str(tmp / "train.csv"), "--val", str(tmp / "val.csv"), "--text-column", "body",
                 "--label-columns", "class", "data.problem_type=single_label", f"data.class_names={tiny.LABELS}",
                 f"teacher.name={models['bert']}", f"student.name={models['student']}", "data.max_length=32",
                 f"output_dir={tmp / 'runs'}", f"cache_dir={tmp / 'cache'}", "run_name=run", "teacher.train.epochs=1",
                 "student.train.epochs=1"]) == 0
    return tmp


def test_class_ids_take_the_names_the_user_gives_them(own_run, capsys):
    student = own_run / "runs/run/student"
    config = json.loads((student / "config.json").read_text())
    assert list(config["id2label"].values()) == tiny.LABELS  # id 0 is anger, 1 joy, 2 fear
    assert "`anger`" in (student / "README.md").read_text()
    capsys.readouterr()
    assert main(["predict", "--model", str(student), "happy great day"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["probabilities"]) == set(tiny.LABELS) and record["labels"][0] in tiny.LABELS


def test_evaluate_reads_a_file_as_its_run_read_its_data(own_run, capsys):
    """The run read `body` and class ids named by data.class_names: kd evaluate and kd export read
    the same file the same way, with no option repeated."""
    student = own_run / "runs/run/student"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(student), "--data", str(own_run / "val.csv")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    final = json.loads((own_run / "runs/run/final_metrics.json").read_text())
    assert metrics["n"] == 90 and metrics["cross_entropy"] == pytest.approx(final["student"]["val"]["cross_entropy"],
                                                                            abs=1e-5)
    assert main(["export", "--model", str(student), "--out", str(own_run / "export"), "--onnx", "--data",
                 str(own_run / "val.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["parity"]["labelled_rows"] == 90
    assert main(["evaluate", "--model", str(student), "--data", str(own_run / "val.csv"), "--text-column", "nope"]) == 2
    assert "missing column(s) ['nope']" in capsys.readouterr().err  # given options still win


def test_predict_gives_one_prediction_per_input_line_or_row(own_run, capsys):
    student = own_run / "runs/run/student"
    lines = own_run / "texts.txt"  # a form feed and a Unicode line separator inside lines are no line ends
    lines.write_text("happy\fgreat day\nscared\u2028afraid\r\nfurious rage\n\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", "--model", str(student), "--input", str(lines)]) == 0
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert texts == ["happy\fgreat day", "scared\u2028afraid", "furious rage"]
    assert main(["predict", "--model", str(student), "--input", str(own_run / "val.csv")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 90  # the `body` column, one prediction per row


def test_a_split_whose_every_text_is_dropped_is_refused_before_training(models, tmp_path, capsys):
    (tmp_path / "train.csv").write_text("text,a\nhappy,1\nsad,0\nfine,0\n", encoding="utf-8")
    (tmp_path / "val.csv").write_text("text,a\n ,1\n\u200b,0\n", encoding="utf-8")
    assert main(["distill", "--train", str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv"),
                 "data.empty_texts=drop", f"teacher.name={models['bert']}", f"student.name={models['student']}",
                 f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err
    assert "no val row is left: all 2 text(s) are empty" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder


def test_the_same_bytes_under_another_name_ending_are_read_anew(tmp_path):
    """A file's ending decides its delimiter: the cached columns of a.csv never stand in for a.tsv."""
    from kd.config.settings import DataConfig
    from kd.data.splits import load_splits
    from kd.errors import KDError

    content = "text,a\nhappy day,1\nsad day,0\nfine day,0\n"
    for name in ("a.csv", "a.tsv"):
        (tmp_path / name).write_text(content, encoding="utf-8")
    settings = dict(format="csv", val=None, text_column="text", label_columns=["a"], labels_file=None,
                    val_fraction=0.34)
    train, _ = load_splits(DataConfig(train=str(tmp_path / "a.csv"), **settings), tmp_path / "store")
    assert len(train) == 2
    with pytest.raises(KDError, match="missing column"):  # read as TSV: one column `text,a`
        load_splits(DataConfig(train=str(tmp_path / "a.tsv"), **settings), tmp_path / "store")


def test_a_model_folder_that_names_a_label_twice_is_refused(models, tmp_path, capsys):
    folder = tiny.make_classifier(tmp_path / "clf", models["bert"], steps=1)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"]["2"] = config["id2label"]["0"]
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["predict", "--model", str(folder), "happy"]) == 2
    assert "names label(s) ['anger'] for more than one output" in capsys.readouterr().err


def test_internal_names_are_no_config_keys(capsys):
    assert main(["distill", "distill.RANGES=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'distill.RANGES'" in err and "RANGES," not in err.split("known here")[1]
