"""The run context owns the models a run holds: the teacher is gone before the student trains
(unless the student matches its layers at every step), and nothing the Accelerator prepared for
one stage stays registered into the next."""

from __future__ import annotations

import gc
import weakref

import pytest
import tiny

from kd.cli import main
from kd.run import pipeline
from kd.student import stage as student_stage


def _watch_the_teacher(monkeypatch) -> dict:
    """Weak references to the teacher model the run holds (taken when its calibration starts,
    or when a given teacher is first used), and what is alive when the student's fit starts."""
    seen: dict = {"teacher": [], "at_student_fit": None}
    real_model = pipeline.RunContext.model

    def model(ctx, role, folder=None):
        held = real_model(ctx, role, folder)
        if role == "teacher":
            seen["teacher"].append(weakref.ref(held.model))
        return held

    real_fit = student_stage.fit

    def fit(ctx, job):
        gc.collect()
        seen["at_student_fit"] = {"held": sorted(ctx.loaded), "teacher_alive": any(r() is not None for r in seen["teacher"]),
                                  "prepared": len(ctx.accelerator._models)}
        return real_fit(ctx, job)

    monkeypatch.setattr(pipeline.RunContext, "model", model)
    monkeypatch.setattr(student_stage, "fit", fit)
    return seen


@pytest.mark.parametrize("extra", [{}, {"distill.alpha": 0.0}], ids=["alpha 0.5", "alpha 0"])
def test_the_teacher_is_gone_before_the_student_trains(models, csv_data, tmp_path, monkeypatch, extra):
    seen = _watch_the_teacher(monkeypatch)
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, **{"student.train.epochs": 1,
                                                                                  **extra})]) == 0
    assert seen["teacher"], "the run never held a teacher"
    assert seen["at_student_fit"] == {"held": [], "teacher_alive": False, "prepared": 0}


def test_a_given_teacher_is_gone_before_the_student_trains(models, csv_data, tmp_path, monkeypatch):
    teacher = tiny.make_classifier(tmp_path / "teacher", models["bert"], steps=20)
    seen = _watch_the_teacher(monkeypatch)
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.path": teacher, "student.train.epochs": 1})]) == 0
    assert seen["teacher"] and seen["at_student_fit"] == {"held": [], "teacher_alive": False, "prepared": 0}


def test_a_teacher_that_runs_at_every_student_step_stays(models, csv_data, tmp_path, monkeypatch):
    seen = _watch_the_teacher(monkeypatch)
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "distill.hidden_weight": 1.0, "teacher.train.epochs": 1, "student.train.epochs": 1})]) == 0
    assert seen["at_student_fit"]["held"] == ["teacher"] and seen["at_student_fit"]["teacher_alive"]


def test_runs_of_other_precisions_follow_each_other_in_one_process(models, csv_data, tmp_path, capsys):
    """Accelerate holds one mixed precision per process: a second run in another one takes a
    process of its own, with no reset of Accelerate's state in between (as a notebook would)."""
    import json

    def run(name: str, precision: str) -> dict:
        assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, **{
            "run_name": name, "mixed_precision": precision, "teacher.train.epochs": 1,
            "student.train.epochs": 1})]) == 0
        return json.loads((tmp_path / "runs" / name / "final_metrics.json").read_text())

    first, second, third = run("fp32", "no"), run("bf16", "bf16"), run("fp32-again", "no")
    err = " ".join(capsys.readouterr().err.split())
    assert "training in fp32" in err and "training in bf16 autocast" in err  # the child's own lines, passed on
    assert third["student"]["val"]["bce"] == pytest.approx(first["student"]["val"]["bce"], abs=1e-6)  # here again
    assert second["student"]["val"]["n"] == first["student"]["val"]["n"]


def test_a_sweep_over_mixed_precision_runs_with_one_job(models, csv_data, tmp_path):
    import pandas as pd
    import yaml

    fixed = dict(item.split("=", 1) for item in tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.train.epochs": 1, "student.train.epochs": 1}))
    fixed = {k: yaml.safe_load(v) for k, v in fixed.items() if k not in ("output_dir", "run_name")}
    sweep = tmp_path / "precision.yaml"
    sweep.write_text(yaml.safe_dump({"name": "precision", "set": fixed, "grid": {"mixed_precision": ["no", "bf16"]},
                                     "seeds": [0], "output_dir": str(tmp_path / "sweeps")}), encoding="utf-8")
    assert main(["sweep", str(sweep)]) == 0
    assert len(pd.read_csv(tmp_path / "sweeps/precision/runs.csv")) == 2
