"""What must work on macOS and Windows too, and what a model folder carries with it."""

import os

import numpy as np
import pytest
import tiny

from kd.cli import main
from kd.deployment.classifier import Classifier
from kd.runtime.cores import usable_cores


def test_no_sched_getaffinity_as_on_macos_and_windows(models, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cores() == 3
    folder = tiny.make_classifier(tmp_path / "clf", models["bert"], steps=1)
    assert Classifier.from_pretrained(folder).predict_proba(["so happy"]).shape == (1, 3)
    assert main(["predict", "--model", str(folder), "so happy"]) == 0
    assert '"labels"' in capsys.readouterr().out


def test_cpu_count_unknown_means_one_core(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1


@pytest.fixture(scope="module")
def trained_at_32(models, csv_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("len32")
    overrides = tiny.tiny_overrides(models, csv_data, tmp, **{"data.max_length": 32, "teacher.train.epochs": 1,
                                                               "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    return tmp / "runs/run/student"


def test_a_model_trained_at_32_tokens_predicts_identically_everywhere(trained_at_32, tmp_path):
    import torch
    from fastapi.testclient import TestClient

    from kd.data.tokens import encode
    from kd.deployment.export import export_model
    from kd.deployment.serve import create_app
    from kd.models.saved import load_classifier

    long_texts = [" ".join(["happy", "the", "day", "was", "so", "very"] * 9) + " furious rage",  # > 32 tokens
                  "scared " * 40, "just a short one"]
    model, tokenizer, _ = load_classifier(trained_at_32)
    assert tokenizer.model_max_length == 32  # the folder records the length it was trained at
    with torch.no_grad():
        as_trained = [model(input_ids=torch.tensor([ids.tolist()])).logits[0].numpy()
                      for ids in encode(tokenizer, long_texts, 32)]
    torch_clf = Classifier.from_pretrained(trained_at_32)
    assert np.allclose(torch_clf.logits(long_texts), as_trained, atol=1e-5)
    report = export_model(trained_at_32, tmp_path / "onnx", onnx=True)
    onnx_clf = Classifier.from_pretrained(tmp_path / "onnx")
    assert np.allclose(onnx_clf.logits(long_texts), as_trained, atol=1e-4) and report["parity"]["texts"] > 0
    with TestClient(create_app(onnx_clf)) as client:
        served = client.post("/predict", json={"texts": long_texts}).json()["predictions"]
    assert [p["labels"] for p in served] == onnx_clf.predict(long_texts)
    probs = [list(p["probabilities"].values()) for p in served]
    assert np.allclose(probs, torch_clf.predict_proba(long_texts), atol=1e-4)
    for clf in (torch_clf, onnx_clf):  # both read at 32 tokens, the texts hold more
        assert len(clf.tokenizer.encode(long_texts[0]).ids) == 32
    assert len(Classifier.from_pretrained(trained_at_32, max_length=64).tokenizer.encode(long_texts[0]).ids) == 58  # 56 words


def test_the_training_state_carries_the_cuda_rng_where_cuda_runs(monkeypatch):
    import torch

    from kd.training import checkpoint

    device_state = torch.arange(16, dtype=torch.uint8)  # this process's device: each process trains on its own
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: device_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    state = checkpoint.rng_state()
    assert torch.equal(state["cuda_rng"], device_state) and torch.equal(state["rng"], torch.get_rng_state())
    checkpoint.restore_rng(state)
    assert [s.tolist() for s in restored] == [device_state.tolist()]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert set(checkpoint.rng_state()) == {"rng"}  # CPU only: as before


def _text_io_without_encoding(path) -> list[str]:
    """Calls in `path` that open a file in text mode, or read or write one, without naming its encoding."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name in ("write_text", "read_text") and isinstance(node.func, ast.Attribute):
            found.append(f"{path.name}:{node.lineno} {name}")
        elif name == "open":
            mode = next((k.value for k in node.keywords if k.arg == "mode"),
                        node.args[1] if len(node.args) > 1 else node.args[0] if isinstance(node.func, ast.Attribute)
                        and node.args else None)
            if not (isinstance(mode, ast.Constant) and "b" in str(mode.value)):
                found.append(f"{path.name}:{node.lineno} open")
    return found


def test_every_text_file_kd_reads_or_writes_names_utf8():
    """Windows' default encoding (cp1252) cannot write most label names: kd names UTF-8 everywhere."""
    from pathlib import Path

    import kd

    package = Path(kd.__file__).parent
    assert [hit for path in sorted(package.rglob("*.py")) for hit in _text_io_without_encoding(path)] == []


def test_a_run_with_label_names_outside_ascii_finishes_where_the_locale_is_ascii(models, tmp_path):
    """The cards, configs and exports of labels named in Cyrillic, in a process whose default
    encoding is ASCII (as cp1252 on Windows cannot hold them): every file is written, as UTF-8."""
    import csv
    import subprocess
    import sys

    names = ["гнев", "радость", "страх"]
    for split, rows, seed in (("train", 200, 0), ("val", 60, 1)):
        texts, labels = tiny.make_texts(rows, seed)
        with (tmp_path / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", *names])
            writer.writerows([text, *row] for text, row in zip(texts, labels))
    overrides = tiny.tiny_overrides(models, {"train": tmp_path / "train.csv", "val": tmp_path / "val.csv"}, tmp_path, **{
        "teacher.train.epochs": 1, "student.train.epochs": 1})
    overrides = [o for o in overrides if not o.startswith("data.label_columns=")]
    (tmp_path / "labels.yaml").write_text(f"data:\n  label_columns: [{', '.join(names)}]\n", encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    check = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
                           env=env, capture_output=True, text=True)
    assert check.stdout.strip().lower() in ("ansi_x3.4-1968", "ascii", "us-ascii")
    run = subprocess.run([sys.executable, "-m", "kd.cli", "distill", "--config", str(tmp_path / "labels.yaml"),
                          *overrides], env=env, capture_output=True)  # non-ASCII argv is not text in that locale
    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")[-2000:]
    student = tmp_path / "runs/run/student"
    assert all(name in (student / "README.md").read_text(encoding="utf-8") for name in names)
    export = subprocess.run([sys.executable, "-m", "kd.cli", "export", "--model", str(student), "--out",
                             str(tmp_path / "export")], env=env, capture_output=True)
    assert export.returncode == 0, export.stderr.decode("utf-8", "replace")[-2000:]
    assert names[0] in (tmp_path / "export/README.md").read_text(encoding="utf-8")
