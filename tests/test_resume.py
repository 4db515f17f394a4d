"""Resuming: a run killed mid-epoch (SIGKILL) or stopped with Ctrl-C continues from its saved
state and ends exactly where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tiny
from safetensors import safe_open

from kd.cli import main
from kd.training.checkpoint import state_path


def _overrides(models, csv_data, tmp_path, name):
    return tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "run_name": name, "teacher.train.epochs": 2, "student.train.epochs": 3,
        "teacher.train.save_every_steps": 3, "student.train.save_every_steps": 3})


@pytest.fixture(scope="module")
def reference(models, csv_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    assert main(["distill", *_overrides(models, csv_data, tmp, "ref")]) == 0
    return tmp / "runs/ref"


def _same_run(run_dir, reference):
    final, expected = (json.loads((d / "final_metrics.json").read_text()) for d in (run_dir, reference))
    for stage in ("teacher", "student"):
        assert final[stage]["best_epoch"] == expected[stage]["best_epoch"]
        for key in ("bce", "macro_auc", "macro_f1_tuned"):
            assert final[stage]["val"][key] == pytest.approx(expected[stage]["val"][key], abs=1e-6)
    assert not (run_dir / "state").exists()  # a finished run leaves no state behind
    tiny.assert_same_weights(run_dir / "student/model.safetensors", reference / "student/model.safetensors")


def _progress(path):
    try:
        with safe_open(path, framework="pt") as handle:
            return json.loads(handle.metadata()["progress"])
    except Exception:
        return None


def test_sigkill_mid_epoch_then_resume(models, csv_data, tmp_path, reference, capsys):
    command = [sys.executable, "-m", "kd.cli", "distill", *_overrides(models, csv_data, tmp_path, "run")]
    run_dir = tmp_path / "runs/run"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = state_path(run_dir, "student")
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        progress = _progress(state) if state.is_file() else None
        if progress and progress["epoch"] == 2 and progress["step"] > 0:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    assert not (run_dir / "final_metrics.json").exists()
    capsys.readouterr()
    assert main(["distill", "--resume", str(run_dir)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    for stage in ("teacher", "teacher-calibration"):  # finished before the kill: skipped, not run again
        assert f"{stage}: finished before the run stopped; not run again" in err
    assert "student: resuming at epoch 2" in err
    _same_run(run_dir, reference)


def test_ctrl_c_saves_a_resumable_state(models, csv_data, tmp_path, reference, monkeypatch, capsys):
    restore_loss = tiny.ctrl_c_at_loss_call(monkeypatch, 20)  # in the teacher's second epoch
    assert main(["distill", *_overrides(models, csv_data, tmp_path, "run")]) == 130
    assert "interrupted" in capsys.readouterr().err
    progress = _progress(state_path(tmp_path / "runs/run", "teacher"))
    assert (progress["epoch"], progress["step"]) == (2, 4)  # the batch under way was finished
    restore_loss()
    assert main(["distill", "--resume", str(tmp_path / "runs/run")]) == 0
    _same_run(tmp_path / "runs/run", reference)


def test_resume_refuses_bad_input(tmp_path, capsys):
    assert main(["distill", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert main(["distill", "--resume", str(tmp_path), "seed=2"]) == 2
