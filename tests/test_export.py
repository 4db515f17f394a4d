"""kd export and kd.Classifier: ONNX parity with PyTorch, int8, both backends, bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tiny

from kd.cli import main
from kd.data.texts import LabeledTexts
from kd.deployment import export
from kd.deployment.classifier import Classifier
from kd.errors import KDError


@pytest.fixture(scope="module")
def trained(models, tmp_path_factory):
    return tiny.make_classifier(tmp_path_factory.mktemp("clf") / "model", models["bert"])


@pytest.fixture(scope="module")
def labelled():
    texts, labels = tiny.make_texts(1000, seed=7)
    return LabeledTexts(texts, labels, list(tiny.LABELS))


def test_onnx_export_matches_pytorch_with_dynamic_axes(trained, labelled, tmp_path):
    report = export.export_model(trained, tmp_path / "onnx", onnx=True, labelled=labelled)
    folder = tmp_path / "onnx"
    assert {"model.onnx", "tokenizer.json", "config.json", "thresholds.json",
            "export.json"} <= {p.name for p in folder.iterdir()}
    assert report["parity"]["max_abs_prob_diff"] <= 1e-4
    # the tiny model did learn (chance is 0.5); float rounding (MKL's threaded kernels) moves its
    # chaotic training between runs: 0.76 in one full CI run, above 0.8 in most
    assert report["parity"]["macro_auc_pytorch"] > 0.65
    assert json.loads((folder / "export.json").read_text()) == report
    graph = onnx.load(folder / "model.onnx").graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert dims == [["batch", "sequence"], ["batch", "sequence"]]
    # texts of many lengths, batched and one by one, through both backends
    onnx_clf, torch_clf = Classifier.from_pretrained(folder), Classifier.from_pretrained(trained)
    assert (onnx_clf.backend, torch_clf.backend) == ("onnx", "torch")
    texts = labelled.texts[:100]
    batched = onnx_clf.predict_proba(texts)
    assert np.abs(batched - torch_clf.predict_proba(texts)).max() <= 1e-4
    single = np.concatenate([onnx_clf.predict_proba([t]) for t in texts[:20]])
    assert np.abs(single - batched[:20]).max() <= 1e-5


def test_int8_export_keeps_macro_auc(trained, labelled, tmp_path):
    report = export.export_model(trained, tmp_path / "int8", quantize="int8", labelled=labelled)
    parity = report["parity"]
    assert report["quantize"] == "int8" and parity["macro_auc_shift"] <= 0.005
    assert parity["max_abs_prob_diff"] > 0  # int8 is not exact (its size depends on the tiny random init)
    assert Classifier.from_pretrained(tmp_path / "int8").backend == "onnx"


def test_predict_uses_the_folder_thresholds(trained):
    clf = Classifier.from_pretrained(trained)
    assert clf.labels == tiny.LABELS and clf.thresholds.tolist() == pytest.approx([0.4, 0.5, 0.6])
    texts = ["i am so happy and scared today", "the food was furious", "a day"]
    probs = clf.predict_proba(texts)
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    expected = [[n for n, p, t in zip(clf.labels, row, clf.thresholds) if p >= t] for row in probs]
    assert clf.predict(texts) == expected
    assert clf.predict_proba([]).shape == (0, 3)
    with pytest.raises(KDError, match="list of texts"):
        clf.predict_proba("one string")
    with pytest.raises(KDError, match="must be a string"):
        clf.predict_proba(["fine", None])
    # longer than the tiny model's 64 position embeddings: truncated to them, not an error
    assert clf.predict_proba(["happy " * 500]).shape == (1, 3)


def test_failed_parity_check_leaves_nothing(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "FP32_MAX_PROB_DIFF", -1.0)
    with pytest.raises(KDError, match="disagree"):
        export.export_model(trained, tmp_path / "out", onnx=True)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_bad_input(trained, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(KDError, match="not empty"):
        export.export_model(trained, tmp_path / "full", onnx=True)
    with pytest.raises(KDError, match="not a model folder"):
        export.export_model(tmp_path / "full", tmp_path / "out")
    with pytest.raises(KDError, match="not a kd model folder"):
        Classifier.from_pretrained(tmp_path / "full")
    with pytest.raises(KDError, match="no model.onnx"):
        Classifier.from_pretrained(trained, backend="onnx")
    assert main(["export", "--model", str(tmp_path / "full"), "--out", str(tmp_path / "o")]) == 2
    assert "kd: error: not a model folder" in capsys.readouterr().err


def test_cli_export_pytorch_folder(trained, tmp_path, capsys):
    assert main(["export", "--model", str(trained), "--out", str(tmp_path / "pt")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "pytorch" and "parity" not in report
    clf = Classifier.from_pretrained(tmp_path / "pt")
    assert clf.backend == "torch"
    texts = ["happy rage", "the day"]
    assert np.allclose(clf.predict_proba(texts), Classifier.from_pretrained(trained).predict_proba(texts))


def test_distilbert_exports_through_the_plain_graph(models, labelled, tmp_path):
    folder = tiny.make_classifier(tmp_path / "distil", models["distilbert"], steps=30)
    report = export.export_model(folder, tmp_path / "onnx", onnx=True, labelled=labelled)
    assert report["parity"]["max_abs_prob_diff"] <= 1e-4


def test_bert_graph_computes_the_last_layer_for_cls_only(trained, tmp_path, monkeypatch):
    """The graph is traced with kd.first_token's last layer (its own tests check that layer)."""
    applied, first_token = [], export.use_first_token_last_layer
    monkeypatch.setattr(export, "use_first_token_last_layer", lambda model: applied.append(first_token(model)))
    report = export.export_model(trained, tmp_path / "onnx", onnx=True)
    assert applied == [True] and report["parity"]["max_abs_prob_diff"] <= 1e-4


def test_cli_predict_runs_an_onnx_folder(trained, tmp_path, capsys):
    export.export_model(trained, tmp_path / "onnx", onnx=True)
    texts = ["furious rage today", "happy great day"]
    assert main(["predict", "--model", str(tmp_path / "onnx"), *texts]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    clf = Classifier.from_pretrained(tmp_path / "onnx")
    assert [r["text"] for r in rows] == texts
    assert [r["labels"] for r in rows] == clf.predict(texts)
    assert np.allclose([list(r["probabilities"].values()) for r in rows], clf.predict_proba(texts), atol=1e-6)
