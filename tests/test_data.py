from dataclasses import replace

import numpy as np
import pytest
import tiny
import torch
from conftest import SHARED

from kd.config.settings import DataConfig
from kd.data.batches import EncodedDataset, PadCollator
from kd.data.formats import JIGSAW_LABELS, read_labeled
from kd.data.splits import load_splits, split_rows
from kd.data.tokens import TokenCache, encode, tokenizer_fingerprint
from kd.errors import KDError
from kd.models.hub import wordpiece_tokenizer

JIGSAW_HEADER = '"id","comment_text","toxic","severe_toxic","obscene","threat","insult","identity_hate"\n'


def test_jigsaw_csv_with_newlines_inside_quotes(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(JIGSAW_HEADER + '"a1","first line\nsecond ""quoted"" line",1,0,1,0,0,0\n'
                    '"a2","plain",0,0,0,0,0,1\n')
    data = read_labeled(path, "jigsaw")
    assert data.texts == ['first line\nsecond "quoted" line', "plain"]
    assert data.label_names == JIGSAW_LABELS
    assert data.labels.tolist() == [[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]]


@pytest.mark.skipif(not (SHARED / "data/jigsaw-sample").is_dir(), reason="needs ../shared")
def test_real_jigsaw_sample():
    data = read_labeled(SHARED / "data/jigsaw-sample/train.csv", "jigsaw")
    assert len(data) == 282
    assert data.labels.sum(axis=0).tolist() == [28, 3, 16, 2, 16, 5]


@pytest.mark.skipif(not (SHARED / "data/hateval2019-en").is_dir(), reason="needs ../shared")
def test_real_hateval_csv_with_crlf():
    data = read_labeled(SHARED / "data/hateval2019-en/hateval2019_en_dev.csv", "csv", "text", ["HS", "TR", "AG"])
    assert len(data) == 1000 and data.labels.shape == (1000, 3)
    assert not any(t.endswith("\r") for t in data.texts)


def test_goemotions_label_lists(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text('"Lol ""weed"", I love it"\t1,2\tx1\nplain\t0\tx2\n')
    names = tmp_path / "labels.txt"
    names.write_text("a\nb\nc")
    data = read_labeled(path, "goemotions", labels_file=names)
    assert data.texts == ['Lol "weed", I love it', "plain"]
    assert data.labels.tolist() == [[0, 1, 1], [1, 0, 0]]


def test_embedded_sample_loads_with_the_defaults():
    train, val = load_splits(DataConfig())
    assert (len(train), len(val), len(train.label_names)) == (4000, 1000, 28)
    assert train.labels.sum(axis=1).min() >= 1


def test_max_samples_draw_rows_at_random_not_the_first_ones(tmp_path):
    path = tmp_path / "sorted.csv"  # sorted by label: the first half is all "neg"
    path.write_text("text,label\n" + "".join(f"text {i},{'neg' if i < 100 else 'pos'}\n" for i in range(200)))
    cfg = DataConfig(format="csv", train=str(path), val=None, text_column="text", label_columns=["label"],
                     labels_file=None, max_train_samples=40, max_val_samples=10)
    train, val = load_splits(cfg)
    assert len(train) == 40 and len(val) == 10
    assert 10 <= train.labels[:, 1].sum() <= 30  # both classes, about half each
    assert list(train.rows) == sorted(train.rows)  # file order kept
    again, _ = load_splits(cfg)
    assert list(again.texts) == list(train.texts)  # the split seed decides: the same rows every time
    other, _ = load_splits(replace(cfg, split_seed=7))
    assert list(other.texts) != list(train.texts)


def test_split_is_deterministic_80_20_and_disjoint(tmp_path):
    path = tiny.write_csv(tmp_path / "all.csv", 100, seed=0)
    cfg = DataConfig(format="csv", train=str(path), val=None, text_column="text",
                     label_columns=tiny.LABELS, labels_file=None)
    train, val = load_splits(cfg)
    again, _ = load_splits(cfg)
    assert (len(train), len(val)) == (80, 20) and train.texts == again.texts
    train_rows, val_rows = split_rows(100, 0.2, 42)
    assert not set(train_rows) & set(val_rows) and len(set(train_rows) | set(val_rows)) == 100


@pytest.mark.parametrize("content, message", [
    ("id,text,anger\n1,hi,2\n2,ho,0\n", "label values must be 0 or 1"),
    ("id,text,anger\n1,hi,1\n2,ho,x\n", "label values must be 0 or 1"),
    ("id,text,anger\n1,hi,x\n", "holds one class only"),
    ("id,txt,anger\n1,hi,1\n", "missing column"),
    ("id,text,anger\n1,hi,1\n2,  ,1\n3,,0\n", "2 empty text\\(s\\) on lines 3, 4 \\(no visible character; set data.empty_texts=drop"),
    ("id;text;anger\n1;hi;1\n", "looks semicolon-separated: set data.delimiter"),
    ("", "empty"),
])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(KDError, match=message):
        read_labeled(path, "csv", "text", ["anger"])


def test_empty_texts_can_be_dropped_and_are_counted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text,anger\n1,hi,1\n2,  ,1\n3,,0\n4,yo,0\n")
    data = read_labeled(path, "csv", "text", ["anger"], empty_texts="drop")
    assert data.texts == ["hi", "yo"] and data.labels[:, 0].tolist() == [1, 0] and data.dropped == 2
    with pytest.raises(KDError, match="error or drop"):
        read_labeled(path, "csv", "text", ["anger"], empty_texts="skip")


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate\n"
                    "a,hi,0,0,0,0,0,0\nb,yo,1,0,0,0,0,0\na,hey,0,0,0,0,0,0\n")
    with pytest.raises(KDError, match="1 duplicate id.*'a' on lines 2 and 4"):
        read_labeled(path, "jigsaw")
    with pytest.raises(KDError, match="duplicate id"):
        read_labeled(path, "csv", "comment_text", ["toxic"], id_column="id")
    assert len(read_labeled(path, "csv", "comment_text", ["toxic"])) == 3  # no id column named
    go, names = tiny.write_goemotions(tmp_path / "go", 3, seed=0)
    go.write_text("hello\t0\tc1\nthere\t1\tc1\n")
    with pytest.raises(KDError, match="'c1' on lines 1 and 2"):
        read_labeled(go, "goemotions", labels_file=names)


def test_a_megabyte_text_is_read_and_truncated(tmp_path, models):
    from kd.models.hub import load_tokenizer

    path = tmp_path / "big.csv"
    path.write_text("id,text,anger\n1," + "happy day " * 100_000 + ",1\n2,hi,0\n")
    data = read_labeled(path, "csv", "text", ["anger"])
    assert len(data.texts[0]) == 1_000_000
    ids = encode(load_tokenizer(str(models["bert"])), data.texts, 32)
    assert [len(row) for row in ids] == [32, 3]


def test_bytes_that_are_not_utf8_are_a_clear_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,text,anger\n1,caf\u00e9 cr\u00e8me,1\n".encode("latin-1"))
    with pytest.raises(KDError, match="not UTF-8.*at byte"):
        read_labeled(path, "csv", "text", ["anger"])


def test_labels_without_positives_are_listed(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text,anger,joy\n1,hi,1,0\n2,yo,0,0\n")
    assert read_labeled(path, "csv", "text", ["anger", "joy"]).labels_without_positives() == ["joy"]


def test_missing_file_and_bad_label_ids(tmp_path):
    with pytest.raises(KDError, match="not found"):
        read_labeled(tmp_path / "absent.csv", "jigsaw")
    path, names = tiny.write_goemotions(tmp_path, 5, seed=0)
    path.write_text("hello\t7\tid\n")
    with pytest.raises(KDError, match="outside"):
        read_labeled(path, "goemotions", labels_file=names)
    path.write_text("hello\tx\tid\n")
    with pytest.raises(KDError, match="unparseable"):
        read_labeled(path, "goemotions", labels_file=names)


def test_train_and_val_with_different_labels(tmp_path):
    train = tiny.write_csv(tmp_path / "t.csv", 10, seed=0)
    val = tmp_path / "v.csv"
    val.write_text(train.read_text().replace("fear", "dread"))
    cfg = DataConfig(format="csv", train=str(train), val=str(val), text_column="text",
                     label_columns=tiny.LABELS, labels_file=None)
    with pytest.raises(KDError, match="missing column"):
        load_splits(cfg)


def test_collator_pads_per_batch_and_adds_token_types_only_when_asked():
    dataset = EncodedDataset([[2, 5, 3], [2, 5, 6, 7, 3], [2, 9, 3]], np.eye(3, dtype=np.float32),
                             teacher_logits=torch.arange(6.0).view(3, 2))
    for with_types in (True, False):
        batch = PadCollator(0, with_types)(dataset.__getitems__([2, 1]))
        assert batch["input_ids"].tolist() == [[2, 9, 3, 0, 0], [2, 5, 6, 7, 3]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
        assert ("token_type_ids" in batch) is with_types
        assert batch["labels"].tolist() == [[0, 0, 1], [0, 1, 0]] and batch["index"].tolist() == [2, 1]
        assert batch["teacher_logits"].tolist() == [[4, 5], [2, 3]]


def test_collator_rounds_the_width_up_to_a_multiple():
    dataset = EncodedDataset([[2, 5, 3], [2, 5, 6, 7, 3], [2, 5, 6, 7, 8, 9, 3, 1]], np.eye(3, dtype=np.float32))
    collate = PadCollator(0, True, multiple=4)
    batch = collate(dataset.__getitems__([0, 1]))
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0, 0, 0, 0, 0], [2, 5, 6, 7, 3, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert batch["token_type_ids"].shape == (2, 8)
    assert collate(dataset.__getitems__([2]))["input_ids"].shape == (1, 8)  # already a multiple


def test_tokenization_happens_once_per_distinct_tokenizer():
    bert, distil = wordpiece_tokenizer(tiny.VOCAB, "bert"), wordpiece_tokenizer(tiny.VOCAB, "distilbert")
    other = wordpiece_tokenizer(tiny.VOCAB[:-1], "bert")
    assert tokenizer_fingerprint(bert) == tokenizer_fingerprint(distil) != tokenizer_fingerprint(other)
    bert.model_max_length = distil.model_max_length = 6
    cache = TokenCache()
    first = cache(bert, "train", ["happy day the a very so and it"])
    assert cache(distil, "train", ["happy day the a very so and it"]) is first  # same tokenizer, same texts
    other_texts = cache(bert, "train", ["very sad"])  # the same split name, other texts: their own ids
    assert other_texts is not first and other_texts.tolist() == encode(bert, ["very sad"], 6).tolist()
    assert len(first[0]) == 6 and first[0][0] == 2 and first[0][-1] == 3  # [CLS] ... [SEP], truncated
    fresh = wordpiece_tokenizer(tiny.VOCAB, "bert")  # encoding set bert's truncation in place:
    assert tokenizer_fingerprint(fresh) == tokenizer_fingerprint(bert)  # the fingerprint ignores it


def test_the_run_reports_dropped_rows_and_labels_without_positives(capsys, tmp_path):
    from kd.data.splits import Splits
    from kd.data.texts import LabeledTexts
    from kd.run.pipeline import _report_data

    train = LabeledTexts(["a", "b"], np.array([[1, 0], [0, 0]], np.float32), ["x", "y"], dropped=3)
    val = LabeledTexts(["c"], np.array([[1, 1]], np.float32), ["x", "y"])
    _report_data(tiny.context(tmp_path), Splits(train, val), "student.init=random")
    out = " ".join(capsys.readouterr().err.split())  # progress and notes go to stderr
    assert "left out 3 rows with an empty text from the train file" in out
    assert "label 'y' has no positive example in train" in out and "in val" not in out
