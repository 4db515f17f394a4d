"""`kd sweep FILE`: the runs of a sweep's grid (kd.sweep.grid), each distinct teacher fine-tuned first.

The grid and its runs: kd.sweep.grid. Each distinct teacher is fine-tuned, and its soft targets computed, once (shared_teacher)
before any student; every run then takes it as `teacher.path`. Finished runs are skipped and
interrupted ones resumed, so running a stopped sweep again continues it; a run folder that holds
other settings is an error, never overwritten. `jobs` > 1 runs that many at once, each in its
own process with an equal share of the CPU threads (the first run goes alone, so that what
the runs share, such as the teacher's soft targets, is computed once). Tables and plots: kd.sweep.report.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kd.config.settings import Config, save_config
from kd.config.sources import flatten
from kd.runtime.cores import usable_cores
from kd.run.pipeline import distill, prepare_teacher
from kd.errors import KDError
from kd.runtime.hardware import resolve_mixed_precision, training_device
from kd.sweep.grid import Sweep, SweepRun, _check_same_settings, plan
from kd.sweep.report import write_report


def _run_in_process(sweep_run: SweepRun) -> None:
    distill(sweep_run.config, resume=(sweep_run.folder / "config.yaml").is_file())


def _run_in_subprocess(sweep_run: SweepRun, sweep: Sweep, threads: int) -> int:
    folder = sweep_run.folder
    if (folder / "config.yaml").is_file():
        command = ["--resume", str(folder)]
    else:
        config_file = sweep.folder / "configs" / f"{sweep_run.name}.yaml"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        save_config(sweep_run.config, config_file)
        command = ["--config", str(config_file)]
    log = sweep.folder / "logs" / f"{sweep_run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("a", encoding="utf-8") as handle:
        return subprocess.run([sys.executable, "-m", "kd.cli", "distill", *command], env=env,
                              stdout=handle, stderr=subprocess.STDOUT).returncode


def teacher_key(cfg: Config) -> str:
    """What decides the fine-tuned teacher: the data, the teacher's settings, seed and the
    precision it trains in here (`auto` resolved). Only values that differ from kd's defaults
    (for the precision, from fp32) are hashed, so that a setting added to kd later, whose
    default keeps the old behaviour, leaves every cached teacher valid."""
    def decisive(c: Config) -> dict:
        data = {k: v for k, v in dataclasses.asdict(c.data).items() if k != "num_proc"}  # ids do not depend on it
        return flatten({"data": data, "teacher": dataclasses.asdict(c.teacher), "seed": c.seed,
                        "mixed_precision": resolve_mixed_precision(c.mixed_precision, training_device())})
    defaults = decisive(Config(mixed_precision="no"))
    parts = {k: v for k, v in decisive(cfg).items() if k not in defaults or defaults[k] != v}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def shared_teacher(cfg: Config) -> Path:
    """The fine-tuned teacher folder for `cfg`: `teacher.path` when set, else fine-tuned once per
    teacher_key into cache_dir/teachers/<key>/ (its soft targets cached with it) and reused by
    every later call, so a sweep or a benchmark fine-tunes each distinct teacher only once. An
    interrupted fine-tuning resumes."""
    if cfg.teacher.path:
        return Path(cfg.teacher.path)
    run_dir = Path(cfg.cache_dir) / "teachers" / teacher_key(cfg)
    if not (run_dir / "final_metrics.json").is_file():
        teacher_cfg = copy.deepcopy(cfg)
        teacher_cfg.output_dir, teacher_cfg.run_name = str(run_dir.parent), run_dir.name
        prepare_teacher(teacher_cfg, resume=(run_dir / "config.yaml").is_file())
    return run_dir / "teacher"


def run_sweep(sweep: Sweep, jobs: int = 1, out: Path | None = None) -> list[SweepRun]:
    """Fine-tune each distinct teacher once, run every unfinished run, then write the report."""
    if jobs < 1:
        raise KDError("--jobs must be at least 1")
    runs = plan(sweep)
    teachers: dict[str, Path] = {}
    for sweep_run in runs:  # every teacher before any student: parallel runs never race for one
        if not sweep_run.config.teacher.soft_targets:  # a file of scores needs no teacher model
            key = sweep_run.teacher_config.teacher.path or teacher_key(sweep_run.teacher_config)
            if key not in teachers:
                teachers[key] = shared_teacher(sweep_run.teacher_config)
            sweep_run.config.teacher.path = str(teachers[key])
        _check_same_settings(sweep_run)
    todo = [r for r in runs if not r.finished()]
    print(f"sweep {sweep.name}: {len(runs)} runs ({len(runs) - len(todo)} already finished), "
          f"{len(teachers)} teacher(s), {jobs} at a time -> {sweep.folder}", file=sys.stderr, flush=True)
    failed = []
    if jobs == 1:
        for sweep_run in todo:
            _run_in_process(sweep_run)
    else:
        # the first run alone computes what the rest share (soft targets) instead of all at once
        cores = usable_cores()
        codes = [_run_in_subprocess(todo[0], sweep, cores)] if todo else []
        with ThreadPoolExecutor(jobs) as pool:
            codes += pool.map(lambda r: _run_in_subprocess(r, sweep, max(1, cores // jobs)), todo[1:])
        failed = [r.name for r, code in zip(todo, codes) if code != 0]
    write_report(sweep, [r for r in runs if r.finished()], out or sweep.folder)
    if failed:
        raise KDError(f"{len(failed)} run(s) failed: {', '.join(failed)}; their logs are in {sweep.folder / 'logs'}")
    return runs
