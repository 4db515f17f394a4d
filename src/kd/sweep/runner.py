"""`kd sweep FILE`: the runs of a sweep's grid (kd.sweep.grid), each distinct teacher fine-tuned first.

Each distinct teacher is fine-tuned, and its soft targets computed, once (kd.run.teachers)
before any student; every run then takes it as `teacher.path`. Finished runs are skipped and
interrupted ones resumed, so running a stopped sweep again continues it; a run folder that holds
other settings is an error, never overwritten. `jobs` > 1 runs that many at once, each in its
own process on a GPU of its own, or without GPUs with an equal share of the CPU threads (the
first run goes alone, so that what the runs share, such as the teacher's soft targets, is
computed once). Tables and plots: kd.sweep.report.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kd.config.settings import save_config
from kd.errors import KDError
from kd.run.pipeline import distill
from kd.run.teachers import shared_teacher, teacher_key
from kd.runtime.cores import usable_cores
from kd.sweep.grid import Sweep, SweepRun, _check_same_settings, plan
from kd.sweep.report import write_report


def _run_in_process(sweep_run: SweepRun) -> None:
    distill(sweep_run.config, resume=(sweep_run.folder / "config.yaml").is_file())


def _run_in_subprocess(sweep_run: SweepRun, sweep: Sweep, env: dict[str, str]) -> int:
    """The run in a `kd distill` process of its own, its output in the sweep's logs/; `env`: the
    variables that give it its share of the machine."""
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
    with log.open("a", encoding="utf-8") as handle:
        return subprocess.run([sys.executable, "-m", "kd.cli", "distill", *command], env={**os.environ, **env},
                              stdout=handle, stderr=subprocess.STDOUT).returncode


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as CUDA_VISIBLE_DEVICES names them (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named or [str(i) for i in range(torch.cuda.device_count())]


def job_slots(jobs: int) -> list[dict[str, str]]:
    """What each of `jobs` parallel runs gets of the machine: one GPU apiece where there are GPUs
    (CUDA_VISIBLE_DEVICES; more jobs than GPUs is an error), else an equal share of the CPU threads."""
    gpus = visible_gpus()
    if gpus:
        if jobs > len(gpus):
            raise KDError(f"--jobs {jobs} with {len(gpus)} visible GPU(s): each job trains on a GPU of its own, "
                          f"so give --jobs {len(gpus)} or fewer")
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus[:jobs]]
    return [{"OMP_NUM_THREADS": str(max(1, usable_cores() // jobs))} for _ in range(jobs)]


def _run_in_parallel(todo: list[SweepRun], sweep: Sweep, jobs: int) -> list[int]:
    """Exit codes of the runs, `jobs` at a time, each on a slot of its own (job_slots); the first
    run goes alone, so that what the runs share (soft targets) is computed once, not by all at once."""
    slots = job_slots(jobs)
    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)

    def run(sweep_run: SweepRun) -> int:
        slot = free.get()
        try:
            return _run_in_subprocess(sweep_run, sweep, slot)
        finally:
            free.put(slot)

    first = dict(slots[0], OMP_NUM_THREADS=str(usable_cores())) if "OMP_NUM_THREADS" in slots[0] else slots[0]
    codes = [_run_in_subprocess(todo[0], sweep, first)] if todo else []
    with ThreadPoolExecutor(jobs) as pool:
        return codes + list(pool.map(run, todo[1:]))


def run_sweep(sweep: Sweep, jobs: int = 1, out: Path | None = None) -> list[SweepRun]:
    """Fine-tune each distinct teacher once, run every unfinished run, then write the report."""
    if jobs < 1:
        raise KDError("--jobs must be at least 1")
    if jobs > 1:
        job_slots(jobs)  # more jobs than GPUs: refused before any teacher trains
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
        codes = _run_in_parallel(todo, sweep, jobs)
        failed = [r.name for r, code in zip(todo, codes) if code != 0]
    write_report(sweep, [r for r in runs if r.finished()], out or sweep.folder)
    if failed:
        raise KDError(f"{len(failed)} run(s) failed: {', '.join(failed)}; their logs are in {sweep.folder / 'logs'}")
    return runs
