"""Single-label (multi-class) data end to end: a class column, softmax, kd distill from the
command line on a user's CSV, ONNX export, kd evaluate, predict and serve."""

import csv
import json

import numpy as np
import pytest
import tiny
from fastapi.testclient import TestClient
from transformers import pipeline

from kd.cli import main
from kd.deployment.classifier import Classifier
from kd.deployment.export import export_model
from kd.deployment.serve import create_app
from kd.evaluation.calibration import softmax
from kd.training.losses import distillation_loss


def write_classes(path, n: int, seed: int):
    """One class per text, named in a `label` column, decided by the label word it holds."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(n):
            label = rng.choice(tiny.LABELS)
            words = list(rng.choice(tiny.FILLER, size=rng.integers(3, 10)))
            words.insert(rng.integers(0, len(words)), rng.choice(tiny.LABEL_WORDS[label]))
            writer.writerow([" ".join(words), label])
    return path


@pytest.fixture(scope="module")
def run_dir(models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    train, val = write_classes(tmp / "train.csv", 384, 0), write_classes(tmp / "val.csv", 96, 1)
    assert main(["distill", "--train", str(train), "--val", str(val), "--label-columns", "label",
                 f"teacher.name={models['bert']}", f"student.name={models['student']}", "data.max_length=32",
                 f"output_dir={tmp / 'runs'}", f"cache_dir={tmp / 'cache'}", "run_name=run",
                 "teacher.train.epochs=6", "student.train.epochs=6", "teacher.train.lr=8e-3",
                 "student.train.lr=8e-3"]) == 0
    return tmp / "runs/run"


def test_the_run_trains_softmax_models_and_reports_accuracy(run_dir):
    final = json.loads((run_dir / "final_metrics.json").read_text())
    for role in ("teacher", "student"):
        config = json.loads((run_dir / role / "config.json").read_text())
        assert config["problem_type"] == "single_label_classification"
        assert list(config["id2label"].values()) == sorted(tiny.LABELS)  # the classes, in order
        assert not (run_dir / role / "thresholds.json").exists()
        offsets = json.loads((run_dir / role / "class_offsets.json").read_text())  # tuned on val for macro F1
        assert list(offsets) == sorted(tiny.LABELS)
        val = final[role]["val"]
        assert {"macro_f1_tuned", "accuracy_tuned"} <= set(val)  # the offsets' F1, out of fold
        # both learn (chance: AUC 0.5); tiny models' accuracy comes late and varies from run to run
        assert val["n"] == 96 and val["macro_auc"] > 0.7 and 0 <= val["accuracy"] <= 1
        assert "cross_entropy" in val and "bce" not in val
    saved = json.loads((run_dir.parent.parent / "runs/run/final_metrics.json").read_text())
    assert saved["soft_targets_cache_hit"] is False


def test_the_folder_predicts_one_class_everywhere(run_dir, tmp_path):
    texts = ["so happy and great today", "furious rage at this", "scared and afraid"]
    torch_clf = Classifier.from_pretrained(run_dir / "student")
    probs = torch_clf.predict_proba(texts)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax over the classes
    predicted = torch_clf.predict(texts)
    chosen = (torch_clf.logits(texts) + torch_clf.offsets).argmax(axis=1)  # one class each: logits + offsets
    assert predicted == [[torch_clf.labels[j]] for j in chosen]
    export_model(run_dir / "student", tmp_path / "onnx", onnx=True)
    onnx_clf = Classifier.from_pretrained(tmp_path / "onnx")
    assert onnx_clf.backend == "onnx" and np.allclose(onnx_clf.predict_proba(texts), probs, atol=1e-4)
    assert onnx_clf.predict(texts) == torch_clf.predict(texts)
    with TestClient(create_app(onnx_clf)) as client:
        answer = client.post("/predict", json={"texts": texts}).json()["predictions"]
        assert [p["labels"] for p in answer] == predicted
        meta = client.get("/metadata").json()
        assert meta["problem_type"] == "single_label" and meta["thresholds"] is None
        assert meta["class_offsets"] == pytest.approx(dict(zip(torch_clf.labels, torch_clf.offsets.tolist())))
    classify = pipeline("text-classification", model=str(run_dir / "student"), top_k=None)
    scores = {r["label"]: r["score"] for r in classify([texts[0]])[0]}
    uncalibrated = softmax(torch_clf.logits(texts[:1]))[0]  # transformers knows no calibration.json
    assert scores == pytest.approx(dict(zip(torch_clf.labels, uncalibrated.tolist())), abs=1e-4)


@pytest.mark.parametrize("folder", ["student", "onnx"])
def test_evaluate_scores_single_label_folders(run_dir, tmp_path, capsys, folder):
    path = run_dir / "student" if folder == "student" else tmp_path / "onnx"
    if folder == "onnx":
        export_model(run_dir / "student", path, onnx=True)
    val = write_classes(tmp_path / "more.csv", 60, 7)
    assert main(["evaluate", "--model", str(path), "--data", str(val), "--format", "csv",
                 "--text-column", "text", "--label-columns", "label"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 60 and metrics["macro_auc"] > 0.7 and 0 <= metrics["accuracy"] <= 1
    assert set(metrics["per_label"]) == set(tiny.LABELS)


def test_a_class_the_model_does_not_know_is_refused(run_dir, tmp_path, capsys):
    path = tmp_path / "new.csv"
    path.write_text("text,label\nhappy,joy\nwhat,surprise\n")
    assert main(["evaluate", "--model", str(run_dir / "student"), "--data", str(path), "--format", "csv",
                 "--text-column", "text", "--label-columns", "label"]) == 2
    assert "line 3 of column 'label' hold class(es) ['surprise'] that the model does not know" in \
        capsys.readouterr().err


def test_softmax_distillation_loss():
    student = torch_tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    teacher = torch_tensor([[3.0, 0.5, -2.0], [0.2, 2.0, 0.1]])
    labels = torch_tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    import torch.nn.functional as F

    hard = F.cross_entropy(student, labels.argmax(dim=1))
    soft = (F.softmax(teacher / 2, 1) * (F.log_softmax(teacher / 2, 1) - F.log_softmax(student / 2, 1))).sum(1).mean()
    loss = distillation_loss(student, labels, teacher, alpha=0.3, temperature=2.0, single_label=True)
    assert loss.item() == pytest.approx((0.7 * hard + 0.3 * 4 * soft).item(), rel=1e-5)
    assert distillation_loss(teacher, labels, teacher, alpha=1.0, single_label=True).item() == pytest.approx(0, abs=1e-6)


def torch_tensor(rows):
    import torch

    return torch.tensor(rows)


def test_class_weights_balanced_reach_the_teachers_and_the_students_loss(models, tmp_path, monkeypatch):
    from kd.student import stage as student_stage
    from kd.teacher import stage as teacher_stage

    seen = {}
    for module in (teacher_stage, student_stage):
        real = module.fit
        monkeypatch.setattr(module, "fit", lambda ctx, job, real=real: seen.setdefault(
            job.stage, job.objective.class_weights) is None or real(ctx, job))
    rng = np.random.default_rng(0)
    path = tmp_path / "skewed.csv"  # joy is 5% of the rows
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label in ["anger"] * 57 + ["fear"] * 57 + ["joy"] * 6:
            writer.writerow([f"{rng.choice(tiny.LABEL_WORDS[label])} {' '.join(rng.choice(tiny.FILLER, 4))}", label])
    assert main(["distill", "--train", str(path), "--label-columns", "label", f"teacher.name={models['bert']}",
                 f"student.name={models['student']}", "data.max_length=32", f"output_dir={tmp_path / 'runs'}",
                 f"cache_dir={tmp_path / 'cache'}", "run_name=run", "teacher.train.epochs=1", "student.train.epochs=1",
                 "teacher.train.class_weights=balanced", "student.train.class_weights=balanced"]) == 0
    for stage in ("teacher", "student"):
        weights = seen[stage].tolist()  # anger, fear, joy over the 96 train rows
        assert weights[2] > 5 * weights[0] and weights[0] == pytest.approx(weights[1], rel=0.2)
