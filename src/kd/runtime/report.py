"""What a run shows and logs: rich progress bars with ETA, one line per epoch, the final table.

Only the main process prints or writes; on the others every method is a no-op.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from kd.config.sources import flatten


class RateColumn(ProgressColumn):
    """Steps per second (batches of training, evaluation and soft targets)."""

    def render(self, task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.1f}/s", style="progress.data.speed")


def terminal_behind_accelerate() -> bool:
    """`accelerate launch` pipes its child's stderr through itself to the terminal, so the child
    sees no terminal there, while its stdout is still the terminal: progress bars are drawn then."""
    return ("ACCELERATE_MIXED_PRECISION" in os.environ and not sys.stderr.isatty()
            and sys.stdout.isatty())


class Reporter:
    """Progress bars (rate and ETA) on a terminal, nothing of them in a log or pipe; epoch lines
    and the final table everywhere."""

    def __init__(self, is_main: bool, metrics_file: Path | None = None,
                 track: Callable[[dict, int | None], None] | None = None):
        self.is_main = is_main
        self.metrics_file = metrics_file
        self.track = track  # an experiment tracker's log(values, step), e.g. Accelerator.log
        self.console = Console(stderr=True, force_terminal=True if terminal_behind_accelerate() else None)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console, transient=True, disable=not is_main)

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        """A progress bar for one stage; yields the function that advances it by one."""
        task_id = self.progress.add_task(description, total=total)
        try:
            yield lambda: self.progress.advance(task_id)
        finally:
            self.progress.remove_task(task_id)

    def print(self, message: str) -> None:
        if self.is_main:
            self.console.print(message, highlight=False, soft_wrap=True)

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record to the run's metrics.jsonl, and give its numbers to the tracker
        as `<stage>/train_loss`, `<stage>/val/macro_auc`, ... at step = epoch."""
        if self.is_main and self.metrics_file is not None:
            with self.metrics_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.track is not None:
            self.track(scalars({k: v for k, v in record.items() if k not in ("stage", "epoch")},
                               f"{record['stage']}/"), record["epoch"])

    def final_table(self, summary: dict) -> None:
        """Teacher vs student: quality on val, size and training time (to the tracker as `final/...`)."""
        if self.track is not None:
            self.track(scalars(summary, "final/"), None)
        if not self.is_main:
            return
        table = Table(title="teacher vs student (validation set)")
        table.add_column("metric")
        for role in summary:
            table.add_column(role, justify="right")
        table.add_column("student / teacher", justify="right")
        single = "accuracy" in summary[next(iter(summary))]["val"]
        rows = [("macro AUC", "macro_auc", "{:.4f}"), ("macro F1 (tuned, out of fold)", "macro_f1_tuned", "{:.4f}"),
                ("macro F1 (argmax)" if single else "macro F1 @0.5", "macro_f1", "{:.4f}"),
                ("accuracy (tuned, out of fold)", "accuracy_tuned", "{:.4f}"), ("accuracy", "accuracy", "{:.4f}"),
                ("micro F1 @0.5", "micro_f1", "{:.4f}"),
                ("cross-entropy", "cross_entropy", "{:.4f}"), ("BCE", "bce", "{:.4f}"),
                ("exact match @0.5", "exact_match", "{:.4f}"),
                ("parameters", "parameters", "{:,}"), ("size on disk (MB)", "size_mb", "{:.1f}"),
                ("train time (s)", "train_time_s", "{:.1f}")]
        for label, key, fmt in rows:
            values = [summary[role]["val"].get(key, summary[role].get(key)) for role in summary]
            if all(v is None for v in values) or (single and key == "micro_f1"):
                continue  # a metric of the other problem type
            cells = ["n/a" if v is None else fmt.format(v) for v in values]
            ratio = (f"{values[-1] / values[0]:.3f}" if None not in values[:1] + values[-1:]
                     and values[0] else "")
            table.add_row(label, *cells, ratio)
        self.console.print(table)


def scalars(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested dict as {"a/b": value}; per-label details and text left out."""
    return {prefix + key.replace(".", "/"): value for key, value in flatten(tree).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "per_label" not in key.split(".")}


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2), encoding="utf-8")
