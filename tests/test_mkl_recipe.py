"""The opt-in recipe in recipes/mkl_amd: preloaded, its one-line library lets MKL run its AVX2 /
AVX-512 kernels on an AMD CPU; kd itself leaves MKL alone."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from machine import first_cpu_fields, mkl_recipe_library  # noqa: E402

# MKL's code branch (mkl_cbwr.h: 10 is AVX2, 12 AVX-512; below 9 generic code paths) and an fp32
# product against float64's.
BRANCH = """
import ctypes, os
import kd, torch
mkl = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
a, b = torch.randn(300, 200, dtype=torch.float64), torch.randn(200, 100, dtype=torch.float64)
error = ((a.float() @ b.float()).double() - a @ b).abs().max().item()
print(mkl.mkl_serv_cbwr_get_auto_branch(), error, sep="|")
"""


def _mkl_branch(**env: str) -> tuple[int, float]:
    clean = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", BRANCH], check=True, text=True, capture_output=True,
                         env={**clean, **env}).stdout.strip().splitlines()[-1]
    branch, error = out.split("|")
    return int(branch), float(error)


def _torch_has_mkl() -> bool:
    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    return lib.exists() and hasattr(ctypes.CDLL(str(lib)), "mkl_serv_cbwr_get_auto_branch")


def test_the_first_processor_of_cpuinfo_is_read():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: avx2 fma\n\nprocessor\t: 1\nvendor_id\t: Other\n"
    assert first_cpu_fields(text) == {"processor": "0", "vendor_id": "AuthenticAMD", "flags": "avx2 fma"}


def test_the_preloaded_recipe_switches_mkl_to_its_avx2_kernels_on_amd(tmp_path):
    library = mkl_recipe_library(tmp_path)
    if library is None or not _torch_has_mkl():
        pytest.skip("needs an x86-64 AMD CPU with AVX2, a C compiler and torch's MKL")
    generic, generic_error = _mkl_branch()  # what kd does by itself
    fast, fast_error = _mkl_branch(LD_PRELOAD=str(library))
    assert fast >= 10 and generic < fast  # AVX2 or better only with the recipe
    assert fast_error < 1e-3 and generic_error < 1e-3  # fp32 rounding of sums of 200 products
