"""Runs in a child process of their own, where this process cannot hold them.

Accelerate keeps one mixed-precision setting per process (its AcceleratorState, set by the first
Accelerator and never changed after, short of its private reset). So in a notebook, a script or
`kd sweep --jobs 1`, a run in bf16 after one in fp32 cannot start in the same process. kd.run.pipeline
hands such a run here: it runs as `python -m kd.run.pipeline COMMAND CONFIG_FILE` in a child process,
its output passed through line by line, and ends exactly as it would have in a fresh process. The
same holds for work that must leave this process's Accelerate state alone (soft targets for a
Trainer that makes its own Accelerator: kd.integrations).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kd.config.settings import Config, save_config
from kd.errors import KDError
from kd.run.preflight import run_name
from kd.runtime.hardware import resolve_mixed_precision, training_device


def precision_taken(cfg: Config) -> str | None:
    """The mixed precision this process's Accelerate state already holds, when it is not the one
    `cfg` trains in; None when the run can start here."""
    from accelerate.state import AcceleratorState, is_initialized

    if not is_initialized():
        return None
    taken = AcceleratorState().mixed_precision
    return taken if taken != resolve_mixed_precision(cfg.mixed_precision, training_device()) else None


def run_in_child(command: str, cfg: Config, resume: bool = False) -> Path:
    """Run kd.run.pipeline's `command` (distill, teacher, pretrain) on `cfg` in a child process;
    returns its run folder. Its output goes to this process's stderr as it comes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise KDError("this process already trains in another mixed precision, and a run under accelerate launch "
                      "cannot start a process of its own: launch each precision separately")
    cfg.run_name = run_name(cfg)  # named here, so that the folder is known
    with tempfile.TemporaryDirectory(prefix="kd-run-") as scratch:
        config_file = Path(scratch) / "config.yaml"
        save_config(cfg, config_file)
        args = [sys.executable, "-m", "kd.run.pipeline", command, str(config_file), *(["--resume"] if resume else [])]
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                              errors="replace") as child:
            try:
                for line in child.stdout:
                    sys.stderr.write(line)
            except KeyboardInterrupt:
                child.wait()  # it got the Ctrl-C too: its state is saved
                raise
    if child.returncode == 130:
        raise KeyboardInterrupt
    if child.returncode != 0:
        raise KDError(f"the {command} run in a process of its own failed (exit code {child.returncode}); "
                      "its output is above")
    return Path(cfg.output_dir) / cfg.run_name
