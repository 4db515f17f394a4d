"""What a kd model folder holds besides weights and tokenizer, read and written without torch:
the label names and problem type (config.json) and the per-label thresholds (thresholds.json).
kd.models writes folders, kd.deployment.classifier runs them; both read these through here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kd.errors import KDError

THRESHOLDS_FILE = "thresholds.json"
SINGLE_LABEL = "single_label_classification"  # config.json's problem_type of one-class-per-text models


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KDError(f"cannot read {path}: {err}") from None


def read_labels(folder: Path) -> list[str]:
    """Label names in output order, from the folder's config.json."""
    path = folder / "config.json"
    config = read_json(path) if path.is_file() else {}
    if "id2label" not in config:
        raise KDError(f"not a kd model folder (no config.json with id2label): {folder}")
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def single_label_folder(folder: Path) -> bool:
    """Whether the model in `folder` is single-label (softmax over classes)."""
    return read_json(folder / "config.json").get("problem_type") == SINGLE_LABEL


def read_thresholds(folder: Path, labels: list[str]) -> np.ndarray:
    """Per-label decision thresholds from thresholds.json (0.5 where none is saved)."""
    path = folder / THRESHOLDS_FILE
    saved = read_json(path) if path.is_file() else {}
    return np.array([saved.get(name, 0.5) for name in labels], dtype=np.float32)


def write_thresholds(folder: Path, labels: list[str], thresholds: np.ndarray | None) -> None:
    """thresholds.json; none for a single-label model, which predicts its most probable class."""
    if thresholds is not None:
        (folder / THRESHOLDS_FILE).write_text(json.dumps(dict(zip(labels, map(float, thresholds))), indent=2),
                                              encoding="utf-8")
