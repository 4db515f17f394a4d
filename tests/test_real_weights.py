"""The pipeline with the real pretrained MiniLM-L6 teacher on real GoEmotions rows (needs ../shared)."""

import json

import pytest
from conftest import SHARED

from kd.cli import main

GOEMOTIONS = SHARED / "data" / "goemotions"
MINILM = SHARED / "hf-cache" / "models--sentence-transformers--all-MiniLM-L6-v2"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (GOEMOTIONS.is_dir() and MINILM.is_dir()), reason="needs ../shared")]


def test_minilm_teacher_distilled_into_two_of_its_layers(tmp_path):
    overrides = [f"data.train={GOEMOTIONS / 'train.tsv'}", f"data.val={GOEMOTIONS / 'dev.tsv'}",
                 f"data.labels_file={GOEMOTIONS / 'emotions.txt'}", "data.max_train_samples=1000",
                 "data.max_val_samples=300", "data.max_length=40", "teacher.train.epochs=1",
                 "student.train.epochs=1", "teacher.train.batch_size=16", "student.train.batch_size=16",
                 "student.train.lr=5e-4", f"output_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}",
                 "run_name=real"]
    assert main(["distill", "--config", "configs/minilm.yaml", *overrides]) == 0
    final = json.loads((tmp_path / "real/final_metrics.json").read_text())
    teacher, student = final["teacher"], final["student"]
    layer = 4 * (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384 + 2 * 2 * 384  # one MiniLM layer
    assert teacher["parameters"] - student["parameters"] == 4 * layer  # 2 of 6 layers kept
    student_config = json.loads((tmp_path / "real/student/config.json").read_text())
    assert student_config["num_hidden_layers"] == 2 and student_config["hidden_size"] == 384
    assert teacher["val"]["n"] == student["val"]["n"] == 300
    assert len(teacher["val"]["per_label"]) == 28
    # One epoch on 1,000 rows (measured: teacher 0.64 and 0.71, student 0.63 and 0.69, seeds 42
    # and 1); chance is 0.5. On 400 rows, seeds moved the student's AUC between 0.52 and 0.63.
    assert teacher["val"]["macro_auc"] > 0.58 and student["val"]["macro_auc"] > 0.58
