"""The lexical part (kd.lexical): what it adds to a BERT student, what it cuts, and that the
model it makes trains, saves, loads and exports like any kd classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny
import torch
from transformers import pipeline

from kd.cli import main
from kd.deployment import export
from kd.deployment.classifier import Classifier
from kd.errors import KDError
from kd.models.build import build_model, count_parameters
from kd.models.hub import load_tokenizer
from kd.models.lexical import add_lexical_part
from kd.models.lexical_bert import LexicalBertForSequenceClassification, hashed_ngrams
from kd.models.saved import load_classifier

BUCKETS = 64


@pytest.fixture(scope="module")
def run_dir(models, csv_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lexical")
    overrides = tiny.tiny_overrides(models, csv_data, tmp, **{"student.lexical_buckets": BUCKETS,
                                                              "student.train.epochs": 4})
    assert main(["distill", *overrides]) == 0
    return tmp / "runs" / "run"


def test_a_zero_table_leaves_the_logits_and_unkept_ids_read_unk(models):
    model = build_model(str(models["student"]), "pretrained", tiny.LABELS).eval()
    tokenizer = load_tokenizer(str(models["student"]))
    kept = np.array(tokenizer("happy furious day")["input_ids"])
    lexical = add_lexical_part(model, kept, BUCKETS, tokenizer.unk_token_id).eval()
    cut = len(tokenizer) - len(np.union1d(kept, [tokenizer.unk_token_id]))
    assert lexical.config.vocab_size == len(tokenizer) - cut and lexical.config.tokenizer_vocab_size == len(tokenizer)
    assert count_parameters(lexical) == count_parameters(model) - cut * model.config.hidden_size + \
        BUCKETS * len(tiny.LABELS)
    with torch.no_grad():
        seen = tokenizer(["happy day", "furious"], padding=True, return_tensors="pt")
        assert torch.allclose(lexical(**seen).logits, model(**seen).logits, atol=1e-6)
        unseen = tokenizer(["scared movie"], return_tensors="pt")  # not kept: read as [UNK]
        as_unk = {**unseen, "input_ids": torch.where(unseen["input_ids"] == tokenizer.cls_token_id, unseen["input_ids"],
                                                     torch.where(unseen["input_ids"] == tokenizer.sep_token_id,
                                                                 unseen["input_ids"], tokenizer.unk_token_id))}
        assert torch.allclose(lexical(**unseen).logits, model(**as_unk).logits, atol=1e-6)


def test_padding_adds_nothing_and_pairs_hash_into_the_table():
    ids = torch.tensor([[2, 7, 9, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    rows, weights = hashed_ngrams(ids, mask, BUCKETS)
    assert rows.shape == (1, 11) and rows.min() >= 0 and rows.max() < BUCKETS
    assert weights.tolist() == [[1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0]]  # 4 ids and 3 pairs are real


def test_a_distilbert_student_is_refused(models):
    model = build_model(str(models["distilbert"]), "pretrained", tiny.LABELS)
    with pytest.raises(KDError, match="needs a BERT student"):
        add_lexical_part(model, np.array([1, 2]), BUCKETS, 1)


def test_the_student_learns_saves_and_loads(run_dir):
    final = json.loads((run_dir / "final_metrics.json").read_text())["student"]
    model, tokenizer, _ = load_classifier(run_dir / "student")
    assert isinstance(model, LexicalBertForSequenceClassification)
    assert model.config.lexical_buckets == BUCKETS and final["parameters"] == count_parameters(model)
    assert final["recipe"].endswith(f"; with a lexical part of {BUCKETS} rows (student.lexical_buckets; 0: without)")
    assert model.lexical.weight.abs().sum() > 0  # it trained
    rows = model.token_rows  # saved and loaded: [MASK] never occurs in the texts, so it reads [UNK]'s row
    assert rows[tokenizer.mask_token_id] == rows[tokenizer.unk_token_id] != rows[tokenizer.cls_token_id]
    # the label words decide the labels: the lexical part alone can learn them (chance is 0.5)
    assert final["val"]["macro_auc"] > 0.7
    clf = Classifier.from_pretrained(run_dir / "student", backend="torch")
    texts = ["happy furious day", "the movie"]
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    assert np.allclose(clf.logits(texts), expected, atol=1e-5)


def test_transformers_pipeline_reads_it_once_kd_is_imported(run_dir):
    model, tokenizer, _ = load_classifier(run_dir / "student")  # kd.models is imported: registered
    classify = pipeline("text-classification", model=str(run_dir / "student"), top_k=None)
    scores = {s["label"]: s["score"] for s in classify(["so happy and great today"])[0]}
    with torch.no_grad():
        expected = torch.sigmoid(model(**tokenizer(["so happy and great today"], return_tensors="pt")).logits)[0]
    assert np.allclose([scores[n] for n in tiny.LABELS], expected.numpy(), atol=1e-5)


PLAIN_TRANSFORMERS = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
with torch.no_grad():
    logits = model(**tokenizer(sys.argv[2:], padding=True, return_tensors="pt")).logits
assert not any(name == "kd" or name.startswith("kd.") for name in sys.modules)
print(json.dumps([type(model).__module__, logits.tolist()]))
"""


def test_plain_transformers_reads_it_without_kd_through_the_saved_modeling_file(run_dir, tmp_path):
    folder = run_dir / "student"
    assert (folder / "lexical_bert.py").is_file()
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "lexical_bert.LexicalBertConfig",
        "AutoModelForSequenceClassification": "lexical_bert.LexicalBertForSequenceClassification"}
    texts = ["so happy and great today", "an unseen word: zzz"]
    out = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, str(folder), *texts], capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_MODULES_CACHE": str(tmp_path)})
    module, logits = json.loads(out.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules.") and module.endswith("lexical_bert")
    model, tokenizer, _ = load_classifier(folder)
    with torch.no_grad():
        expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert np.allclose(logits, expected.numpy(), atol=1e-5)


def test_onnx_export_matches_pytorch(run_dir, tmp_path):
    texts, labels = tiny.make_texts(200, seed=3)
    report = export.export_model(run_dir / "student", tmp_path / "onnx", onnx=True,
                                 texts=[*texts, "an unseen word: zzz"])
    assert report["parity"]["max_abs_prob_diff"] <= 1e-4
    assert Classifier.from_pretrained(tmp_path / "onnx").backend == "onnx"
