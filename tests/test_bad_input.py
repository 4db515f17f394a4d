"""Messy data files: each is read exactly as written, or refused with the lines it concerns.
Never a row lost or merged, a label moved or a text changed without a word."""

import json

import numpy as np
import pytest

from kd.config.settings import DataConfig, load_config
from kd.data.formats import read_labeled
from kd.data.splits import load_splits
from kd.data.transfer import read_texts
from kd.errors import KDError


def read_goemotions(tmp_path, content: str | bytes, labels: str = "a\nb\nc\n", **kw):
    path, names = tmp_path / "data.tsv", tmp_path / "labels.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    names.write_text(labels, encoding="utf-8")
    return read_labeled(path, "goemotions", labels_file=names, **kw)


def read_csv(tmp_path, content: str | bytes, labels=("a", "b"), name="data.csv", **kw):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return read_labeled(path, "csv", "text", list(labels), **kw)


@pytest.mark.parametrize("content, message", [
    # a stray quote opens a text that swallows the next rows
    ('"stray quote\t1\nsecond\t0\nthird 5"\t2\nfourth\t0\n', "lines 1-3 were read as one row, but lines 1, 2"),
    ('ok\t0\n"stray quote\t1\na 12"\t2\nlast\t0\n', "lines 2-3 were read as one row, but line 2"),
    ('ok\t0\n"stray quote\t1\n12" ruler\t2\nlast\t0\n', "line 3: '\\\\t' expected after '\"' in the row that starts on line 2"),
    ('ok\t0\n"never closed\t1\nlast\t0\n', "line 3: unexpected end of data in the row that starts on line 2"),
    # a quoted text followed by more text: the quotes would be eaten
    ('"Great" movie\t1\nx\t0\n', "line 1: '\\\\t' expected after '\"'"),
    ('x\t0\n"a" b "c"\t1\n', "line 2: '\\\\t' expected after '\"'"),
])
def test_quotes_that_would_merge_rows_or_vanish_are_refused(tmp_path, content, message):
    with pytest.raises(KDError, match=message.replace("(", "\\(")):
        read_goemotions(tmp_path, content)


def test_quotes_that_parse_are_kept_and_quoting_none_reads_them_as_characters(tmp_path):
    data = read_goemotions(tmp_path, 'a 12" ruler\t1\nit "works"\t0\n"""Quoted"" reply"\t2\n')
    assert data.texts == ['a 12" ruler', 'it "works"', '"Quoted" reply']
    data = read_goemotions(tmp_path, '"stray quote\t1\nsecond\t0\n"Great" movie\t2\n', quoting="none")
    assert data.texts == ['"stray quote', "second", '"Great" movie'] and len(data) == 3
    assert data.labels.argmax(axis=1).tolist() == [1, 0, 2]


@pytest.mark.parametrize("content, message", [
    ('text,a,b\n"He said "hi" loudly",1,0\n', "line 2: ',' expected after '\"'"),
    ('text,a,b\nfine,0,0\n"a stray, quote,1,0\nnext 5",0,1\n', "lines 3-4 were read as one row, but line 3"),
    ('text,a,b\nfine,0,0\n"a stray, quote,1,0\nnext,0,1\n', "line 4: unexpected end of data in the row that starts on line 3"),
    ('text,a,b\nhi,1,0\nbye,1\n', "1 row\\(s\\) without 3 fields, on line 3"),
    ('text,a,b\nhi, there,1,0\n', "without 3 fields, on line 2"),
])
def test_csv_rows_that_do_not_parse_name_their_lines(tmp_path, content, message):
    with pytest.raises(KDError, match=message):
        read_csv(tmp_path, content)


def test_multiline_quoted_texts_still_read_and_lines_are_counted_in_the_file(tmp_path):
    content = 'text,a,b\n"first\nsecond, with 1,0 inside\nthird",1,0\nok,0,1\n,0,0\n'
    with pytest.raises(KDError, match="on line 6"):  # the empty text's own line, not its row number
        read_csv(tmp_path, content)
    data = read_csv(tmp_path, content, empty_texts="drop")
    assert data.texts == ["first\nsecond, with 1,0 inside\nthird", "ok"] and data.dropped == 1


@pytest.mark.parametrize("ids", ["1_0", "٣", "1.0", "+1", "1;2", "0x1", ""])
def test_label_ids_are_plain_decimal_numbers(tmp_path, ids):
    with pytest.raises(KDError, match="unparseable label ids"):
        read_goemotions(tmp_path, f"fine\t0\ntext\t{ids}\n", labels="\n".join("abcdefghijkl"))


def test_label_ids_with_spaces_after_commas_are_read(tmp_path):
    assert read_goemotions(tmp_path, "text\t0, 2\n").labels.tolist() == [[1, 0, 1]]


@pytest.mark.parametrize("text", ["\u200b", "\u200b\u200c\u200d", "\ufeff \u2060", " \u00a0\u3000",
                                  "\u200e\u200f", "\u3164", "\u2800\u2800", "\u0301\u0308", "\t\x0b"])
def test_texts_with_nothing_visible_are_empty(tmp_path, text):
    with pytest.raises(KDError, match="1 empty text\\(s\\) on line 3"):
        read_csv(tmp_path, f"text,a,b\nfine,1,0\n{text},0,1\n")
    data = read_csv(tmp_path, f"text,a,b\nfine,1,0\n{text},0,1\n", empty_texts="drop")
    assert data.texts == ["fine"] and data.dropped == 1


@pytest.mark.parametrize("text", ["\u200bhi", "é", "🙂", "\u0915\u093f", "ー"])
def test_short_visible_texts_are_not_empty(tmp_path, text):
    assert read_csv(tmp_path, f"text,a,b\n{text},1,0\n").texts == [text]


def test_byte_order_marks_are_not_part_of_names(tmp_path):
    names = tmp_path / "labels.txt"
    names.write_bytes("\ufeffjoy\nanger\n".encode())
    (tmp_path / "g.tsv").write_text("text\t0\n")
    assert read_labeled(tmp_path / "g.tsv", "goemotions", labels_file=names).label_names == ["joy", "anger"]
    data = read_csv(tmp_path, "\ufefftext,a,b\nhi,1,0\n".encode())
    assert data.texts == ["hi"] and data.labels.tolist() == [[1, 0]]


@pytest.mark.parametrize("content, offset, line", [
    (b"text,a,b\nhi,1,0\ncaf\xe9,0,1\n", 19, 3),
    (b"text,a,b\n" + b"hello,1,0\n" * 20000 + b"\xff,0,1\n", 9 + 10 * 20000, 20002),
])
def test_bytes_that_are_not_utf8_are_located_exactly(tmp_path, content, offset, line):
    with pytest.raises(KDError, match=f"at byte offset {offset}, line {line}"):
        read_csv(tmp_path, content)


@pytest.mark.parametrize("labels_file, columns, content, message", [
    ("joy\nanger\njoy\n", None, None, "names label 'joy' twice"),
    (None, ["a", "b", "a"], "text,a,b\nhi,1,0\n", "data.label_columns names label 'a' twice"),
    (None, ["a", "b"], "text,a,a,b\nhi,1,0,1\n", "the header names column\\(s\\) \\['a'\\] more than once"),
    (None, ["a", "b"], "text,text,a,b\nhi,ho,1,0\n", "the header names column\\(s\\) \\['text'\\] more than once"),
])
def test_duplicate_label_names_are_refused(tmp_path, labels_file, columns, content, message):
    with pytest.raises(KDError, match=message):
        if labels_file:
            read_goemotions(tmp_path, "text\t0\n", labels=labels_file)
        else:
            read_csv(tmp_path, content, labels=columns)


@pytest.mark.parametrize("content, columns, hint", [
    ("text;a;b\n\"hi, there\";1;0\n", ["a", "b"], "semicolon"),
    ("text|a|b\nhi, there, you|1|0\n", ["a", "b"], "pipe"),
    ("text\ta\tb\nhi, there\t1\t0\n", ["a", "b"], "tab"),
])
def test_the_delimiter_hint_shows_when_texts_hold_commas(tmp_path, content, columns, hint):
    with pytest.raises(KDError, match=f"looks {hint}-separated: set data.delimiter"):
        read_csv(tmp_path, content, labels=columns)


def test_a_label_positive_on_every_row_is_found(tmp_path):
    data = read_csv(tmp_path, "text,a,b\nhi,1,0\nho,1,1\n")
    assert data.labels_on_every_row() == ["a"] and data.labels_without_positives() == []
    assert np.array_equal(data.labels, [[1, 0], [1, 1]])


@pytest.mark.parametrize("delimiter", ["ab", "", '"', "\n"])
def test_a_delimiter_that_is_not_one_character_is_refused(tmp_path, delimiter):
    with pytest.raises(KDError, match="data.delimiter must be one character"):
        read_csv(tmp_path, "text,a,b\nhi,1,0\n", delimiter=delimiter)
    with pytest.raises(KDError, match="data.delimiter must be one character"):
        load_config([], [f"data.delimiter={json.dumps(delimiter)}"])


@pytest.mark.parametrize("labels", ["a\n\nb\nc\n", "\na\nb\n", "a\n \nb\n"])
def test_blank_lines_inside_a_labels_file_are_refused_since_ids_count_lines(tmp_path, labels):
    with pytest.raises(KDError, match="blank; label ids count lines"):
        read_goemotions(tmp_path, "text\t0\n", labels=labels)


def test_blank_lines_after_the_last_label_are_fine(tmp_path):
    assert read_goemotions(tmp_path, "text\t1\n", labels="a\nb\n\n\n").label_names == ["a", "b"]


def test_a_val_fraction_that_leaves_no_train_rows_is_refused(tmp_path):
    path = tmp_path / "all.csv"
    path.write_text("text,a\none,1\ntwo,0\nthree,1\n")
    cfg = DataConfig(format="csv", train=str(path), val=None, text_column="text", label_columns=["a"],
                     labels_file=None, val_fraction=0.9)
    with pytest.raises(KDError, match="data.val_fraction=0.9 of 3 rows leaves no train rows"):
        load_splits(cfg)


def test_transfer_files_drop_invisible_lines_and_byte_order_marks(tmp_path):
    path = tmp_path / "more.txt"
    path.write_bytes("\ufefffirst\n\u200b\u200b\n  \nsecond\n".encode())
    assert read_texts([str(path)]) == ["first", "second"]


def test_lines_of_spaces_hold_no_row(tmp_path):
    data = read_csv(tmp_path, "text,a,b\nhi,1,0\n   \n\t\nho,0,1\n  ")
    assert data.texts == ["hi", "ho"] and data.labels.tolist() == [[1, 0], [0, 1]]


MULTILINE = ['first line, with a comma\nsecond "quoted" line\n\nafter a blank line',
             'one\n2,1\nthree',  # a line inside that holds a delimiter
             'a "quote", a comma\r\nand a Windows line end',
             'short']


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_valid_csv_with_multiline_texts_in_any_column_reads_as_pandas_reads_it(tmp_path, position):
    """RFC 4180 quoting: texts holding newlines, blank lines, commas and doubled quotes, in the
    first, a middle or the last column, read exactly as the csv module and pandas read them."""
    import pandas as pd

    columns = {"first": ["text", "id", "label"], "middle": ["id", "text", "label"], "last": ["id", "label", "text"]}
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(4)], "text": MULTILINE, "label": ["pos", "neg", "neg", "pos"]})
    path = tmp_path / "data.csv"
    frame[columns[position]].to_csv(path, index=False)
    data = read_labeled(path, "csv", "text", ["label"], id_column="id")
    again = pd.read_csv(path, keep_default_na=False, dtype=str)
    assert list(data.texts) == list(again["text"]) == MULTILINE
    assert data.label_names == ["neg", "pos"] and data.labels.argmax(axis=1).tolist() == [1, 0, 0, 1]
    assert list(data.ids) == ["r0", "r1", "r2", "r3"]


@pytest.mark.parametrize("content, message", [
    # the text in the last column: a stray quote swallows the next row (its closing quote ends that row)
    ('id,label,text\n1,0,"a stray quote\n2,1,the next row"\n3,0,fine\n', "lines 2-3 were read as one row, but line 3"),
    # ... or the next two
    ('id,label,text\n1,0,"a stray quote\n2,1,the next row\n3,0,and the next"\n', "lines 2-4 were read as one row, but lines 3, 4"),
    # the text in a middle column
    ('id,text,label\n1,"a stray quote,0\n2,the next row,1\n3,and one more",0\n', "lines 2-4 were read as one row, but lines 2, 3"),
])
def test_a_stray_quote_that_merges_rows_is_refused_in_any_column(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KDError, match=message):
        read_labeled(path, "csv", "text", ["label"], id_column="id", problem_type="single_label")
