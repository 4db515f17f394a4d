"""Teachers fine-tuned once and shared: by the runs of a sweep, by benchmarks, and by users' own
Trainer or Lightning loops (kd.integrations.soft_targets). Each distinct teacher (teacher_key) is
fine-tuned, and its soft targets cached, into cache_dir/teachers/<key>/ by kd.run.pipeline's
prepare_teacher; every later call finds it there."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

from kd.config.settings import Config
from kd.config.sources import flatten
from kd.run.isolated import run_in_child
from kd.run.pipeline import prepare_teacher
from kd.runtime.hardware import resolve_mixed_precision, training_device


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


def shared_teacher_run(cfg: Config, own_process: bool = False) -> Path:
    """The run folder of `cfg`'s teacher in cache_dir/teachers/<key>/, fine-tuned (or its
    fine-tuning resumed) now unless there; its final_metrics.json names its soft-targets file.
    `own_process`: in a child process, leaving this process's Accelerate state untouched."""
    run_dir = Path(cfg.cache_dir) / "teachers" / teacher_key(cfg)
    if not (run_dir / "final_metrics.json").is_file():
        teacher_cfg = copy.deepcopy(cfg)
        teacher_cfg.output_dir, teacher_cfg.run_name = str(run_dir.parent), run_dir.name
        resume = (run_dir / "config.yaml").is_file()
        if own_process:
            run_in_child("teacher", teacher_cfg, resume)
        else:
            prepare_teacher(teacher_cfg, resume)
    return run_dir


def shared_teacher(cfg: Config) -> Path:
    """The fine-tuned teacher folder for `cfg`: `teacher.path` when set, else fine-tuned once per
    teacher_key (shared_teacher_run) and reused by every later call, so a sweep or a benchmark
    fine-tunes each distinct teacher only once. An interrupted fine-tuning resumes."""
    if cfg.teacher.path:
        return Path(cfg.teacher.path)
    return shared_teacher_run(cfg) / "teacher"
