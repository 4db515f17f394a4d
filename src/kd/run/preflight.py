"""What a run makes sure of before it trains: writable output and cache folders, every model it
needs loadable (all missing ones named in one error), data.max_length within each model's
positions, layer-matching shapes that fit, and a run folder held by this run alone, removed
again when the run fails before its first batch."""

from __future__ import annotations

import re
import shutil
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from kd.config.settings import Config, save_config
from kd.errors import KDError
from kd.files import check_writable, folder_lock
from kd.models.build import TEACHER_INITS, check_positions
from kd.models.hub import load_model_config, missing_weights
from kd.training.checkpoint import check_processes
from kd.training.layer_matching import check_shapes


def check_resumable(cfg: Config, accelerator: Accelerator) -> None:
    """A resumed run's saved training states were written by as many processes as this run has:
    refused in one line before anything is read or trained."""
    for state in sorted((Path(cfg.output_dir) / run_name(cfg) / "state").glob("*.safetensors")):
        check_processes(state, accelerator.num_processes)


def run_name(cfg: Config) -> str:
    """run_name, or `<date>-<time>-<teacher>-<student>`, as a folder name."""
    name = cfg.run_name or "{}-{}-{}".format(time.strftime("%Y%m%d-%H%M%S"), cfg.teacher.name, cfg.student.name)
    return re.sub(r"[^\w.-]+", "_", name)


@contextmanager
def run_folder(cfg: Config, accelerator: Accelerator, resume: bool) -> Iterator[Path]:
    """checkpoints/<run_name>, the same on every process, held by this run while it lasts (a
    second run of that name at the same time is refused); a finished run is never overwritten."""
    name = broadcast_object_list([run_name(cfg)])[0]
    run_dir = Path(cfg.output_dir) / name
    if (run_dir / "final_metrics.json").exists():
        raise KDError(f"run folder {run_dir} already holds a finished run; choose another run_name")
    created = not run_dir.exists()
    with ExitStack() as held:
        def hold() -> None:
            run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(folder_lock(run_dir))
        on_main_process(accelerator, hold)
        if accelerator.is_main_process and not resume:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        accelerator.wait_for_everyone()
        try:
            yield run_dir
        except Exception:  # a failure; a Ctrl-C keeps the folder, for --resume
            if created and accelerator.is_main_process and _holds_no_work(run_dir):
                held.close()  # the lock first: Windows cannot remove an open file
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _holds_no_work(run_dir: Path) -> bool:
    """Only what a run writes before its first batch: a failed run that holds no more leaves nothing."""
    files = {p.name: p for p in run_dir.iterdir()}
    return set(files) <= {"config.yaml", "metrics.jsonl", ".lock"} and (
        "metrics.jsonl" not in files or files["metrics.jsonl"].stat().st_size == 0)


def on_main_process(accelerator: Accelerator, action: Callable[[], None]) -> None:
    """action() on the main process; its KDError raised on every process (none waits for it)."""
    problem = None
    if accelerator.is_main_process:
        try:
            action()
        except KDError as err:
            problem = str(err)
    problem = broadcast_object_list([problem])[0]
    if problem:
        raise KDError(problem)


def check_output_folders(cfg: Config, accelerator: Accelerator) -> None:
    """output_dir and cache_dir writable, before anything is read or trained."""
    on_main_process(accelerator, lambda: (check_writable(cfg.output_dir, "output_dir"),
                                          check_writable(cfg.cache_dir, "cache_dir")))


def missing_models(cfg: Config) -> list[str]:
    """Every model the run needs that cannot be loaded, each with the settings that avoid it."""
    student, problems = cfg.student, []
    if cfg.teacher.soft_targets:
        if not Path(cfg.teacher.soft_targets).is_file():
            problems.append(f"teacher.soft_targets {cfg.teacher.soft_targets} is not a file")
    elif cfg.teacher.path:
        if not (Path(cfg.teacher.path) / "config.json").is_file():
            problems.append(f"teacher.path {cfg.teacher.path} is not a model folder (no config.json)")
    elif cfg.teacher.init == "pretrained" and (why := missing_weights(cfg.teacher.name)):
        problems.append(f"the teacher's pretrained weights: {why} (or set teacher.init=random, or "
                        "teacher.path=FOLDER of a fine-tuned teacher)")
    for path in cfg.distill.extra_teachers:
        if not (Path(path) / "config.json").is_file():
            problems.append(f"extra teacher {path} is not a model folder (no config.json)")
    if student.init == "pretrained" and (why := missing_weights(student.name)):
        problems.append(f"the student's pretrained weights: {why} (or set student.init=random)")
    elif student.init in TEACHER_INITS and (why := missing_weights(cfg.teacher.name)):
        problems.append(f"student.init={student.init} needs the teacher's pretrained weights: {why} "
                        "(or set student.init=random)")
    return problems


def check_models(cfg: Config) -> None:
    """Every model the run needs, data.max_length against their positions, and the layer numbers
    and head counts of layer matching: checked before a teacher is fine-tuned. Missing models
    are listed together in one error."""
    problems = missing_models(cfg)
    student_name = cfg.teacher.name if cfg.student.init in TEACHER_INITS else cfg.student.name
    configs = {}
    teacher = [] if cfg.teacher.soft_targets else [("teacher", cfg.teacher.path or cfg.teacher.name)]
    for who, name in [*teacher, ("student", student_name),
                      *[("extra teacher", path) for path in cfg.distill.extra_teachers]]:
        try:
            configs[f"{who} {name}"] = load_model_config(name)
        except KDError as err:
            if not any(name in problem for problem in problems):
                problems.append(str(err))
    if problems:
        raise KDError(f"{len(problems)} model(s) this run needs cannot be loaded: " + "; ".join(problems)
                      + ". Offline, point HF_HUB_CACHE at a hub cache that has them")
    check_positions(cfg.data.max_length, configs)
    if not cfg.distill.matches_layers:
        return
    student = cfg.student
    config = load_model_config(cfg.teacher.name if student.init == "teacher-layers" else student.name)
    layers = len(student.layers) if student.layers else student.num_layers
    if layers is not None:
        config.num_hidden_layers = layers
    check_shapes(config, load_model_config(cfg.teacher.path or cfg.teacher.name), cfg.distill.layer_map,
                 cfg.distill.attention_weight)
