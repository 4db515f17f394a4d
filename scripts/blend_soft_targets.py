"""A teacher.soft_targets file: the fine-tuned teacher's train logits blended with out-of-fold
TF-IDF + LR logits (a probe of issue 24: does a student distilled from teacher and lexical model
together beat one distilled from the teacher?).

Reads bench_quality's cache (its shared teacher and that teacher's cached soft targets). The TF-IDF
+ LR logits of each train row come from a model fitted on the other 4/5 of train, so they are no
memory of its label. Prints the blend's dev macro AUC / F1 for a few weights (the teacher on dev
beside TF-IDF + LR fitted on all of train), then writes the file for WEIGHT, kind logits:

    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/blend_soft_targets.py \\
        hateval 0.3 blend.csv
    kd distill --config <a tiny_lexical run's config.yaml> teacher.path=null \\
        teacher.soft_targets=blend.csv teacher.soft_targets_kind=logits
"""

import argparse
import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from bench_quality import (  # scripts/bench_quality.py
    DATASETS,
    dataset_config,
    fit_tfidf_lr,
)
from sklearn.model_selection import KFold

from kd.data.splits import load_splits
from kd.deployment.classifier import Classifier
from kd.evaluation.metrics import tuned_metrics
from kd.integrations.hf import cached_teacher_logits
from kd.models.hub import load_tokenizer
from kd.run.teachers import shared_teacher
from kd.teacher.logits_cache import soft_targets_key


def out_of_fold_logits(train, folds: int = 5) -> np.ndarray:
    logits = np.zeros(train.labels.shape)
    for fitted, held in KFold(folds, shuffle=True, random_state=0).split(train.texts):
        part = SimpleNamespace(texts=[train.texts[i] for i in fitted], labels=train.labels[fitted])
        logits[held] = fit_tfidf_lr(part)[0]([train.texts[i] for i in held])
    return logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("weight", type=float, help="TF-IDF + LR's share of the blended logits")
    p.add_argument("out", type=Path)
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--cache-dir", type=Path, default=Path("checkpoints/bench-cache"))
    args = p.parse_args()
    cfg = dataset_config(args.dataset, args.data_dir, args.cache_dir)
    train, val = load_splits(cfg.data, args.cache_dir / "data")
    folder = shared_teacher(cfg)  # bench_quality's teacher: fine-tuned once, its soft targets cached
    key = soft_targets_key(folder, cfg.data, load_tokenizer(folder))
    teacher = cached_teacher_logits(args.cache_dir / "soft_targets" / f"{key}.safetensors")
    dev_teacher = Classifier.from_pretrained(folder, backend="torch").logits(val.texts)
    dev_tfidf = fit_tfidf_lr(train)[0](val.texts)
    for w in (0.0, 0.2, 0.3, 0.5, 1.0):
        m, _ = tuned_metrics((1 - w) * dev_teacher + w * dev_tfidf, val.labels, val.label_names)
        print(f"{args.dataset} dev, blend weight {w}: macro AUC {m['macro_auc']:.4f}, macro F1 {m['macro_f1_tuned']:.4f}")
    blend = (1 - args.weight) * teacher + args.weight * out_of_fold_logits(train)
    if train.ids is None and train.file_rows != len(train):
        raise SystemExit("the train file has empty texts and no ids: rows cannot be matched")
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow((["id"] if train.ids is not None else []) + train.label_names)
        for i, row in enumerate(blend):
            writer.writerow(([train.ids[i]] if train.ids is not None else []) + [f"{v:.6f}" for v in row])
    print(f"wrote {args.out}: {len(blend):,} rows")


if __name__ == "__main__":
    main()
