"""The whole job on tiny models: the files it writes, and that they work elsewhere."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tiny
import yaml
from transformers import pipeline

from kd.cli import main
from kd.models.saved import load_classifier

EPOCHS = 12
EXPECTED_FILES = {"config.yaml", "metrics.jsonl", "final_metrics.json", "teacher/config.json",
                  "teacher/model.safetensors", "teacher/thresholds.json", "teacher/tokenizer.json",
                  "student/config.json", "student/model.safetensors", "student/thresholds.json",
                  "student/tokenizer.json"}


@pytest.fixture(scope="module")
def run_dir(models, csv_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    overrides = tiny.tiny_overrides(models, csv_data, tmp, **{
        "teacher.train.epochs": EPOCHS, "student.train.epochs": EPOCHS, "teacher.train.lr": 8e-3,
        "student.train.lr": 8e-3})
    assert main(["distill", *overrides]) == 0
    return tmp / "runs" / "run"


def test_writes_the_expected_files(run_dir):
    written = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert EXPECTED_FILES <= written
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records] == [("teacher", e) for e in range(1, EPOCHS + 1)] + \
        [("student", e) for e in range(1, EPOCHS + 1)]
    final = json.loads((run_dir / "final_metrics.json").read_text())
    for role in ("teacher", "student"):
        assert final[role]["parameters"] > 0 and final[role]["size_mb"] > 0
        assert final[role]["train_time_s"] > 0 and 1 <= final[role]["best_epoch"] <= EPOCHS
        best = min((r for r in records if r["stage"] == role), key=lambda r: r["val"]["bce"])
        assert final[role]["val"] == best["val"]
    assert final["soft_targets_cache_hit"] is False
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["distill"]["alpha"] == 0.5 and saved["distill"]["temperature"] == 2.0 and saved["run_name"] == "run"


def test_both_models_learn_the_task(run_dir):
    final = json.loads((run_dir / "final_metrics.json").read_text())
    # Chance is 0.5. Tiny random-init transformers train chaotically: float rounding alone has
    # moved the teacher between 0.62 and 0.86 here, so the bar only says "learned something".
    assert final["teacher"]["val"]["macro_auc"] > 0.55
    assert final["student"]["val"]["macro_auc"] > 0.55


def test_student_folder_works_in_a_transformers_pipeline(run_dir):
    model, tokenizer, thresholds = load_classifier(run_dir / "student")
    assert model.config.problem_type == "multi_label_classification"
    assert [model.config.id2label[i] for i in range(3)] == tiny.LABELS
    classify = pipeline("text-classification", model=str(run_dir / "student"), top_k=None)
    scores = {s["label"]: s["score"] for s in classify(["so happy and great today"])[0]}
    assert set(scores) == set(tiny.LABELS)
    inputs = tokenizer(["so happy and great today"], return_tensors="pt")
    expected = 1 / (1 + np.exp(-model(**inputs).logits.detach().numpy()[0]))  # sigmoid, not softmax
    assert np.allclose([scores[n] for n in tiny.LABELS], expected, atol=1e-5)
    assert json.loads((run_dir / "student/thresholds.json").read_text()) == pytest.approx(
        dict(zip(tiny.LABELS, thresholds.tolist())))


def test_evaluate_and_predict_commands(run_dir, csv_data, capsys):
    assert main(["evaluate", "--model", str(run_dir / "student"), "--data", str(csv_data["val"]),
                 "--format", "csv", "--text-column", "text"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("macro_auc", "micro_f1", "macro_f1", "macro_f1_at_thresholds", "bce", "exact_match", "per_label", "n"):
        assert key in metrics
    assert "macro_f1_tuned" not in metrics  # in sample at the model's thresholds: named apart from the run's
    final = json.loads((run_dir / "final_metrics.json").read_text())
    # the same probabilities to float rounding: BCE is continuous in them, so it must agree closely.
    # Half of this tiny model's sorted val probabilities lie under 5e-8 apart, so rounding (other
    # CPU kernels, the [CLS]-only last layer in training) reorders near ties: rank metrics agree loosely.
    assert metrics["bce"] == pytest.approx(final["student"]["val"]["bce"], abs=1e-6)
    assert metrics["macro_auc"] == pytest.approx(final["student"]["val"]["macro_auc"], abs=0.005)
    # the run reports its tuned F1 out of fold; kd evaluate on the val rows the thresholds were tuned
    # on scores them in sample, which can only be as high or higher (to the same near-tie noise)
    assert metrics["macro_f1_at_thresholds"] >= final["student"]["val"]["macro_f1_tuned"] - 0.02
    assert main(["predict", "--model", str(run_dir / "student"), "furious rage", "happy great"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["furious rage", "happy great"]
    assert set(rows[0]["probabilities"]) == set(tiny.LABELS) and isinstance(rows[0]["labels"], list)


def test_second_run_reuses_the_soft_targets_and_a_given_teacher(run_dir, models, csv_data, tmp_path):
    cache = run_dir.parent.parent / "cache"
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "cache_dir": cache, "teacher.path": run_dir / "teacher", "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    final = json.loads((tmp_path / "runs/run/final_metrics.json").read_text())
    assert final["soft_targets_cache_hit"] is True and final["teacher"]["given"] is True
    assert not (tmp_path / "runs/run/teacher").exists()
    first = json.loads((run_dir / "final_metrics.json").read_text())["teacher"]["val"]
    assert final["teacher"]["val"]["bce"] == pytest.approx(first["bce"], abs=1e-6)
    # the given teacher's val metrics are cached: a second run reads them instead of evaluating
    [entry] = (cache / "teacher_metrics").iterdir()
    entry.write_text(json.dumps({**final["teacher"]["val"], "macro_auc": 0.123}))
    assert main(["distill", *overrides, "run_name=run2"]) == 0
    again = json.loads((tmp_path / "runs/run2/final_metrics.json").read_text())
    assert again["teacher"]["val"]["macro_auc"] == 0.123


def test_distilbert_teacher_to_bert_student_with_labels_only(models, csv_data, tmp_path):
    """Different accepted inputs (no token_type_ids for DistilBERT); alpha=0 needs no soft targets."""
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.name": models["distilbert"], "distill.alpha": 0, "teacher.train.epochs": 1,
        "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    final = json.loads((tmp_path / "runs/run/final_metrics.json").read_text())
    assert final["soft_targets_cache_hit"] is None and not (tmp_path / "cache/soft_targets").exists()


@pytest.mark.parametrize("init,student", [("teacher-layers", "bert"), ("teacher-embeddings", "student")])
def test_students_built_from_the_pretrained_teacher(models, csv_data, tmp_path, init, student):
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "student.name": models[student], "student.init": init, "student.num_layers": 1,
        "teacher.train.epochs": 1, "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    model, _, _ = load_classifier(tmp_path / "runs/run/student")
    assert model.config.num_hidden_layers == 1
    assert model.config.hidden_size == {"bert": 32, "student": 16}[student]


def test_cli_errors_are_one_line_with_exit_code_2(models, csv_data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "kd.cli", "distill", "distill.alpah=1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "unknown config key 'distill.alpah'" in result.stderr
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{"data.train": tmp_path / "absent.csv"})
    assert main(["distill", *overrides]) == 2
    assert not (tmp_path / "runs").exists()  # nothing written for a run that cannot start
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(csv_data["val"])]) == 2


def test_teacher_and_student_with_different_vocabularies(models, csv_data, tmp_path):
    """Soft targets belong to rows, not tokens: each model reads the texts with its own tokenizer."""
    from kd.models.hub import load_tokenizer

    vocab = tiny.SPECIAL + sorted(set(tiny.VOCAB) - set(tiny.SPECIAL), reverse=True) + ["extra"]
    student = tiny.make_model(tmp_path / "other-vocab", "bert", layers=1, hidden=16, vocab=vocab)
    text = "so happy today"
    assert load_tokenizer(str(student))(text)["input_ids"] != load_tokenizer(str(models["bert"]))(text)["input_ids"]
    overrides = tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "student.name": student, "teacher.train.epochs": 1, "student.train.epochs": 1})
    assert main(["distill", *overrides]) == 0
    final = json.loads((tmp_path / "runs/run/final_metrics.json").read_text())
    assert final["soft_targets_cache_hit"] is False and final["student"]["val"]["n"] == 96


def test_every_model_folder_gets_a_model_card(run_dir, tmp_path):
    from kd.deployment.export import export_model

    final = json.loads((run_dir / "final_metrics.json").read_text())
    for role in ("student", "teacher"):
        card = (run_dir / role / "README.md").read_text()
        _, front, body = card.split("---\n", 2)
        metadata = yaml.safe_load(front)
        assert metadata["pipeline_tag"] == "text-classification" and "multi-label" in metadata["tags"]
        metrics = {m["type"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
        assert metrics["macro_auc"] == pytest.approx(final[role]["val"]["macro_auc"], abs=1e-4)
        assert all(f"`{label}`" in body for label in tiny.LABELS)
        assert "train.csv" in body and "CPU ms per text" in body and f"{final['student']['parameters']:,}" in body
        assert "```bash\n" in body and "distill" in body  # the command that made it
        calibration = final[role]["calibration"]  # the error before and after, as the card states it
        assert (f"{calibration['ece_before']:.4f} as trained, {calibration['ece_after']:.4f} with temperature "
                "scaling") in " ".join(body.split())
    export_model(run_dir / "student", tmp_path / "onnx", onnx=True)
    exported = (tmp_path / "onnx" / "README.md").read_text()
    assert exported.startswith((run_dir / "student" / "README.md").read_text().rstrip("\n"))
    assert "## Export" in exported and '"format": "onnx"' in exported
    assert (tmp_path / "onnx" / "calibration.json").read_text() == (run_dir / "student" / "calibration.json").read_text()
