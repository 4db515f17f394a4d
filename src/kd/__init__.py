"""kd: knowledge distillation for multi-label text classification."""

__version__ = "0.1.0"
