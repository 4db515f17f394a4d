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
