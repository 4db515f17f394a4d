"""What a kd model folder holds besides weights and tokenizer, read and written without torch:
the label names and problem type (config.json) and its decision rule, tuned on val: per-label
thresholds (thresholds.json, multi-label) or per-class logit offsets (class_offsets.json,
single-label: the class predicted is the argmax of logits + offsets). kd.models writes folders,
kd.deployment.classifier runs them; both read these through here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kd.errors import KDError

THRESHOLDS_FILE = "thresholds.json"
OFFSETS_FILE = "class_offsets.json"
SINGLE_LABEL = "single_label_classification"  # config.json's problem_type of one-class-per-text models


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KDError(f"cannot read {path}: {err}") from None


def read_labels(folder: Path) -> list[str]:
    """Label names in output order, from the folder's config.json; a name given twice is refused
    (one of the outputs would have no name, and a probability would go missing)."""
    path = folder / "config.json"
    config = read_json(path) if path.is_file() else {}
    if "id2label" not in config:
        raise KDError(f"not a kd model folder (no config.json with id2label): {folder}")
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise KDError(f"{path} names label(s) {twice} for more than one output; give every output its own name")
    return names


def single_label_folder(folder: Path) -> bool:
    """Whether the model in `folder` is single-label (softmax over classes)."""
    return read_json(folder / "config.json").get("problem_type") == SINGLE_LABEL


def read_decision(folder: Path, labels: list[str], single_label: bool) -> np.ndarray:
    """The folder's decision rule in label order: per-label thresholds (0.5 where none is saved)
    or, single-label, per-class offsets (0 where none is saved: the plain argmax)."""
    path = folder / (OFFSETS_FILE if single_label else THRESHOLDS_FILE)
    saved = read_json(path) if path.is_file() else {}
    return np.array([saved.get(name, 0.0 if single_label else 0.5) for name in labels], dtype=np.float32)


def write_decision(folder: Path, labels: list[str], decision: np.ndarray | None, single_label: bool) -> None:
    """thresholds.json, or class_offsets.json for a single-label model; nothing for None."""
    if decision is not None:
        (folder / (OFFSETS_FILE if single_label else THRESHOLDS_FILE)).write_text(
            json.dumps(dict(zip(labels, map(float, decision))), indent=2), encoding="utf-8")
