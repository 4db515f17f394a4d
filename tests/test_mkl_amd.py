"""`import kd` lets MKL run its AVX2 / AVX-512 kernels on AMD CPUs (kd/mkl_amd.py), and only
where it can: an AMD CPU, the library built, torch not loaded yet, not switched off."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kd.mkl_amd import ON, SWITCH, TOO_LATE, _amd_with_avx2, library_path

CPUINFO = "processor\t: {n}\nvendor_id\t: {vendor}\nmodel name\t: X\nflags\t\t: fpu sse2 {flags}\n"

# MKL's code branch (mkl_cbwr.h: 10 is AVX2, 12 AVX-512; below 9 generic code paths) and an fp32
# product against float64's.
BRANCH = """
import {first}, ctypes, os
import torch, kd.mkl_amd
mkl = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
a, b = torch.randn(300, 200, dtype=torch.float64), torch.randn(200, 100, dtype=torch.float64)
error = ((a.float() @ b.float()).double() - a @ b).abs().max().item()
print(kd.mkl_amd.status, mkl.mkl_serv_cbwr_get_auto_branch(), error, sep="|")
"""


def test_only_amd_cpus_with_avx2_and_fma_count_and_only_the_first_processor_is_read():
    amd = CPUINFO.format(n=0, vendor="AuthenticAMD", flags="avx avx2 fma")
    assert _amd_with_avx2(amd + "\n" + CPUINFO.format(n=1, vendor="GenuineIntel", flags=""))
    assert not _amd_with_avx2(CPUINFO.format(n=0, vendor="GenuineIntel", flags="avx avx2 fma"))
    assert not _amd_with_avx2(CPUINFO.format(n=0, vendor="AuthenticAMD", flags="avx"))
    assert not _amd_with_avx2("")


def _mkl_branch(first: str, **env: str) -> tuple[str, int, float]:
    out = subprocess.run([sys.executable, "-c", BRANCH.format(first=first)], check=True, text=True,
                         capture_output=True, env={**os.environ, **env}).stdout.strip().splitlines()[-1]
    status, branch, error = out.split("|")
    return status, int(branch), float(error)


def _mkl_on_amd_here() -> bool:
    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    cpuinfo = Path("/proc/cpuinfo")
    return (cpuinfo.exists() and _amd_with_avx2(cpuinfo.read_text()) and library_path() is not None
            and lib.exists() and hasattr(ctypes.CDLL(str(lib)), "mkl_serv_cbwr_get_auto_branch"))


@pytest.mark.skipif(not _mkl_on_amd_here(), reason="needs an AMD CPU, torch's MKL and the built library")
def test_import_kd_before_torch_switches_mkl_to_its_avx2_kernels_on_amd():
    on, fast, fast_error = _mkl_branch("kd")
    late, generic, generic_error = _mkl_branch("torch")
    off, switched_off, _ = _mkl_branch("kd", **{SWITCH: "0"})
    assert on == ON and fast >= 10  # AVX2 or better
    assert late == TOO_LATE and generic < fast
    assert off == f"off ({SWITCH}=0)" and switched_off == generic
    assert fast_error < 1e-3 and generic_error < 1e-3  # fp32 rounding of sums of 200 products
