"""`kd sweep` on tiny models: the table and plots it writes, one teacher for all runs, resuming."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import tiny
import torch
import yaml

from kd.cli import main
from kd.config.settings import Config
from kd.errors import KDError
from kd.run import teachers
from kd.student import stage as student_stage
from kd.sweep import runner as sweep
from kd.sweep.grid import load_sweep, plan
from kd.teacher import stage as teacher_stage
from kd.training import loop as train


def _write_sweep(tmp_path, models, csv_data, grid, seeds, **extra) -> str:
    fixed = dict(item.split("=", 1) for item in tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "teacher.train.epochs": 1, "student.train.epochs": 1}))
    fixed = {k: yaml.safe_load(v) for k, v in fixed.items() if k not in ("output_dir", "run_name")}
    spec = {"name": "tiny", "set": fixed, "grid": grid, "seeds": seeds,
            "output_dir": str(tmp_path / "sweeps"), **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.fixture
def counted(monkeypatch):
    """Counts fit() calls per stage and the student runs the sweep starts (not the shared teacher's)."""
    counts = {"teacher": 0, "student": 0, "runs": 0}
    real_fit, real_distill = train.fit, sweep.distill

    def fit(ctx, job):
        counts[job.stage] += 1
        return real_fit(ctx, job)

    def distill(*args, **kwargs):
        counts["runs"] += 1
        return real_distill(*args, **kwargs)

    monkeypatch.setattr(student_stage, "fit", fit)
    monkeypatch.setattr(teacher_stage, "fit", fit)
    monkeypatch.setattr(sweep, "distill", distill)
    return counts


def test_sweep_writes_table_and_plots_with_one_teacher(models, csv_data, tmp_path, counted):
    file = _write_sweep(tmp_path, models, csv_data,
                        {"distill.alpha": [0.0, 0.5], "distill.temperature": [1, 4]}, [0, 1])
    assert main(["sweep", file]) == 0
    folder = tmp_path / "sweeps" / "tiny"
    assert {"runs.csv", "results.csv", "results.md", "bars.png", "temperature.png"} <= {
        p.name for p in folder.iterdir()}
    assert counted == {"teacher": 1, "student": 8, "runs": 8}  # the teacher is fine-tuned once
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 1
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 8 and sorted(runs["seed"].unique()) == [0, 1]
    for name in runs["run"]:
        final = json.loads((folder / "runs" / name / "final_metrics.json").read_text())
        assert final["teacher"]["given"] is True and final["soft_targets_cache_hit"] in (True, None)
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 4 and (table["seeds"] == 2).all()
    assert list(table["macro_auc_mean"]) == sorted(table["macro_auc_mean"], reverse=True)
    one = table[(table["distill.alpha"] == 0.5) & (table["distill.temperature"] == 4)].iloc[0]
    seeds = runs[(runs["distill.alpha"] == 0.5) & (runs["distill.temperature"] == 4)]["macro_auc"]
    assert one["macro_auc_mean"] == pytest.approx(seeds.mean()) and one["macro_auc_std"] == pytest.approx(seeds.std())
    assert not table[table["distill.alpha"] == 0]["uses_teacher"].any()
    text = (folder / "results.md").read_text()
    assert "| distill.alpha | distill.temperature | macro AUC |" in text and " ± " in text


def test_stopped_sweep_resumes_and_skips_finished_runs(models, csv_data, tmp_path, counted, monkeypatch):
    file = _write_sweep(tmp_path, models, csv_data, {"distill.alpha": [0.0, 0.5]}, [0, 1])
    counting_fit = student_stage.fit

    def stop_in_third_student(ctx, job):
        if counted["student"] == 2:
            raise KeyboardInterrupt  # Ctrl-C inside the third run
        return counting_fit(ctx, job)

    monkeypatch.setattr(student_stage, "fit", stop_in_third_student)
    assert main(["sweep", file]) == 130
    folder = tmp_path / "sweeps" / "tiny" / "runs"
    finished = sorted(p.parent.name for p in folder.glob("*/final_metrics.json"))
    assert len(finished) == 2 and not (tmp_path / "sweeps/tiny/results.csv").exists()
    stamps = {name: (folder / name / "final_metrics.json").stat().st_mtime_ns for name in finished}
    resumed = []
    monkeypatch.setattr(student_stage, "fit", counting_fit)
    real_distill = sweep.distill
    monkeypatch.setattr(sweep, "distill", lambda cfg, resume: resumed.append((cfg.run_name, resume))
                        or real_distill(cfg, resume))
    assert main(["sweep", file]) == 0
    assert len(resumed) == 2 and [r for r in resumed if r[1]] == [resumed[0]]  # the stopped run resumes
    assert {name: (folder / name / "final_metrics.json").stat().st_mtime_ns for name in finished} == stamps
    assert counted["teacher"] == 1 and len(pd.read_csv(tmp_path / "sweeps/tiny/runs.csv")) == 4


def test_parallel_sweep_runs_in_processes(models, csv_data, tmp_path):
    file = _write_sweep(tmp_path, models, csv_data, {"student.train.lr": [3e-3, 1e-3]}, [0])
    assert main(["sweep", file, "--jobs", "2", "--out", str(tmp_path / "report")]) == 0
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 2
    assert {p.name for p in (tmp_path / "sweeps/tiny/logs").iterdir()} == {"lr0.003-s0.log", "lr0.001-s0.log"}


def test_named_values_and_errors(models, csv_data, tmp_path):
    file = _write_sweep(tmp_path, models, csv_data, {"student": {
        "narrow": {"num_layers": 1}, "deep": {"num_layers": 2}}}, [0])
    assert [r.name for r in plan(load_sweep(file))] == ["studentnarrow-s0", "studentdeep-s0"]
    with pytest.raises(KDError, match="unknown config key 'distill.alpah'"):
        plan(load_sweep(_write_sweep(tmp_path, models, csv_data, {"distill.alpah": [1]}, [0])))
    with pytest.raises(KDError, match="non-empty list"):
        load_sweep(_write_sweep(tmp_path, models, csv_data, {"distill.alpha": []}, [0]))
    with pytest.raises(KDError, match="metric must be one of"):
        load_sweep(_write_sweep(tmp_path, models, csv_data, {"distill.alpha": [0.5]}, [0], metric="auc"))
    file = _write_sweep(tmp_path, models, csv_data, {"distill.alpha": [0.0]}, [0])
    assert main(["sweep", file]) == 0
    assert main(["sweep", file, "student.train.epochs=2"]) == 2  # a finished run with other settings
    run_config = next((tmp_path / "sweeps").glob("*/runs/*/config.yaml"))
    saved = yaml.safe_load(run_config.read_text())
    del saved["student"]["train"]["lazy_embedding_update"]  # as written before kd had this setting
    run_config.write_text(yaml.safe_dump(saved))
    assert main(["sweep", file]) == 0  # a setting added since, at its default, is no change


def test_teacher_key_hashes_only_settings_that_differ_from_the_defaults(monkeypatch):
    monkeypatch.setattr(teachers, "training_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False})
    base = Config()  # mixed_precision=auto trains this teacher in fp32 here
    assert teachers.teacher_key(base) == hashlib.sha256(b"{}").hexdigest()[:16]
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})  # in bf16
    assert teachers.teacher_key(base) == hashlib.sha256(b'{"mixed_precision": "bf16"}').hexdigest()[:16]
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False})
    changed = Config()
    changed.teacher.train.lr = 1e-4
    assert teachers.teacher_key(changed) != teachers.teacher_key(base)
    changed.student.train.lr = 1e-2  # the student does not decide the teacher
    changed.teacher.train.group_by_length = True  # set, but to its default
    assert teachers.teacher_key(changed) == hashlib.sha256(b'{"teacher.train.lr": 0.0001}').hexdigest()[:16]


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs/sweeps").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_committed_sweep_file_plans(path):
    """Each sweep in configs/sweeps resolves to valid run configs with today's config files."""
    assert plan(load_sweep(path))


def test_parallel_jobs_each_get_a_gpu_of_their_own(models, csv_data, tmp_path, monkeypatch, capsys):
    import threading
    import time

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # two GPUs, as the sweep sees them
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls, lock = [], threading.Lock()

    def run(sweep_run, sweep_, env):  # stands in for a kd distill process
        started = time.perf_counter()
        time.sleep(0.2)
        with lock:
            calls.append((env.get("CUDA_VISIBLE_DEVICES"), started, time.perf_counter()))
        return 0

    monkeypatch.setattr(sweep, "_run_in_subprocess", run)
    assert sweep._run_in_parallel([f"run{i}" for i in range(5)], None, 2) == [0] * 5
    assert len(calls) == 5 and {gpu for gpu, _, _ in calls} == {"0", "1"}
    for (gpu, start, end), (other, start2, end2) in itertools.combinations(calls, 2):
        assert gpu != other or end <= start2 or end2 <= start  # never two runs on one GPU at once
    file = _write_sweep(tmp_path, models, csv_data, {"student.train.lr": [3e-3, 2e-3, 1e-3]}, [0])
    assert main(["sweep", file, "--jobs", "3"]) == 2  # refused before any teacher trains
    assert "--jobs 3 with 2 visible GPU(s)" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "teachers").exists()
