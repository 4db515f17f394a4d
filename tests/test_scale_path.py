"""The data path for large corpora: flat token columns saved and memory-mapped back, tokenization in
several processes, and the teacher's soft targets labelled in shards, resumable after a kill."""

from dataclasses import replace

import numpy as np
import pytest
import tiny
import torch
from safetensors import safe_open

from kd.config.settings import DataConfig
from kd.data.splits import load_splits
from kd.data.tokens import TokenCache, TokenColumns, encode
from kd.errors import KDError
from kd.models.build import build_model
from kd.models.hub import load_tokenizer
from kd.models.saved import load_classifier, save_classifier
from kd.teacher import logits_cache as soft_targets_module
from kd.teacher.logits_cache import train_logits

TEXTS = ["happy day", "so very sad and angry at it", "", "the a", "ünïcödé text 😀 ok", "word " * 80]


def test_encode_gives_the_ids_of_a_transformers_tokenizer_call(models):
    tokenizer = load_tokenizer(str(models["bert"]))
    expected = tokenizer(TEXTS, truncation=True, max_length=12)["input_ids"]
    columns = encode(tokenizer, TEXTS, 12)
    assert columns.tolist() == expected and columns.values.dtype == np.uint16
    assert columns.lengths.tolist() == [len(row) for row in expected]


def test_several_tokenizer_processes_give_the_same_columns(models, monkeypatch):
    monkeypatch.setattr("kd.data.tokens.CHUNK", 7)  # 100 texts: 15 chunks over 2 processes
    tokenizer = load_tokenizer(str(models["bert"]))
    texts = tiny.make_texts(100, seed=3)[0]
    chunks = []
    assert encode(tokenizer, texts, 16, num_proc=2, on_chunk=lambda: chunks.append(1)) == encode(tokenizer, texts, 16)
    assert len(chunks) == 15


def test_columns_slice_and_concatenate():
    columns = TokenColumns.from_rows([[1, 2], [3], [4, 5, 6], []])
    assert columns.slice(1, 3).tolist() == [[3], [4, 5, 6]]
    joined = TokenColumns.concat([columns.slice(2, 4), columns.slice(0, 2)])
    assert joined.tolist() == [[4, 5, 6], [], [1, 2], [3]] and joined.offsets[0] == 0


def test_tokenizer_workers_are_never_forked_from_the_training_process(models, monkeypatch):
    import multiprocessing

    methods, real_context = [], multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: methods.append(method) or real_context(method))
    monkeypatch.setattr("kd.data.tokens.CHUNK", 7)
    tokenizer = load_tokenizer(str(models["bert"]))
    texts = [f"happy day number {i}" for i in range(30)]
    assert encode(tokenizer, texts, 16, num_proc=2) == encode(tokenizer, texts, 16)
    assert methods and "fork" not in methods  # forkserver on Linux, spawn on macOS and Windows


def test_token_cache_saves_the_columns_and_maps_them_back(models, tmp_path, monkeypatch):
    tokenizer = load_tokenizer(str(models["bert"]))
    tokenizer.model_max_length = 16
    first = TokenCache(folder=tmp_path / "tokens")(tokenizer, "train", TEXTS)
    assert first.tolist() == encode(tokenizer, TEXTS, 16).tolist()

    def tokenized(*args, **kwargs):
        raise RuntimeError("tokenized")

    monkeypatch.setattr("kd.data.tokens.encode", tokenized)
    again = TokenCache(folder=tmp_path / "tokens")(tokenizer, "train", TEXTS)
    assert again == first and isinstance(again.values, np.memmap)  # read back, not tokenized
    tokenizer.model_max_length = 12
    with pytest.raises(RuntimeError, match="tokenized"):  # another max_length: another entry
        TokenCache(folder=tmp_path / "tokens")(tokenizer, "train", TEXTS)
    tokenizer.model_max_length = 16
    with pytest.raises(RuntimeError, match="tokenized"):  # other texts too
        TokenCache(folder=tmp_path / "tokens")(tokenizer, "train", TEXTS[:-1])


@pytest.fixture
def teacher_setup(models, tmp_path):
    teacher_dir = tmp_path / "teacher"
    model = build_model(str(models["bert"]), "pretrained", tiny.LABELS)
    save_classifier(model, load_tokenizer(str(models["bert"])), np.full(3, 0.5), teacher_dir)
    data_cfg = DataConfig(format="csv", train=str(tiny.write_csv(tmp_path / "train.csv", 100, seed=0)), val=None,
                          text_column="text", label_columns=tiny.LABELS, labels_file=None, max_length=16)
    return teacher_dir, data_cfg


def _label(teacher_dir, data_cfg, cache_dir, batches: list | None = None):
    teacher, tokenizer, _ = load_classifier(teacher_dir)
    if batches is not None:
        teacher.register_forward_hook(lambda module, args, kwargs, out: batches.append(len(kwargs["input_ids"])),
                                      with_kwargs=True)
    train, _ = load_splits(data_cfg)
    ctx = tiny.context(cache_dir.parent / f"{cache_dir.name}-run", data_cfg, cache_dir=cache_dir)
    ctx.cfg.teacher.train.eval_batch_size = 8
    return train_logits(ctx, ctx.keep("teacher", teacher, tokenizer, teacher_dir), train)


def test_soft_targets_in_shards_equal_one_pass(teacher_setup, tmp_path, monkeypatch):
    teacher_dir, data_cfg = teacher_setup
    whole, hit = _label(teacher_dir, data_cfg, tmp_path / "one")
    monkeypatch.setattr(soft_targets_module, "SHARD_ROWS", 16)  # 80 train rows: 5 shards
    sharded, _ = _label(teacher_dir, data_cfg, tmp_path / "sharded")
    assert not hit and torch.allclose(whole, sharded, atol=1e-6)
    (entry,) = (tmp_path / "sharded/soft_targets").iterdir()  # the shards are joined and removed
    with safe_open(entry, framework="pt") as handle:  # a plain safetensors file, checksum in its metadata
        assert torch.equal(handle.get_tensor("logits"), sharded)


def test_a_killed_labelling_run_labels_only_the_shards_it_had_not_saved(teacher_setup, tmp_path, monkeypatch):
    teacher_dir, data_cfg = teacher_setup
    monkeypatch.setattr(soft_targets_module, "SHARD_ROWS", 16)
    saved = []
    real_write = soft_targets_module.write_atomically

    def killed_after_two_shards(path, write):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(path.name)
        real_write(path, write)

    monkeypatch.setattr(soft_targets_module, "write_atomically", killed_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        _label(teacher_dir, data_cfg, tmp_path / "cache")
    assert len(list((tmp_path / "cache/soft_targets").glob("*.shards/*.npy"))) == 2
    monkeypatch.setattr(soft_targets_module, "write_atomically", real_write)
    batches = []
    resumed, hit = _label(teacher_dir, data_cfg, tmp_path / "cache", batches)
    assert not hit and sum(batches) == 80 - 2 * 16  # the 3 shards left, nothing twice
    assert torch.allclose(resumed, _label(teacher_dir, data_cfg, tmp_path / "fresh")[0], atol=1e-6)
    assert _label(teacher_dir, data_cfg, tmp_path / "cache")[1]  # now a cache hit


def _shards(csv_path, folder, rows_per_shard=200):
    lines = csv_path.read_text().splitlines(keepends=True)
    folder.mkdir()
    for k, start in enumerate(range(1, len(lines), rows_per_shard)):
        (folder / f"part-{k}.csv").write_text(lines[0] + "".join(lines[start:start + rows_per_shard]))
    return str(folder / "part-*.csv")


def test_stored_shards_read_as_the_reader_reads_them_and_map_back(csv_data, tmp_path, monkeypatch):
    from kd.data.columns import TextColumn
    from kd.data.formats import read_labeled

    cfg = DataConfig(format="csv", train=_shards(csv_data["train"], tmp_path / "shards"), val=None,
                     text_column="text", label_columns=tiny.LABELS, labels_file=None, id_column="id")
    whole = read_labeled(cfg.train, "csv", "text", tiny.LABELS, id_column="id")
    stored = load_splits(cfg, tmp_path / "store")[0]
    plain = load_splits(cfg)[0]
    assert isinstance(stored.texts, TextColumn) and list(stored.texts) == plain.texts
    assert np.array_equal(stored.labels, plain.labels) and list(stored.ids) == plain.ids
    assert stored.rows.tolist() == plain.rows.tolist() and stored.file_rows == whole.file_rows == 512

    def parsed(*args):
        raise AssertionError("parsed again")

    monkeypatch.setattr("kd.data.splits._read_one", parsed)
    again = load_splits(cfg, tmp_path / "store")[0]  # mapped back, not parsed
    assert isinstance(again.texts.values, np.memmap) and list(again.texts) == plain.texts
    monkeypatch.undo()
    last = tmp_path / "shards/part-2.csv"
    last.write_text(last.read_text().replace(",1\n", ",0\n", 1))
    changed = load_splits(cfg, tmp_path / "store")[0]  # a shard changed: read again
    assert not np.array_equal(changed.labels, stored.labels)


def test_stored_shards_keep_the_readers_checks(tmp_path):
    (tmp_path / "a.csv").write_text("id,text,x\n1,hi,1\n2,ho,0\n")
    (tmp_path / "b.csv").write_text("id,text,x\n3,hu,0\n1,ha,1\n")
    cfg = DataConfig(format="csv", train=str(tmp_path / "*.csv"), val=None, text_column="text", label_columns=["x"],
                     labels_file=None, id_column="id")
    with pytest.raises(KDError, match="id '1' is in more than one shard"):
        load_splits(cfg, tmp_path / "store")
    (tmp_path / "b.csv").write_text("id,text,x\n3,hu,0\n4,\"ha,1\n")
    with pytest.raises(KDError, match="b.csv"):
        load_splits(cfg, tmp_path / "store")
    assert not [p for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")]  # nothing half-written
    (tmp_path / "a.csv").write_text("text,label\nhi,joy\nho,anger\n")
    (tmp_path / "b.csv").write_text("text,label\nhu,fear\nha,joy\n")
    single = DataConfig(format="csv", train=str(tmp_path / "*.csv"), val=None, text_column="text",
                        label_columns=["label"], labels_file=None)
    train, val = load_splits(single, tmp_path / "store")  # shards of a class column share their classes
    assert train.label_names == ["anger", "fear", "joy"] and len(train) + len(val) == 4


def _column(tmp_path, rows: int):
    """A memory-mapped column of `rows` distinct texts of about 60 characters, as kd.data.stored writes them."""
    from kd.data.columns import TextColumn, offsets_from

    encoded = [f"text number {i} about nothing much, padded out to sixty chars".encode() for i in range(rows)]
    TextColumn(np.frombuffer(b"".join(encoded), np.uint8), offsets_from([len(e) for e in encoded])).save(tmp_path, "texts")
    return TextColumn.load(tmp_path, "texts"), sum(map(len, encoded))


def _peak_bytes(action) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_cache_keys_on_millions_of_rows_never_hold_every_text(models, tmp_path, monkeypatch):
    """The pre-trained student's key on a cache hit, a given teacher's val-metrics key and the
    transfer set's key read the texts a chunk at a time: a third of the texts' own bytes at most
    (a set or a list of them, or one string of them all, takes more than their bytes)."""
    from kd.data.splits import Splits
    from kd.data.texts import LabeledTexts
    from kd.runtime.context import Loaded
    from kd.student import start
    from kd.teacher import logits_cache, stage

    texts, size = _column(tmp_path, 200_000)  # 12 MB of text
    data = LabeledTexts(texts, np.zeros((len(texts), 1), np.float32), ["x"])
    ctx = tiny.context(tmp_path, student=replace(tiny.context(tmp_path).cfg.student, init="kd-pretrain"))

    def pretrained(ctx, texts, folder):  # stands in for the pre-training, which reads every text
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}", encoding="utf-8")
        return {"texts": len(texts), "train_loss": [1.0]}

    monkeypatch.setattr(start, "pretrain_encoder", pretrained)
    ctx.run_dir.mkdir(parents=True)
    start.student_start(ctx, Splits(data, data))  # pre-trains (here: the stand-in) and caches
    assert _peak_bytes(lambda: start.student_start(ctx, Splits(data, data))) < size / 3  # a cache hit

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}", encoding="utf-8")
    assert _peak_bytes(lambda: stage.cached_metrics(ctx, teacher, data, lambda: {"macro_auc": 1.0})) < size / 3

    listed = list(texts)  # the transfer set is a list already: its key must not join it into one string too
    monkeypatch.setattr(logits_cache, "_cached_logits", lambda *args: (None, True))
    monkeypatch.setattr(ctx, "tokens", lambda *args: None)  # the key alone: tokenizing is measured elsewhere
    held = Loaded(None, load_tokenizer(str(models["bert"])), teacher)  # a small vocab: its fingerprint is cheap
    assert _peak_bytes(lambda: logits_cache.transfer_logits(ctx, held, listed)) < size / 3
