"""Labelled data as CSV, TSV, JSON lines or Parquet, one file or a glob of shards."""

import json

import numpy as np
import pytest
import tiny

from kd.cli import main
from kd.config.settings import DataConfig
from kd.data.formats import read_labeled
from kd.errors import KDError
from kd.models.hub import load_tokenizer
from kd.teacher.logits_cache import soft_targets_key


def as_jsonl(csv_path, out, rows=slice(None)):
    data = read_labeled(csv_path, "csv", "text", tiny.LABELS, id_column="id")
    records = [{"id": i, "text": t, **{n: int(v) for n, v in zip(tiny.LABELS, row)}}
               for i, t, row in zip(data.ids, data.texts, data.labels)][rows]
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


def test_json_lines_read_as_the_csv_they_came_from(csv_data, tmp_path):
    original = as_jsonl(csv_data["train"], tmp_path / "train.jsonl")
    data = read_labeled(tmp_path / "train.jsonl", "csv", "text", tiny.LABELS, id_column="id")
    assert data.texts == original.texts and np.array_equal(data.labels, original.labels) and data.ids == original.ids


def test_shards_read_as_one_file_in_name_order(models, csv_data, tmp_path):
    whole = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS, id_column="id")
    lines = csv_data["train"].read_text().splitlines(keepends=True)
    (tmp_path / "shards").mkdir()
    for k, start in enumerate(range(1, len(lines), 200)):
        (tmp_path / f"shards/part-{k}.csv").write_text(lines[0] + "".join(lines[start:start + 200]))
    data = read_labeled(tmp_path / "shards/part-*.csv", "csv", "text", tiny.LABELS, id_column="id")
    assert data.texts == whole.texts and np.array_equal(data.labels, whole.labels)
    assert data.file_rows == 512 and data.rows.tolist() == list(range(512))
    cfg = DataConfig(format="csv", train=str(tmp_path / "shards/part-*.csv"), label_columns=tiny.LABELS)
    tokenizer = load_tokenizer(str(models["bert"]))
    before = soft_targets_key(models["bert"], cfg, tokenizer)
    last = tmp_path / "shards/part-2.csv"
    last.write_text(last.read_text().replace(",1\n", ",0\n", 1))
    assert soft_targets_key(models["bert"], cfg, tokenizer) != before  # keyed by every shard's contents


def test_shards_of_a_class_column_share_their_classes(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\nhi,joy\nho,anger\n")
    (tmp_path / "b.csv").write_text("text,label\nhu,fear\nha,joy\n")
    data = read_labeled(tmp_path / "*.csv", "csv", "text", ["label"])
    assert data.single_label and data.label_names == ["anger", "fear", "joy"]
    assert data.labels.argmax(axis=1).tolist() == [2, 0, 1, 2]


@pytest.mark.parametrize("files, message", [
    ({"a.csv": "id,text,x\n1,hi,1\n", "b.csv": "id,text,x\n1,ho,0\n"}, "id '1' is in more than one shard"),
    ({"a.jsonl": '{"text": "hi", "x": 1}\n{"text": "ho"}\n'}, "record 2 lacks \\['x'\\]"),
    ({"a.jsonl": '{"text": "hi", "x": 1}\n[1, 2]\n'}, "every line must hold one JSON object"),
    ({"a.jsonl": '{"text": "hi", "x": 1}\n{"text": "ho", "x": 1\n'}, "line 2 is not valid JSON"),
    ({"a.jsonl": '{"text": "hi", "x": 1}\n{"text": "ho", "x": 1.5}\n'}, "label values must be 0 or 1; line 2 column 'x' holds '1.5'"),
    ({}, "no file matches"),
])
def test_bad_shards_and_records_are_one_line_errors(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    pattern = tmp_path / ("*.jsonl" if any(n.endswith(".jsonl") for n in files) else "*.csv")
    with pytest.raises(KDError, match=message):
        read_labeled(pattern, "csv", "text", ["x"], id_column="id" if "id," in str(files) else None)


def test_json_booleans_are_labels(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hi", "x": true}\n{"text": "ho", "x": false}\n')
    assert read_labeled(tmp_path / "a.jsonl", "csv", "text", ["x"]).labels.tolist() == [[1.0], [0.0]]


def test_parquet(csv_data, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    original = read_labeled(csv_data["train"], "csv", "text", tiny.LABELS)
    pd.read_csv(csv_data["train"]).to_parquet(tmp_path / "train.parquet")
    data = read_labeled(tmp_path / "train.parquet", "csv", "text", tiny.LABELS)
    assert data.texts == original.texts and np.array_equal(data.labels, original.labels)


def test_distill_on_jsonl_shards(models, csv_data, tmp_path):
    (tmp_path / "train").mkdir()
    as_jsonl(csv_data["train"], tmp_path / "train/part-0.jsonl", slice(0, 300))
    as_jsonl(csv_data["train"], tmp_path / "train/part-1.jsonl", slice(300, None))
    as_jsonl(csv_data["val"], tmp_path / "val.jsonl")
    assert main(["distill", "--train", str(tmp_path / "train/*.jsonl"), "--val", str(tmp_path / "val.jsonl"),
                 f"teacher.name={models['bert']}", f"student.name={models['student']}", "data.max_length=32",
                 f"output_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", "run_name=shards",
                 "teacher.train.epochs=1", "student.train.epochs=1"]) == 0
    final = json.loads((tmp_path / "shards/final_metrics.json").read_text())
    assert final["student"]["val"]["n"] == 96
