"""Tiny random models and small learnable data, built inside the tests (nothing downloaded)."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from kd.models.build import build_model
from kd.models.hub import load_tokenizer, wordpiece_tokenizer
from kd.models.saved import save_classifier
from kd.training import loop as train

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABEL_WORDS = {"anger": ["furious", "rage", "hate"], "joy": ["happy", "great", "love"],
               "fear": ["scared", "afraid", "panic"]}
FILLER = ["the", "a", "day", "was", "and", "it", "so", "very", "today", "we", "you", "this",
          "movie", "food", "really", "just", "felt", "about", "my", "with"]
VOCAB = SPECIAL + FILLER + [w for words in LABEL_WORDS.values() for w in words] + ["##s", "##ed"]
LABELS = list(LABEL_WORDS)


def make_model(folder: Path, model_type: str = "bert", layers: int = 2, hidden: int = 32,
               dropout: float = 0.1, vocab: list[str] = VOCAB, seed: int = 0) -> Path:
    """A save_pretrained folder of a random tiny encoder with its tokenizer: a local 'pretrained' model."""
    extra = ({"n_layers": layers, "dim": hidden, "hidden_dim": 2 * hidden, "n_heads": 2,
              "dropout": dropout, "attention_dropout": dropout} if model_type == "distilbert" else
             {"num_hidden_layers": layers, "hidden_size": hidden, "intermediate_size": 2 * hidden,
              "num_attention_heads": 2, "hidden_dropout_prob": dropout,
              "attention_probs_dropout_prob": dropout})
    config = AutoConfig.for_model(model_type, vocab_size=len(vocab), max_position_embeddings=64, **extra)
    torch.manual_seed(seed)  # the same weights in every test session: thresholds on them do not flake
    AutoModel.from_config(config).save_pretrained(folder)
    wordpiece_tokenizer(vocab, model_type).save_pretrained(folder)
    return folder


def make_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose labels are decided by the label words they contain."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(LABELS))) < 0.3).astype(int)
    texts = []
    for row in labels:
        words = list(rng.choice(FILLER, size=rng.integers(3, 12)))
        for j, on in enumerate(row):
            if on:
                words.insert(rng.integers(0, len(words)), rng.choice(LABEL_WORDS[LABELS[j]]))
        texts.append(" ".join(words))
    return texts, labels


def write_csv(path: Path, n: int, seed: int, text_column: str = "text") -> Path:
    texts, labels = make_texts(n, seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", text_column, *LABELS])
        for i, (text, row) in enumerate(zip(texts, labels)):
            writer.writerow([f"r{i}", text, *row])
    return path


def write_goemotions(folder: Path, n: int, seed: int) -> tuple[Path, Path]:
    texts, labels = make_texts(n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (text, row) in enumerate(zip(texts, labels)):
        ids = ",".join(str(j) for j in np.flatnonzero(row)) or str(len(LABELS))
        lines.append(f"{text}\t{ids}\tc{i}")
    (folder / "data.tsv").write_text("\n".join(lines) + "\n")
    (folder / "labels.txt").write_text("\n".join(LABELS + ["neutral"]))
    return folder / "data.tsv", folder / "labels.txt"


def tiny_overrides(models: dict, csv_data: dict, tmp_path: Path, **extra) -> list[str]:
    """key=value overrides that run the whole pipeline on tiny models and data in seconds."""
    values = {"teacher.name": models["bert"], "student.name": models["student"],
              "data.format": "csv", "data.train": csv_data["train"], "data.val": csv_data["val"],
              "data.text_column": "text", "data.label_columns": "[anger,joy,fear]",
              "data.labels_file": "null", "data.max_length": 32,
              "output_dir": tmp_path / "runs", "cache_dir": tmp_path / "cache", "run_name": "run",
              "teacher.train.epochs": 2, "student.train.epochs": 2,
              "teacher.train.lr": "3e-3", "student.train.lr": "3e-3"}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def context(tmp_path: Path, data_cfg=None, **settings):
    """A kd RunContext on the CPU in fp32, its cache and run folder under tmp_path (kd.runtime.context);
    `settings`: Config fields, e.g. cache_dir=..."""
    from kd.config.settings import Config, DataConfig
    from kd.runtime.context import RunContext

    cfg = Config(data=data_cfg or DataConfig(), cache_dir=str(settings.pop("cache_dir", tmp_path / "cache")), **settings)
    return RunContext.build(cfg, tmp_path / "run")


def make_classifier(folder: Path, source: Path, steps: int = 150, seed: int = 0) -> Path:
    """A kd classifier folder: the tiny `source` encoder trained briefly on label-word texts."""
    torch.manual_seed(seed)
    model = build_model(str(source), "pretrained", LABELS, role="teacher")
    tokenizer = load_tokenizer(str(source))
    texts, labels = make_texts(256, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        rows = slice(step * 32 % 256, step * 32 % 256 + 32)
        inputs = tokenizer(texts[rows], padding=True, return_tensors="pt")
        loss = model(**inputs, labels=torch.tensor(labels[rows], dtype=torch.float)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    save_classifier(model.eval(), tokenizer, np.array([0.4, 0.5, 0.6]), folder)
    return folder


def ctrl_c_at_loss_call(monkeypatch, n: int):
    """Make the n-th training loss computation send this process SIGINT (Ctrl-C) in the middle
    of its batch; returns a function that puts the real loss back."""
    original, calls = train.distillation_loss, 0

    def interrupted(*args):
        nonlocal calls
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    monkeypatch.setattr(train, "distillation_loss", interrupted)
    return lambda: monkeypatch.setattr(train, "distillation_loss", original)


def assert_same_weights(file: Path, reference: Path) -> None:
    """Two safetensors files hold the same tensors, to float rounding."""
    weights, expected = load_file(file), load_file(reference)
    assert weights.keys() == expected.keys()
    assert all(torch.allclose(weights[k], expected[k], atol=1e-6) for k in weights)
