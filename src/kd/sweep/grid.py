"""Sweep files: a grid over config keys, times seeds, planned as distill runs with their configs.

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
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd.config.settings import Config, load_config
from kd.config.sources import flatten, nest, parse_override, read_yaml_mapping
from kd.errors import KDError
from kd.sweep.report import METRICS

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
