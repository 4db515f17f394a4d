"""kd's distillation loss and soft targets inside training code users already have:
`kd.integrations.hf` (transformers' Trainer) and `kd.integrations.lightning` (PyTorch Lightning,
an optional dependency)."""
