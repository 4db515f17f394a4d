"""The teacher stage (fine-tuned, or given) and its soft targets (cached, or read from a file)."""
