"""The machine a benchmark ran on, for its report, how fast a model predicts on it, and the opt-in
MKL recipe for AMD CPUs (recipes/mkl_amd/) built for the benchmarks that time it. Imported by
scripts/bench_*.py; not part of kd."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from kd.runtime.hardware import native_bf16

MKL_RECIPE = Path(__file__).resolve().parents[1] / "recipes/mkl_amd/mkl_intel_cpu.c"


def ms_per_text(predict, texts: list[str]) -> float:
    """CPU milliseconds per text of `predict` over `texts`, after a warm-up batch of 64."""
    predict(texts[:64])
    started = time.perf_counter()
    predict(texts)
    return 1e3 * (time.perf_counter() - started) / len(texts)


def first_cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo's text (vendor_id, model name, flags, ...)."""
    first = cpuinfo.split("\n\n", 1)[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def _cpu_fields() -> dict[str, str]:
    info = Path("/proc/cpuinfo")
    return first_cpu_fields(info.read_text()) if info.exists() else {}


def cpu_name() -> str:
    """The CPU model and the vector instructions torch uses on it, for benchmark reports:
    VMs of one model name can differ in those, and with them in speed."""
    model = _cpu_fields().get("model name") or platform.processor() or platform.machine()
    bf16 = ", native bf16" if native_bf16(torch.device("cpu")) else ""
    mkl = ", MKL's Intel kernels preloaded" if "mkl_intel_cpu" in os.environ.get("LD_PRELOAD", "") else ""
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}{bf16}{mkl})"


def mkl_recipe_library(folder: Path) -> Path | None:
    """recipes/mkl_amd's library built into `folder`, where it can matter: an x86-64 AMD CPU with
    AVX2 and a C compiler. None elsewhere."""
    fields = _cpu_fields()
    amd = fields.get("vendor_id") == "AuthenticAMD" and {"avx2", "fma"} <= set(fields.get("flags", "").split())
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not (amd and platform.machine() == "x86_64" and compiler):
        return None
    library = folder / "libmkl_intel_cpu.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(MKL_RECIPE)], check=True)
    return library
