"""`kd sweep FILE`: every combination of a grid over config keys, times seeds, as distill runs.

A sweep file (YAML):

    name: temperature_alpha             # default: the file's name without .yaml
    configs: [configs/goemotions.yaml]  # base config files, in order
    set: {student.init: random}         # settings shared by every run (dotted keys)
    grid:                               # every combination of these runs
      distill.alpha: [0.3, 0.6, 0.9]    # a list of values ...
      student:                          # ... or named values (any key or config section)
        tiny: {name: bert-tiny, init: random}
        l2: {name: minilm-l6, init: teacher-layers, num_layers: 2}
    seeds: [0, 1, 2]                    # the student's seed; the teacher keeps the base seed
    metric: macro_auc                   # the student val metric that orders the table
    output_dir: checkpoints/sweeps      # the sweep writes output_dir/name/

Each distinct teacher is fine-tuned, and its soft targets computed, once (shared_teacher)
before any student; every run then takes it as `teacher.path`. Finished runs are skipped and
interrupted ones resumed, so running a stopped sweep again continues it; a run folder that holds
other settings is an error, never overwritten. `jobs` > 1 runs that many at once, each in its
own process with an equal share of the CPU threads (the first run goes alone, so that what
the runs share, such as the teacher's soft targets, is computed once). Tables and plots: kd.sweep_report.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd.config import Config, load_config, save_config
from kd.config_files import flatten, nest, parse_override, read_yaml_mapping
from kd.cores import usable_cores
from kd.distill import run
from kd.errors import KDError
from kd.runtime import resolve_mixed_precision, training_device
from kd.sweep_report import METRICS, write_report

SWEEP_KEYS = {"name", "configs", "set", "grid", "seeds", "metric", "output_dir"}


@dataclass
class Sweep:
    name: str
    file: Path
    configs: list[str]
    fixed: list[dict[str, Any]]  # nested updates shared by every run, in order
    grid: dict[str, dict[str, Any]]  # dotted key -> {label: value}
    seeds: list[int]
    metric: str
    folder: Path  # output_dir/name


@dataclass
class SweepRun:
    name: str
    setting: dict[str, str]  # grid key -> value label
    seed: int
    config: Config  # teacher.path is filled in by run_sweep
    teacher_config: Config  # the setting with the base seed: what the shared teacher is

    @property
    def folder(self) -> Path:
        return Path(self.config.output_dir) / self.name

    def finished(self) -> bool:
        return (self.folder / "final_metrics.json").is_file()


def value_label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _grid_axis(key: str, values: Any) -> dict[str, Any]:
    if isinstance(values, dict) and values:
        return {str(label): value for label, value in values.items()}
    if isinstance(values, list) and values:
        axis = {value_label(v): v for v in values}
        if len(axis) != len(values):
            raise KDError(f"sweep grid key {key} lists a value twice: {values}")
        return axis
    raise KDError(f"sweep grid key {key} needs a non-empty list of values or a mapping of named values")


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    """Read and check a sweep file; `overrides` (key=value) join its `set` for every run."""
    path = Path(path)
    spec = read_yaml_mapping(path, "sweep file")
    if set(spec) - SWEEP_KEYS:
        raise KDError(f"sweep file {path}: keys must be among {sorted(SWEEP_KEYS)}, got {sorted(spec)}")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise KDError(f"sweep file {path}: `grid` must map at least one config key to its values")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise KDError(f"sweep file {path}: `seeds` must be a non-empty list of integers, got {seeds!r}")
    metric = spec.get("metric", "macro_auc")
    if metric not in METRICS:
        raise KDError(f"sweep file {path}: metric must be one of {list(METRICS)}, got {metric!r}")
    fixed = [nest(key, value) for key, value in (spec.get("set") or {}).items()]
    fixed += [parse_override(text) for text in overrides]
    name = str(spec.get("name", path.stem))
    return Sweep(name=name, file=path, configs=[str(c) for c in spec.get("configs", [])], fixed=fixed,
                 grid={key: _grid_axis(key, values) for key, values in grid.items()}, seeds=seeds,
                 metric=metric, folder=Path(spec.get("output_dir", "checkpoints/sweeps")) / name)


def _short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where that part is ambiguous."""
    last = [key.split(".")[-1] for key in keys]
    return {key: (short if last.count(short) == 1 else key) for key, short in zip(keys, last)}


def plan(sweep: Sweep) -> list[SweepRun]:
    """Every (grid combination, seed) as a run with its validated config."""
    keys = list(sweep.grid)
    short = _short_names(keys)
    runs = []
    for combination in itertools.product(*(sweep.grid[key].items() for key in keys)):
        setting = {key: label for key, (label, _) in zip(keys, combination)}
        updates = [nest(key, value) for key, (_, value) in zip(keys, combination)]
        try:
            base = load_config(sweep.configs, updates=[*sweep.fixed, *updates])
        except KDError as err:
            raise KDError(f"sweep {sweep.name}, setting {setting}: {err}") from None
        for seed in sweep.seeds:
            name = "-".join(f"{short[key]}{label}" for key, label in setting.items()) + f"-s{seed}"
            config = copy.deepcopy(base)
            config.seed, config.output_dir = seed, str(sweep.folder / "runs")
            config.run_name = re.sub(r"[^\w.=-]+", "_", name)
            runs.append(SweepRun(config.run_name, setting, seed, config, base))
    if len({r.name for r in runs}) != len(runs):
        raise KDError(f"sweep {sweep.name}: two settings give the same run name; name the values")
    return runs


def _check_same_settings(sweep_run: SweepRun) -> None:
    saved = sweep_run.folder / "config.yaml"
    if not saved.is_file():
        return
    # the saved file read as a config: settings added to kd since then take their defaults
    before, now = flatten(load_config([saved]).to_dict()), flatten(sweep_run.config.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise KDError(f"run folder {sweep_run.folder} holds a run with other settings ({', '.join(changed)}); "
                      f"remove it, or give this sweep another name")


def _run_in_process(sweep_run: SweepRun) -> None:
    run(sweep_run.config, resume=(sweep_run.folder / "config.yaml").is_file())


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
    with log.open("a") as handle:
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
        run(teacher_cfg, resume=(run_dir / "config.yaml").is_file(), teacher_only=True)
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
