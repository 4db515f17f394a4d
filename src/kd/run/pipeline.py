"""A run as stages over one context (kd.runtime.context):

    data -> teacher -> soft targets -> [pre-training] -> student -> calibration -> model cards

`distill` (`kd distill`) runs them all; `prepare_teacher` (a sweep's shared teacher) the first
three; `pretrain` (`kd pretrain`) pre-trains a student alone. Each stage is a function of the
context and the results of the stages before it, and writes what it makes into the run folder or
the cache. A stage that is cached is skipped by every command alike (the soft targets, the
pre-trained student, a sweep's teacher), and so is a stage that a resumed run had finished.

A run folder `checkpoints/<run>/` holds `teacher/` and `student/` (save_pretrained folders with
thresholds.json, calibration.json and a model card), `config.yaml` (the resolved config),
`metrics.jsonl` (one record per epoch of either stage) and `final_metrics.json`.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from accelerate import Accelerator
from accelerate.utils import set_seed

from kd.config.settings import Config, load_config
from kd.data.splits import Splits, load_splits
from kd.data.tokens import TokenCache
from kd.data.transfer import read_texts
from kd.deployment.card import write_run_cards
from kd.errors import KDError, one_line
from kd.evaluation.stage import calibration_stage
from kd.run.isolated import precision_taken, run_in_child
from kd.run.preflight import (
    check_models,
    check_output_folders,
    check_resumable,
    run_folder,
)
from kd.runtime.context import RunContext
from kd.runtime.hardware import make_accelerator, precision_name
from kd.runtime.report import Reporter, write_json
from kd.student.pretrain import pretrain_encoder
from kd.student.stage import student_stage
from kd.student.start import resolve_init, student_start
from kd.teacher.soft_targets import soft_targets_stage, teacher_soft_targets
from kd.teacher.stage import teacher_folder, teacher_stage


def distill(cfg: Config, resume: bool = False) -> Path:
    """Run the whole job, or with `resume` continue it from its saved state; returns the run folder.
    Where this process already trained in another mixed precision, the run takes a process of its
    own (kd.run.isolated)."""
    if precision_taken(cfg):
        return run_in_child("distill", cfg, resume)
    with _distill_run(cfg, resume) as (ctx, data, recipe, transfer_texts):
        teacher = _teacher(ctx, data)
        targets = soft_targets_stage(ctx, data, teacher_folder(ctx), transfer_texts)
        if not ctx.cfg.distill.matches_layers:
            ctx.release("teacher")  # the student stage needs only its soft targets
        start = student_start(ctx, data)
        student = _stage(ctx, "student", lambda: student_stage(ctx, data, targets, start))
        student["calibration"] = _stage(ctx, "student-calibration",
                                        lambda: calibration_stage(ctx, "student", Path(student["path"]), data.val))
        student.update({"pretraining": start.pretraining} if start.pretraining else {}, recipe=recipe)
        summaries = {"teacher": teacher, "student": student}
        _finish(ctx, {"teacher": teacher, "soft_targets_cache_hit": targets.cache_hit,
                      "soft_targets_file": targets.file, "num_processes": ctx.accelerator.num_processes,
                      "student": student})
        if ctx.is_main:
            write_run_cards(ctx, data, summaries)
        ctx.reporter.final_table(summaries)
    return ctx.run_dir


def prepare_teacher(cfg: Config, resume: bool = False) -> Path:
    """The teacher stage and its soft targets alone (kd sweep's shared teacher); the run folder."""
    if precision_taken(cfg):
        return run_in_child("teacher", cfg, resume)
    with _distill_run(cfg, resume) as (ctx, data, _, _):
        teacher = _teacher(ctx, data)
        targets = teacher_soft_targets(ctx, data, teacher_folder(ctx))
        _finish(ctx, {"teacher": teacher, "soft_targets_cache_hit": targets.cache_hit,
                      "soft_targets_file": targets.file, "num_processes": ctx.accelerator.num_processes})
    return ctx.run_dir


def pretrain(cfg: Config, resume: bool = False) -> Path:
    """`kd pretrain`: pre-train cfg.student on cfg.pretrain.files; returns the run folder (its
    `student/` folder is the pre-trained encoder). `resume` continues an interrupted run."""
    if not cfg.pretrain.files:
        raise KDError("kd pretrain needs unlabelled texts: pretrain.files=[FILE, ...] (one text per line)")
    if precision_taken(cfg):
        return run_in_child("pretrain", cfg, resume)
    texts = read_texts(cfg.pretrain.files, "pretrain.files")
    cfg, _ = resolve_init(cfg)
    accelerator = make_accelerator(cfg)
    check_output_folders(cfg, accelerator)
    if resume:
        check_resumable(cfg, accelerator)
    with _context(cfg, cfg, accelerator, resume) as ctx:
        ctx.command = "pretrain"
        result = pretrain_encoder(ctx, texts, ctx.run_dir / "student")
        _finish(ctx, {"student": {"path": str(ctx.run_dir / "student"), **result}})
        ctx.reporter.print(f"pre-trained student: {ctx.run_dir / 'student'} "
                           "(a task run starts from it with student.name=<it> student.init=pretrained)")
    return ctx.run_dir


class _Started(NamedTuple):
    ctx: RunContext
    data: Splits
    recipe: str  # how the student starts, in words (student.init=auto resolved)
    transfer_texts: list[str]  # the texts of distill.transfer_files


@contextmanager
def _distill_run(cfg: Config, resume: bool) -> Iterator[_Started]:
    """The data stage and everything checked before a run folder exists (bad data, a model that
    cannot load, an unwritable folder fail first and leave nothing), then the run's context."""
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    check_output_folders(cfg, accelerator)
    if resume:
        check_resumable(cfg, accelerator)
    with accelerator.main_process_first():  # bad data fails first; its columns are cached only once all reads
        data = load_splits(cfg.data, Path(cfg.cache_dir) / "data")
    resolved, recipe = resolve_init(cfg)  # config.yaml keeps init=auto: a resume resolves it again
    check_models(resolved)
    transfer_texts = read_texts(resolved.distill.transfer_files)
    with _context(cfg, resolved, accelerator, resume, track=True) as ctx:
        _report_data(ctx, data, recipe)
        yield _Started(ctx, data, recipe, transfer_texts)


@contextmanager
def _context(given: Config, cfg: Config, accelerator: Accelerator, resume: bool,
             track: bool = False) -> Iterator[RunContext]:
    """The run folder (config.yaml keeps the `given` config), its reporter and token cache, as one
    context; every model the run held is let go at the end."""
    with run_folder(given, accelerator, resume) as run_dir, \
            Reporter(accelerator.is_main_process, run_dir / "metrics.jsonl",
                     _tracking(cfg, accelerator, run_dir) if track else None) as reporter:
        tokens = TokenCache(reporter, Path(cfg.cache_dir) / "tokens", cfg.data.num_proc,
                            accelerator.main_process_first)
        ctx = RunContext(cfg, accelerator, reporter, tokens, run_dir, resume)
        try:
            yield ctx
        finally:
            ctx.release(*ctx.loaded)
        reporter.print(f"run folder: {run_dir}")
    accelerator.end_training()


def _teacher(ctx: RunContext, data: Splits) -> dict:
    """The teacher stage, then the calibration stage of a teacher it fine-tuned."""
    teacher = _stage(ctx, "teacher", lambda: teacher_stage(ctx, data))
    if not teacher.get("given"):
        teacher["calibration"] = _stage(ctx, "teacher-calibration",
                                        lambda: calibration_stage(ctx, "teacher", teacher_folder(ctx), data.val))
    return teacher


def _stage(ctx: RunContext, name: str, run: Callable[[], dict]) -> dict:
    """A stage's summary: the one a resumed run recorded when it finished the stage, or run() now."""
    done = ctx.finished(name)
    if done is not None:
        ctx.reporter.print(f"{name}: finished before the run stopped; not run again")
        return done
    return ctx.record(name, run())


def _finish(ctx: RunContext, summary: dict) -> None:
    """final_metrics.json, and the resumable state gone: the run is finished."""
    if ctx.is_main:
        write_json(ctx.run_dir / "final_metrics.json", summary)
        shutil.rmtree(ctx.run_dir / "state", ignore_errors=True)


def _report_data(ctx: RunContext, data: Splits, recipe: str) -> None:
    accelerator, reporter = ctx.accelerator, ctx.reporter
    train, val = data
    reporter.print(f"data: {len(train):,} train / {len(val):,} val rows, {len(train.label_names)} labels, "
                   f"{accelerator.num_processes} process(es) on {accelerator.device}, training in "
                   f"{precision_name(accelerator.mixed_precision, accelerator.device)}")
    for split, rows in (("train", train), ("val", val)):
        if rows.dropped:
            reporter.print(f"data: left out {rows.dropped:,} rows with an empty text from the {split} file")
        for name in rows.labels_without_positives():
            reporter.print(f"warning: label '{name}' has no positive example in {split}; "
                           f"its AUC is undefined (null)")
        for name in rows.labels_on_every_row():
            reporter.print(f"warning: label '{name}' is positive on every row of {split}; "
                           f"nothing can be learnt about it and its AUC is undefined (null)")
    reporter.print(f"student recipe: {recipe}")


def _tracking(cfg: Config, accelerator: Accelerator, run_dir: Path):
    """accelerator.log of the tracker cfg.log_with, its run named for the run folder (TensorBoard
    writes its event file into that folder); None for none."""
    if cfg.log_with == "none":
        return None
    try:
        accelerator.init_trackers(run_dir.name)
    except ImportError as err:
        raise KDError(f"log_with={cfg.log_with} needs its package: {err}") from None
    return accelerator.log


COMMANDS = {"distill": distill, "teacher": prepare_teacher, "pretrain": pretrain}

if __name__ == "__main__":  # a run in a process of its own (kd.run.isolated): COMMAND CONFIG_FILE [--resume]
    try:
        COMMANDS[sys.argv[1]](load_config([sys.argv[2]]), resume="--resume" in sys.argv[3:])
    except (KDError, OSError) as err:
        print(f"kd: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("kd: interrupted", file=sys.stderr)
        sys.exit(130)
