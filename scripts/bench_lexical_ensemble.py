"""Is the tiny student missing what TF-IDF + LR sees? Their rank-averaged ensemble on dev.

For each dataset, bench_quality's tiny_pretrained_kd runs (every seed, from --cache-dir) and its
tfidf_lr model (refitted, deterministic) score the dev split; the rank average of their scores,
label by label, is a two-model ensemble. If it beats both by more than the seed spread, the
two models are wrong on different texts: a lexical part in the student would have something to
add. Its macro AUC is set against the teacher target of issue 24 (teacher - 0.01). The ensemble
is not a candidate student: it has TF-IDF's vocabulary and coefficients on top of 4.4M parameters.

Run `python scripts/bench_quality.py --students l2 tiny_pretrained tiny_lexical` first (it trains
the runs read here; tiny_pretrained is not a default student):

    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_lexical_ensemble.py

Writes docs/benchmarks/lexical_ensemble.{md,json}.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_quality import (  # scripts/bench_quality.py
    DATASETS,
    dataset_config,
    fit_tfidf_lr,
)
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from transformers.utils import logging as hf_logging

from kd.data.splits import load_splits
from kd.deployment.classifier import Classifier

STUDENT = "tiny_pretrained_kd"


def macro_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean ROC AUC over the labels that have both classes in `labels` (as kd's metrics)."""
    return float(np.mean([roc_auc_score(labels[:, j], scores[:, j])
                          for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]))


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Label by label, the mean of each model's ranks of the texts: a scale-free ensemble."""
    return np.mean([np.apply_along_axis(rankdata, 0, s) for s in scores], axis=0)


def student_folders(name: str, quality: dict, cache_dir: Path) -> list[Path]:
    """The seeds of bench_quality's tiny_pretrained_kd at its picked alpha and T (kd sweep's run names)."""
    if STUDENT not in quality.get(name, {}):
        sys.exit(f"quality.json has no {STUDENT} row for {name}: run scripts/bench_quality.py with "
                 "--students ... tiny_pretrained first")
    row = quality[name][STUDENT]
    runs = cache_dir / "sweeps" / f"{name}-tiny_pretrained-kd" / "runs"
    folders = [runs / f"distilla{row['alpha']:g}-t{row['temperature']:g}-s{seed}" / "student"
               for seed in range(row["seeds"])]
    missing = [str(f) for f in folders if not (f / "config.json").is_file()]
    if missing:
        sys.exit(f"no finished bench_quality run at {', '.join(missing)}: run scripts/bench_quality.py "
                 f"with --cache-dir {cache_dir} first")
    return folders


def bench_dataset(name: str, quality: dict, args) -> dict:
    train, dev = load_splits(dataset_config(name, args.data_dir, args.cache_dir).data)
    tfidf = fit_tfidf_lr(train)[0](dev.texts)
    students, ensembles = [], []
    for folder in student_folders(name, quality, args.cache_dir):
        student = Classifier.from_pretrained(folder, backend="torch").logits(dev.texts)
        students.append(macro_auc(student, dev.labels))
        ensembles.append(macro_auc(rank_average(student, tfidf), dev.labels))
    teacher = quality[name]["teacher"]["dev"]["macro_auc"]
    return {"tfidf_lr": macro_auc(tfidf, dev.labels), "student": students, "ensemble": ensembles,
            "teacher": teacher, "teacher_target": teacher - 0.01}


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def markdown(results: dict, command: str) -> str:
    lines = ["# The tiny student and TF-IDF + LR together", "", f"Command: `{command}`", "",
             f"Dev macro AUC; {STUDENT} over bench_quality's seeds (mean ± sample std), each seed's "
             "ensemble the rank average of its scores and TF-IDF + LR's, label by label. The teacher "
             "target is issue 24's (the teacher's dev macro AUC - 0.01).", "",
             "| dataset | tfidf_lr | " + STUDENT + " | ensemble | teacher | teacher target |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['tfidf_lr']:.4f} | {mean_std(r['student'])} | {mean_std(r['ensemble'])} | "
                     f"{r['teacher']:.4f} | {r['teacher_target']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--cache-dir", type=Path, default=Path("checkpoints/bench-cache"),
                   help="bench_quality's cache, with its finished runs")
    p.add_argument("--datasets", nargs="+", default=["hateval", "goemotions"], choices=list(DATASETS))
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = p.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not args.data_dir.is_dir():
        sys.exit(f"data dir not found: {args.data_dir} (--data-dir)")
    quality = json.loads((args.out / "quality.json").read_text())
    results = {name: bench_dataset(name, quality, args) for name in args.datasets}
    command = "python " + " ".join(sys.argv)
    (args.out / "lexical_ensemble.json").write_text(json.dumps({"command": command, **results}, indent=2) + "\n")
    (args.out / "lexical_ensemble.md").write_text(markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
