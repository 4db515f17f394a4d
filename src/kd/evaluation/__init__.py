"""Evaluation: metrics and thresholds, batched prediction, temperature calibration."""
