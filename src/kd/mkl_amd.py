"""MKL's fast kernels on AMD CPUs.

torch's x86 builds compute fp32 matrix products with Intel's MKL, which picks its kernels by CPU
vendor before instruction set: on an AMD CPU it runs a generic code path, not the AVX2 or
AVX-512 kernels the CPU has. MKL asks one function, `mkl_serv_intel_cpu_true`, whether the CPU
is Intel's. kd builds a one-line C library (`_mkl_intel_cpu.c`) whose function of that name
answers yes, and loads it into the process's global symbol scope before torch loads MKL: the
dynamic linker then binds MKL's question to it. MKL still chooses among its kernels by the
instruction sets the CPU reports. What it gives in training: its row of the ladder in
docs/benchmarks/training_avx2/training.md (an AMD EPYC with AVX2). Those kernels sum in another
order: the same run with and without them differs by float rounding.

`import kd` does it first thing, on Linux on x86-64 AMD CPUs with AVX2, unless `KD_MKL_AMD_KERNELS=0`.
It cannot once torch is loaded (the linker has bound MKL's symbols by then): import kd first.
Only MKL calls that function; on builds without MKL the library is loaded and unused.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import platform
import sys
from pathlib import Path

LIBRARY = "_mkl_intel_cpu"
SWITCH = "KD_MKL_AMD_KERNELS"
ON = "on (MKL's Intel kernels on this AMD CPU)"
TOO_LATE = "off (torch was imported before kd)"
status = "not tried"  # what use_mkl_kernels_on_amd did, for logs and reports


def first_cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo's text (vendor_id, model name, flags, ...)."""
    first = cpuinfo.split("\n\n", 1)[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def _amd_with_avx2(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's first processor is an AMD one with AVX2 and FMA."""
    fields = first_cpu_fields(cpuinfo)
    flags = fields.get("flags", "").split()
    return fields.get("vendor_id") == "AuthenticAMD" and "avx2" in flags and "fma" in flags


def library_path() -> Path | None:
    """The built `_mkl_intel_cpu` library beside this file, if the install compiled it."""
    here = Path(__file__).parent
    return next((here / f"{LIBRARY}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
                 if (here / f"{LIBRARY}{suffix}").exists()), None)


def use_mkl_kernels_on_amd() -> str:
    """Load the library where it helps and still can; returns (and keeps in `status`) what it did."""
    global status
    cpuinfo = Path("/proc/cpuinfo")
    if os.environ.get(SWITCH) == "0":
        status = f"off ({SWITCH}=0)"
    elif platform.machine() != "x86_64" or not cpuinfo.exists() or not _amd_with_avx2(cpuinfo.read_text()):
        status = "not needed (not an AMD x86-64 CPU with AVX2)"
    elif "torch" in sys.modules:
        status = TOO_LATE
    elif (path := library_path()) is None:
        status = f"off ({LIBRARY} was not built: no C compiler at install)"
    else:
        ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
        status = ON
    return status
