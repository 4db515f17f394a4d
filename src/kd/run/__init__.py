"""A run: the checks before it (kd.run.preflight) and its stages in order (kd.run.pipeline)."""
