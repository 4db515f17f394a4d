"""kd's one compiled file, a one-line C library for MKL on AMD CPUs (src/kd/mkl_amd.py).
Optional: without a C compiler, kd installs without it and MKL keeps its generic kernels there."""

import sys

from setuptools import Extension, setup

setup(ext_modules=[Extension("kd._mkl_intel_cpu", ["src/kd/_mkl_intel_cpu.c"], optional=True)]
      if sys.platform.startswith("linux") else [])
