"""How a training process uses its hardware: its Accelerator, precision and CPU threads.

`mixed_precision: auto` (the default) trains in bf16 autocast where the hardware computes bf16
natively (a CUDA GPU from Ampere on; a CPU with AVX512-BF16 or AMX), else in fp32: where bf16
is emulated it is slower than fp32.
"""

from __future__ import annotations

import os
import sys

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration

from kd.config.settings import Config
from kd.errors import KDError
from kd.runtime.cores import usable_cores


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matrix products in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def training_device() -> torch.device:
    """The device Accelerate trains on in this process: the accelerator if any, else the CPU."""
    return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """`auto` -> `bf16` where `device` has native bf16, else `no`; other settings unchanged."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device) else "no"


def precision_name(setting: str, device: torch.device) -> str:
    """What `setting` trains in on `device`, for logs and reports: fp32, bf16 autocast, ..."""
    resolved = resolve_mixed_precision(setting, device)
    return "fp32" if resolved == "no" else f"{resolved} autocast"


def use_all_cores_under_accelerate_launch() -> None:
    """`accelerate launch` without a config sets OMP_NUM_THREADS=1 (its default
    --num_cpu_threads_per_process), which leaves a single CPU process one core."""
    cores = usable_cores()
    launched = "ACCELERATE_MIXED_PRECISION" in os.environ
    if launched and os.environ.get("OMP_NUM_THREADS") == "1" and torch.get_num_threads() == 1 and cores > 1:
        torch.set_num_threads(cores)
        print(f"kd: accelerate launch left torch 1 thread; using all {cores} cores of this single "
              f"CPU process", file=sys.stderr)


def make_accelerator(cfg: Config) -> Accelerator:
    """Batch sizes in the config are global: Accelerate splits each batch across processes.

    Several processes on a machine without an accelerator (`accelerate launch --multi_gpu
    --num_processes N` on CPU) form a gloo process group only when Accelerate is told `cpu`.
    """
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not several and not torch.accelerator.is_available():
        use_all_cores_under_accelerate_launch()
    accelerator = Accelerator(cpu=several and not torch.accelerator.is_available(),
                              log_with=None if cfg.log_with == "none" else cfg.log_with,
                              project_config=ProjectConfiguration(cfg.output_dir, logging_dir=cfg.output_dir),
                              mixed_precision=resolve_mixed_precision(cfg.mixed_precision, training_device()),
                              dataloader_config=DataLoaderConfiguration(split_batches=True,
                                                                        use_seedable_sampler=True,
                                                                        data_seed=cfg.seed))
    for key, size in [("teacher.train.batch_size", cfg.teacher.train.batch_size),
                      ("student.train.batch_size", cfg.student.train.batch_size),
                      ("teacher.train.eval_batch_size", cfg.teacher.train.eval_batch_size),
                      ("student.train.eval_batch_size", cfg.student.train.eval_batch_size)]:
        if size % accelerator.num_processes:
            raise KDError(f"{key}={size} is the global batch and must divide by the "
                          f"{accelerator.num_processes} processes")
    return accelerator
