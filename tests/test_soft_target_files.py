"""Soft targets from a file of scores computed anywhere (an LLM's zero-shot probabilities, an
ensemble's logits): kd distill trains the student without loading a teacher model."""

import csv
import json

import numpy as np
import pytest
import tiny

from kd.cli import main
from kd.config.settings import load_config
from kd.data.formats import read_labeled
from kd.errors import KDError
from kd.teacher.score_files import file_soft_targets


def scores_for(path, probabilities: bool = True) -> dict[str, np.ndarray]:
    """Per id of a tiny CSV, made-up teacher scores: a function of the row's labels."""
    data = read_labeled(path, "csv", "text", tiny.LABELS, id_column="id")
    values = 0.15 + 0.7 * data.labels
    return {i: (row if probabilities else np.log(row / (1 - row))) for i, row in zip(data.ids, values)}


def write_scores(path, scores: dict, with_id: bool = True, order=None):
    rows = list(scores.items()) if order is None else [(i, scores[i]) for i in order]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({**({"id": i} if with_id else {}),
                                            **dict(zip(tiny.LABELS, map(float, v)))}) + "\n" for i, v in rows))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow((["id"] if with_id else []) + tiny.LABELS)
            for i, v in rows:
                writer.writerow(([i] if with_id else []) + [f"{x:.6f}" for x in v])
    return path


def test_scores_are_matched_by_id_or_row_order_through_the_split(csv_data, tmp_path):
    train = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS, id_column="id")
    part = train.take(np.array([5, 2, 400]))  # as a split or max_train_samples leaves them
    scores = scores_for(csv_data["train"])
    expected = np.log(np.stack([scores[i] for i in part.ids]) / (1 - np.stack([scores[i] for i in part.ids])))
    shuffled = list(reversed(list(scores)))
    by_id = file_soft_targets(write_scores(tmp_path / "s.csv", scores, order=shuffled), part, "probabilities")
    assert np.allclose(by_id.numpy(), expected, atol=1e-4)
    no_ids = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS).take(np.array([5, 2, 400]))
    by_order = file_soft_targets(write_scores(tmp_path / "s.jsonl", scores_for(csv_data["train"], False),
                                              with_id=False), no_ids, "logits")
    assert np.allclose(by_order.numpy(), expected, atol=1e-4)


def test_distill_from_a_file_without_a_teacher_model(models, csv_data, tmp_path, capsys):
    file = write_scores(tmp_path / "llm_scores.csv", scores_for(csv_data["train"]))
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.name": "nonexistent-org/never-loaded", "teacher.soft_targets": file, "data.id_column": "id"})
    assert main(["distill", *overrides]) == 0
    run_dir = tmp_path / "runs/run"
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["teacher"]["path"] == str(file) and final["student"]["val"]["macro_auc"] > 0.5
    assert not (run_dir / "teacher").exists() and not (tmp_path / "cache/soft_targets").exists()
    assert "no teacher model" in capsys.readouterr().err
    assert "| parameters | n/a |" in (run_dir / "student/README.md").read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "fear"} for r in rows], "no column for label\\(s\\) \\['fear'\\]"),
    (lambda rows: rows[:-1], "has no row for 1 train id\\(s\\), e.g. \\['r511'\\]"),
    (lambda rows: [{**r, "joy": "high"} if r["id"] == "r3" else r for r in rows], "row 4, label 'joy' holds 'high'"),
    (lambda rows: [{**r, "anger": 1.5} if r["id"] == "r7" else r for r in rows], "row 8, label 'anger' holds 1.5, not a probability"),
    (lambda rows: rows + [rows[0]], "id 'r0' is on rows 1 and 513"),
])
def test_rows_and_labels_that_do_not_match_are_named(csv_data, tmp_path, edit, message):
    scores = scores_for(csv_data["train"])
    rows = edit([{"id": i, **dict(zip(tiny.LABELS, map(float, v)))} for i, v in scores.items()])
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS, id_column="id")
    with pytest.raises(KDError, match=message):
        file_soft_targets(path, train, "probabilities")


def test_row_order_needs_one_row_per_train_row(csv_data, tmp_path):
    scores = dict(list(scores_for(csv_data["train"]).items())[:100])
    train = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS)
    with pytest.raises(KDError, match="has 100 rows and the train file 512"):
        file_soft_targets(write_scores(tmp_path / "short.csv", scores, with_id=False), train, "probabilities")


@pytest.mark.parametrize("extra, message", [
    ("distill.augment_copies=1", "distill.augment_copies need one"),
    ("teacher.path=somewhere", "teacher.path need one"),
    ("distill.alpha=0", "needs distill.alpha > 0"),
])
def test_settings_that_need_a_teacher_model_are_refused(extra, message):
    with pytest.raises(KDError, match=message):
        load_config([], ["teacher.soft_targets=scores.csv", extra])


def test_parquet_scores(csv_data, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    scores = scores_for(csv_data["train"])
    frame = pd.DataFrame([{"id": i, **dict(zip(tiny.LABELS, v))} for i, v in scores.items()])
    frame.to_parquet(tmp_path / "s.parquet")
    train = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS, id_column="id")
    assert file_soft_targets(tmp_path / "s.parquet", train, "probabilities").shape == (512, 3)
