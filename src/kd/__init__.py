"""kd: knowledge distillation for multi-label text classification."""

import os

from kd.mkl_amd import use_mkl_kernels_on_amd

# bf16 matrix products on a CPU run oneDNN kernels compiled for each shape, of which oneDNN keeps
# 1,024 by default. Batches padded to their longest row meet up to max_length sequence lengths,
# about 21 kernels each in a BERT training step: beyond the default, every one is compiled again
# at every use. It reads this once, at its first use: set on import, unless the user did.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

# Before anything loads torch, and with it MKL: see kd/mkl_amd.py.
use_mkl_kernels_on_amd()

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Classifier":  # imported on first use: `import kd` stays light
        from kd.classifier import Classifier
        return Classifier
    raise AttributeError(f"module 'kd' has no attribute {name!r}")
