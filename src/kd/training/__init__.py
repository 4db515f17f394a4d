"""Training: the one loop for teacher, student and pre-training (kd.training.loop), its losses,
optimizer, speedups, layer matching and resumable state."""
