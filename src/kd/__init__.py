"""kd: knowledge distillation for text classification."""

import os

# bf16 matrix products on a CPU run oneDNN kernels compiled for each shape, of which oneDNN keeps
# 1,024 by default. Batches padded to their longest row meet up to max_length sequence lengths,
# about 21 kernels each in a BERT training step: beyond the default, every one is compiled again
# at every use. It reads this once, at its first use: set on import, unless the user did.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Classifier":  # imported on first use: `import kd` stays light
        from kd.classifier import Classifier
        return Classifier
    raise AttributeError(f"module 'kd' has no attribute {name!r}")
