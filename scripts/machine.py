"""The machine a benchmark ran on, for its report (scripts/bench_*.py import this; not part of kd)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from kd import mkl_amd
from kd.runtime import native_bf16


def cpu_name() -> str:
    """The CPU model and the vector instructions torch uses on it, for benchmark reports:
    VMs of one model name can differ in those, and with them in speed."""
    info = Path("/proc/cpuinfo")
    fields = mkl_amd.first_cpu_fields(info.read_text()) if info.exists() else {}
    model = fields.get("model name") or platform.processor() or platform.machine()
    bf16 = ", native bf16" if native_bf16(torch.device("cpu")) else ""
    mkl = ", MKL's Intel kernels" if mkl_amd.status == mkl_amd.ON else ""
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}{bf16}{mkl})"
