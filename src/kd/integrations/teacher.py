"""The teacher's soft targets for training code users already have, made by kd's own stages:
data -> teacher -> soft targets (kd.run.pipeline's prepare_teacher), fine-tuned once per
teacher and data (kd.run.teachers) and cached, in a process of their own, so that this process's
Accelerate state stays free for the user's Trainer or Lightning loop (Accelerate holds one mixed
precision per process).

    train, logits = soft_targets(load_config(["configs/sample.yaml"]))
    rows = with_teacher_logits(encoded_train_rows, logits)   # kd.integrations.hf
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kd.config.settings import Config
from kd.data.splits import load_splits
from kd.data.texts import LabeledTexts
from kd.errors import KDError
from kd.run.teachers import shared_teacher_run
from kd.teacher.logits_cache import read_cached_logits


def soft_targets(cfg: Config) -> tuple[LabeledTexts, np.ndarray]:
    """(the train rows of `cfg`'s data, the teacher's logits for them, row for row): the teacher
    fine-tuned as `kd distill` would (or `teacher.path` as given), its logits labelled and cached;
    a later call with the same data and teacher reads them back."""
    if cfg.teacher.soft_targets:
        raise KDError("teacher.soft_targets already is a file of the teacher's scores: read it yourself, "
                      "or leave it out for kd to label the train rows with a teacher model")
    run_dir = shared_teacher_run(cfg, own_process=True)
    path = json.loads((run_dir / "final_metrics.json").read_text(encoding="utf-8")).get("soft_targets_file")
    logits = read_cached_logits(Path(path), None) if path and Path(path).is_file() else None
    if logits is None:
        raise KDError(f"the soft targets of the teacher in {run_dir} are gone from the cache; remove that "
                      "folder to label them again")
    train, _ = load_splits(cfg.data, Path(cfg.cache_dir) / "data")
    if len(logits) != len(train):
        raise KDError(f"{path} holds {len(logits)} rows of logits, the train split {len(train)}")
    return train, logits.numpy()
