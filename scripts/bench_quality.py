"""Quality on real data: does a distilled student keep its teacher's quality?

For GoEmotions (28 labels) and HatEval 2019 (HS, TR, AG), on their dev splits:
  tfidf_lr     word 1-2-gram + char 2-5-gram TF-IDF, one logistic regression per label (scikit-learn)
  teacher      all-MiniLM-L6-v2 fine-tuned on the labels (kd distill's teacher stage)
  l2_labels    the teacher's first and last pretrained layers (hidden 384), trained on the labels only (alpha 0);
               2 epochs, 3 on HatEval (STUDENT_DELTAS); AdamW moves only the embedding rows a batch uses
  l2_kd        the same student distilled from the teacher (alpha, T picked on dev); on HatEval with one
               augmented copy of each train text as a transfer set, 2 epochs (DISTILL_DELTAS)
  tiny_lexical_*  a BERT-Tiny-shaped student (2 layers, hidden 128, at most 4.4M) as kd makes it without
               BERT-Tiny weights (student.init=kd-pretrain, configs/bert-tiny-kd-pretrain.yaml): the
               teacher's embedding tables reduced by PCA, pre-trained by distillation from the pretrained
               MiniLM's hidden states on the unlabelled train texts of every dataset here (never a dev
               text), once per dataset (cached, shared by every seed), then given a lexical part (hashed
               wordpieces and pairs, 32,768 rows; word embeddings cut to the train texts': kd/models/lexical.py);
               labels only and distilled
  tiny_pretrained_*  with --students ... tiny_pretrained: the same without the lexical part
  tiny_*       with --students ... tiny: the same shape from random init, labels only and distilled
  tiny_emb_*   with --students ... tiny_emb: the tiny student with the pretrained teacher's embedding
               tables reduced to its width by PCA (student.init=teacher-embeddings), labels only and distilled
Students run over several seeds (mean and std). alpha and T are picked on dev with seed 0 from a
small grid, by dev macro AUC; thresholds are tuned on dev. With `--test NAME=FILE` every chosen
model is also scored on that file with its dev-tuned thresholds.

Every grid runs through kd sweep: bench_quality writes it as a sweep file under
--cache-dir/sweeps/ (`kd sweep FILE` reruns it) and runs it, so the teacher is fine-tuned once
per dataset and its soft targets cached (kd sweep's shared teacher, under --cache-dir/teachers/),
and finished runs are reused: an interrupted benchmark continues where it stopped.

    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_quality.py

Writes docs/benchmarks/quality.{md,json} and frontier.png (macro AUC against CPU ms per text).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from machine import cpu_name, ms_per_text  # scripts/machine.py
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_union
from transformers.utils import logging as hf_logging

from kd.config.settings import load_config
from kd.config.sources import flatten, parse_override
from kd.data.formats import read_labeled
from kd.data.splits import load_splits
from kd.data.texts import LabeledTexts
from kd.deployment.classifier import Classifier
from kd.evaluation.metrics import compute_metrics, tuned_metrics
from kd.evaluation.predict import evaluate_model
from kd.models.saved import load_classifier
from kd.run.teachers import shared_teacher
from kd.runtime.hardware import precision_name, training_device
from kd.sweep.grid import load_sweep, plan
from kd.sweep.runner import run_sweep

DATASETS = {
    "goemotions": ("configs/goemotions.yaml", {
        "data.train": "goemotions/train.tsv", "data.val": "goemotions/dev.tsv",
        "data.labels_file": "goemotions/emotions.txt"}),
    "hateval": ("configs/hateval.yaml", {
        "data.train": "hateval2019-en/hateval2019_en_train.csv",
        "data.val": "hateval2019-en/hateval2019_en_dev.csv"}),
}
STUDENTS = {  # l2: configs/minilm.yaml's recipe (2 epochs, lr 3e-4, lazy embedding update) with the
    # teacher's first and last layers, the best cut in ablations.md (l2_layers, l2_last_layer)
    "l2": ["student.name=minilm-l6", "student.init=teacher-layers", "student.num_layers=2",
           "student.layers=[0,5]", "student.train.batch_size=32", "student.train.lr=3e-4",
           "student.train.epochs=2", "student.train.lazy_embedding_update=true"],
    "tiny": ["student.name=bert-tiny", "student.init=random", "student.num_layers=null", "student.train.lr=null",
             "student.train.batch_size=64", "student.train.epochs=3"],
}
STUDENTS["tiny_emb"] = [*STUDENTS["tiny"], "student.init=teacher-embeddings"]
STUDENTS["tiny_pretrained"] = ["student.lexical_buckets=0"]
STUDENTS["tiny_lexical"] = []  # all in STUDENT_CONFIGS' file
WINNER = "tiny_lexical"  # the BERT-Tiny-shaped student's targets are checked for this one
STUDENT_CONFIGS = {name: ["configs/bert-tiny-kd-pretrain.yaml"]  # after the dataset's and minilm.yaml
                   for name in ("tiny_lexical", "tiny_pretrained")}
STUDENT_DELTAS = {  # per dataset: on HatEval (9k rows) a 3rd epoch brought the distilled l2 student from
    # 0.0064 to 0.0008 dev AUC under its teacher over 3 seeds (ablations.md, hateval_l2)
    "hateval": {"l2": ["student.train.epochs=3"]},
}
DISTILL_DELTAS = {  # per dataset, for the distilled runs only (grid and seeds): on HatEval one augmented
    # copy of each train text as a transfer set lifted the l2 student from 0.0115 to 0.0063 dev macro F1
    # under its teacher over 3 seeds (quality.md at 224f25c); 2 epochs over the doubled set gave the
    # same mean dev AUC / F1 as 3 (0.8792 / 0.6959 against 0.8792 / 0.6956) in 2/3 of the time
    "hateval": {"l2": ["distill.augment_copies=1", "student.train.epochs=2"]},
}
METRICS = ("macro_auc", "macro_f1_tuned", "bce")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--cache-dir", type=Path, default=Path("checkpoints/bench-cache"),
                   help="fine-tuned teachers, soft targets and finished student runs")
    p.add_argument("--datasets", nargs="+", default=["hateval", "goemotions"], choices=list(DATASETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--students", nargs="+", default=["l2", "tiny_lexical"], choices=list(STUDENTS))
    p.add_argument("--grid", nargs="+", default=["0.5:1", "0.5:2"], metavar="ALPHA:T",
                   help="distillation settings tried with seed 0; the best on dev runs all seeds")
    p.add_argument("--augment-copies", type=int, default=0,
                   help="also distill each student with this many augmented copies of train as a transfer set, "
                        "in an extra row (<student>_kd_aug) at the picked setting")
    p.add_argument("--test", action="append", default=[], metavar="NAME=FILE",
                   help="also score every chosen model on this labelled file (dev still picks)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = p.parse_args()
    args.reused = []  # finished runs found in --cache-dir instead of trained
    args.seen = set()  # run folders this invocation has planned
    args.test = dict(item.split("=", 1) for item in args.test)
    args.grid = [tuple(float(v) for v in point.split(":")) for point in args.grid]
    unknown = set(args.test) - set(DATASETS)
    if unknown:
        p.error(f"--test names must be among {list(DATASETS)}, got {sorted(unknown)}")
    return args


def dataset_overrides(name: str, data_dir: Path, cache_dir: Path) -> list[str]:
    """Dataset `name`'s files under `data_dir`, and the cache every run shares."""
    return [*(f"{key}={data_dir / value}" for key, value in DATASETS[name][1].items()), f"cache_dir={cache_dir}"]


def dataset_config(name: str, data_dir: Path, cache_dir: Path):
    return load_config([DATASETS[name][0], "configs/minilm.yaml"], dataset_overrides(name, data_dir, cache_dir))


def teacher_folder(name: str, args) -> Path:
    """The teacher every sweep of dataset `name` uses: kd sweep's shared teacher, fine-tuned once
    (its soft targets cached) under --cache-dir/teachers/."""
    return shared_teacher(dataset_config(name, args.data_dir, args.cache_dir))


def unlabelled_texts(args) -> Path:
    """The train texts of every dataset, one per line, without their labels (never a dev text):
    what the tiny_lexical and tiny_pretrained students are pre-trained on (pretrain.files; kd adds the
    run's own train texts)."""
    path = args.cache_dir / "unlabelled" / "train-texts.txt"
    if not path.is_file():
        texts = [" ".join(text.split()) for name in DATASETS for text in load_splits(
            dataset_config(name, args.data_dir, args.cache_dir).data)[0].texts]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(texts) + "\n")
    return path


def deltas(table: dict, name: str, student: str) -> list[str]:
    """The overrides that STUDENT_DELTAS or DISTILL_DELTAS give `student` on dataset `name`."""
    return table.get(name, {}).get(student, [])


def run_grid(sweep_name: str, name: str, overrides: list[str], grid: dict, seeds: list[int], args,
             configs: list[str] = ()) -> list:
    """Write a kd sweep file for dataset `name` (`kd sweep FILE` reruns it) and run it through kd
    sweep: the shared teacher, finished runs reused, interrupted ones resumed. `configs` come after
    the dataset's and minilm.yaml. Its runs."""
    settings = {}
    for text in [*dataset_overrides(name, args.data_dir, args.cache_dir), *overrides]:
        settings.update(flatten(parse_override(text)))
    path = args.cache_dir / "sweeps" / f"{sweep_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": sweep_name,
                                    "configs": [DATASETS[name][0], "configs/minilm.yaml", *configs],
                                    "set": settings, "grid": grid, "seeds": seeds, "metric": "macro_auc",
                                    "output_dir": str(args.cache_dir / "sweeps")}, sort_keys=False))
    sweep = load_sweep(path)
    runs = plan(sweep)
    args.reused += [f"{sweep_name}/{r.name}" for r in runs if r.finished() and r.folder not in args.seen]
    args.seen.update(r.folder for r in runs)
    return run_sweep(sweep)


def distilled_runs(name: str, student: str, overrides: list[str], args) -> tuple[list, dict, tuple]:
    """The --grid points with seed 0, then the best by dev macro AUC with every seed: (its runs,
    dev macro AUC by grid point, (alpha, T) picked)."""
    points = {f"a{a:g}-t{t:g}": {"alpha": a, "temperature": t} for a, t in args.grid}
    configs = STUDENT_CONFIGS.get(student, [])
    grid_runs = run_grid(f"{name}-{student}-kd", name, overrides, {"distill": points}, [0], args, configs)
    auc = {label: json.loads((r.folder / "final_metrics.json").read_text())["student"]["val"]["macro_auc"]
           for label, r in zip(points, grid_runs)}
    picked = max(auc, key=auc.get)
    runs = run_grid(f"{name}-{student}-kd", name, overrides, {"distill": {picked: points[picked]}},
                    list(range(args.seeds)), args, configs)
    named = {f"alpha={p['alpha']:g} T={p['temperature']:g}": auc[label] for label, p in points.items()}
    return runs, named, (points[picked]["alpha"], points[picked]["temperature"])


def score_folder(folder: Path, final: dict, dev: LabeledTexts, test: LabeledTexts | None,
                 max_length: int) -> dict:
    """A trained model's dev metrics (from its run: the saved epoch, dev-tuned thresholds), size,
    train time, CPU inference time and, with a test file, its test metrics."""
    model, tokenizer, decision = load_classifier(folder)
    result = {"dev": final["val"], "parameters": sum(p.numel() for p in model.parameters()),
              "train_time_s": final["train_time_s"],
              "ms_per_text": ms_per_text(Classifier.from_pretrained(folder, backend="torch",
                                                                    max_length=max_length).predict_proba,
                                         dev.texts[:1000])}
    if test is not None:
        tokenizer.model_max_length = max_length
        result["test"] = evaluate_model(model, tokenizer, test, Accelerator(cpu=True), 128, decision)[0]
    return result


def fit_tfidf_lr(train: LabeledTexts):
    """Word 1-2-gram + char 2-5-gram TF-IDF and one logistic regression per label: (its logits
    function of a list of texts, its parameters, its train seconds)."""
    started = time.perf_counter()
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, max_features=200_000,
                        sublinear_tf=True))
    x_train = features.fit_transform(train.texts)
    models = [LogisticRegression(C=4.0, max_iter=2000, solver="liblinear").fit(x_train, train.labels[:, j])
              for j in range(train.labels.shape[1])]
    train_time = time.perf_counter() - started

    def logits(texts: list[str]) -> np.ndarray:
        x = features.transform(texts)
        return np.stack([m.decision_function(x) for m in models], axis=1)
    return logits, int(sum(m.coef_.size + 1 for m in models)), train_time


def tfidf_lr(train: LabeledTexts, dev: LabeledTexts, test: LabeledTexts | None) -> dict:
    logits, parameters, train_time = fit_tfidf_lr(train)
    dev_metrics, thresholds = tuned_metrics(logits(dev.texts), dev.labels, dev.label_names)  # as kd distill
    result = {"dev": dev_metrics, "parameters": parameters, "train_time_s": train_time,
              "ms_per_text": ms_per_text(logits, dev.texts[:1000])}
    if test is not None:
        result["test"] = compute_metrics(logits(test.texts), test.labels, thresholds, test.label_names)
    return result


def read_like(data_cfg, path: str) -> LabeledTexts:
    return read_labeled(path, data_cfg.format, data_cfg.text_column, data_cfg.label_columns or None,
                        data_cfg.labels_file, data_cfg.delimiter, data_cfg.id_column, data_cfg.empty_texts,
                        data_cfg.quoting, data_cfg.problem_type)


def student_start(run_dir: Path) -> dict:
    """How kd started the run's student: its recipe line, and what kd-pretrain did where kd
    pre-trained it by distillation."""
    student = json.loads((run_dir / "final_metrics.json").read_text())["student"]
    return {key: student[key] for key in ("pretraining", "recipe") if key in student}


def run_summary(run_dir: Path, dev: LabeledTexts, test, max_length: int, stage: str = "student") -> dict:
    final = json.loads((run_dir / "final_metrics.json").read_text())[stage]
    return score_folder(run_dir / stage, final, dev, test, max_length)


def aggregate(scores: list[dict], **extra) -> dict:
    """Mean over seeds of every metric, their sample std (ddof 1, as kd sweep reports it), and the
    per-seed values."""
    out = {"seeds": len(scores), "parameters": scores[0]["parameters"], **extra,
           "train_time_s": float(np.mean([s["train_time_s"] for s in scores])),
           "ms_per_text": float(np.mean([s["ms_per_text"] for s in scores]))}
    for split in ("dev", "test"):
        if split in scores[0]:
            keys = [k for k, v in scores[0][split].items() if isinstance(v, (int, float))]
            values = {m: [s[split][m] for s in scores] for m in keys}
            out[split] = {m: float(np.mean(v)) for m, v in values.items()}
            out["std" if split == "dev" else "test_std"] = {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                                                            for m, v in values.items()}
            out[f"{split}_per_seed"] = values
    return out


def bench_dataset(name: str, args) -> dict:
    cfg = dataset_config(name, args.data_dir, args.cache_dir)
    train, dev = load_splits(cfg.data)
    test = read_like(cfg.data, args.test[name]) if name in args.test else None
    length = cfg.data.max_length
    print(f"{name}: {len(train):,} train / {len(dev):,} dev rows", flush=True)
    results = {"tfidf_lr": aggregate([tfidf_lr(train, dev, test)])}
    teacher = teacher_folder(name, args)
    print(f"{name}: teacher {teacher}", flush=True)
    results["teacher"] = aggregate([run_summary(teacher.parent, dev, test, length, "teacher")])
    seeds = list(range(args.seeds))
    for student in args.students:
        overrides = [*STUDENTS[student], *deltas(STUDENT_DELTAS, name, student),
                     *([f"pretrain.files=[{unlabelled_texts(args)}]"] if student in STUDENT_CONFIGS else [])]
        labels_only = run_grid(f"{name}-{student}-labels", name, overrides, {"distill.alpha": [0.0]}, seeds, args,
                               STUDENT_CONFIGS.get(student, []))
        start = student_start(labels_only[0].folder)
        results[f"{student}_labels"] = aggregate([run_summary(r.folder, dev, test, length) for r in labels_only],
                                                 **start)
        distilled_overrides = [*overrides, *deltas(DISTILL_DELTAS, name, student)]
        distilled, grid_auc, (alpha, temperature) = distilled_runs(name, student, distilled_overrides, args)
        results[f"{student}_kd"] = aggregate(
            [run_summary(r.folder, dev, test, length) for r in distilled], alpha=alpha, temperature=temperature,
            grid_dev_macro_auc=grid_auc,
            distill_overrides=deltas(DISTILL_DELTAS, name, student), **start)
        print(f"  {student}: picked alpha {alpha:g}, T {temperature:g} (dev macro AUC by grid point: "
              f"{results[f'{student}_kd']['grid_dev_macro_auc']})", flush=True)
        if args.augment_copies:  # the picked setting again, with a transfer set of augmented copies
            augmented = run_grid(f"{name}-{student}-kd-aug{args.augment_copies}", name,
                                 [*distilled_overrides, f"distill.augment_copies={args.augment_copies}"],
                                 {"distill": {"picked": {"alpha": alpha, "temperature": temperature}}}, seeds, args)
            results[f"{student}_kd_aug"] = aggregate([run_summary(r.folder, dev, test, length) for r in augmented],
                                                     alpha=alpha, temperature=temperature,
                                                     augment_copies=args.augment_copies)
    return results


def fmt(row: dict, split: str, metric: str) -> str:
    std = row.get("std" if split == "dev" else "test_std", {}).get(metric)
    value = row[split][metric]
    return f"{value:.4f} ± {std:.4f}" if row["seeds"] > 1 else f"{value:.4f}"


def auc_f1_gap(row: dict, other: dict) -> str:
    """Dev macro AUC / macro F1 of row minus other's, e.g. "+0.0043 / -0.0063"."""
    return " / ".join(f"{row[m] - other[m]:+.4f}" for m in ("macro_auc", "macro_f1_tuned"))


def winner_targets(row: dict, tfidf: dict, teacher: dict) -> str:
    """The BERT-Tiny-shaped student's targets: over TF-IDF + LR by more than its seed std, within
    0.01 AUC / 0.02 F1 of the teacher, at least 10x the teacher's CPU speed."""
    parts = []
    for metric, name, reach in (("macro_auc", "macro AUC", 0.01), ("macro_f1_tuned", "macro F1", 0.02)):
        over, gap, std = row["dev"][metric] - tfidf["dev"][metric], row["dev"][metric] - teacher["dev"][metric], \
            row["std"][metric]
        parts.append(f"{name} {over:+.4f} vs tfidf_lr (seed std {std:.4f}: {'met' if over > std else 'missed'}), "
                     f"{gap:+.4f} vs teacher (target >= -{reach}: {'met' if gap >= -reach else 'missed'})")
    speed = teacher["ms_per_text"] / row["ms_per_text"]
    return "; ".join(parts) + f"; {speed:.1f}x the teacher's speed (target >= 10x: {'met' if speed >= 10 else 'missed'})"


def findings(data: dict) -> list[str]:
    t, tf = data["teacher"]["dev"], data["tfidf_lr"]["dev"]
    lines = []
    if "l2_kd" in data:
        l2 = data["l2_kd"]["dev"]
        lines.append(f"- l2_kd vs teacher: macro AUC {l2['macro_auc'] - t['macro_auc']:+.4f} (target >= -0.003), "
                     f"macro F1 {l2['macro_f1_tuned'] - t['macro_f1_tuned']:+.4f} (target >= -0.01)")
    for student in [s for s in STUDENTS if f"{s}_kd" in data]:
        kd_row, base = data[f"{student}_kd"], data[f"{student}_labels"]
        lines.append(f"- {student}_kd vs tfidf_lr: macro AUC {kd_row['dev']['macro_auc'] - tf['macro_auc']:+.4f}, "
                     f"macro F1 {kd_row['dev']['macro_f1_tuned'] - tf['macro_f1_tuned']:+.4f}"
                     + (" (target: both > 0)" if student == "l2" else ""))
        gain = kd_row["dev"]["macro_auc"] - base["dev"]["macro_auc"]
        spread = max(kd_row["std"]["macro_auc"], base["std"]["macro_auc"]) if kd_row["seeds"] > 1 else float("nan")
        lines.append(f"- {student}: distillation gain in dev macro AUC {gain:+.4f}, seed std {spread:.4f} "
                     f"({'more' if gain > spread else 'not more'} than the spread); picked alpha "
                     f"{kd_row['alpha']:g}, T {kd_row['temperature']:g} by dev macro AUC over "
                     + ", ".join(f"{k}: {v:.4f}" for k, v in kd_row["grid_dev_macro_auc"].items())
                     + "".join(f"; with {o}" for o in kd_row["distill_overrides"]))
        if "pretraining" in kd_row:
            pre = kd_row["pretraining"]
            lines.append(f"- {student}: pre-trained by kd once for this dataset (student.init=kd-pretrain), shared "
                         f"by all its runs and not in their train s: {pre['texts']:,} unlabelled texts, "
                         f"{len(pre['train_loss'])} epochs, {pre['train_time_s']:.0f} s, hidden-state loss by "
                         "epoch " + ", ".join(f"{v:.4f}" for v in pre["train_loss"]))
        if student == WINNER:
            lines.append(f"- {student}_kd: " + winner_targets(kd_row, data["tfidf_lr"], data["teacher"]))
        if f"{student}_kd_aug" in data:
            aug = data[f"{student}_kd_aug"]
            lines.append(f"- {student}: with augment_copies={aug['augment_copies']} as a transfer set, dev macro "
                         f"AUC / F1 move by {auc_f1_gap(aug['dev'], kd_row['dev'])} over {student}_kd; "
                         f"{student}_kd_aug vs teacher: {auc_f1_gap(aug['dev'], t)}")
    if "tiny_lexical_kd" in data and "tiny_pretrained_kd" in data:
        lexical, plain = data["tiny_lexical_kd"], data["tiny_pretrained_kd"]
        lines.append(f"- the lexical part: tiny_lexical_kd vs tiny_pretrained_kd {auc_f1_gap(lexical['dev'], plain['dev'])} "
                     f"(seed std of macro AUC {lexical['std']['macro_auc']:.4f} and {plain['std']['macro_auc']:.4f})")
    return lines


def markdown(results: dict) -> str:
    out = ["# Quality on real data", "", f"Command: `{results['command']}`", "",
           f"Machine: {results['cpu']}, {results['threads']} torch threads; every model trained in "
           f"{results['precision']} (kd's default here, mixed_precision=auto). Means ± sample std over "
           f"{results['seeds']} seeds for the students; train time in seconds on this CPU; inference "
           "ms per text: PyTorch, batches of 64, 1,000 dev texts.", "",
           f"Wall time of this invocation: {results['wall_time_s'] / 60:.1f} min, "
           + (f"reusing {len(results['reused'])} finished runs from the cache: {', '.join(results['reused'])}."
              if results["reused"] else "training every model (no finished run in the cache)."), ""]
    for name, data in results["datasets"].items():
        test = "test" in data["teacher"]
        head = "| model | parameters | dev macro AUC | dev macro F1 (tuned) | dev BCE |"
        head += " test macro AUC | test macro F1 |" if test else ""
        out += [f"## {name}", "", head + " train s | ms/text |",
                "|---|---:|---:|---:|---:|" + ("---:|---:|" if test else "") + "---:|---:|"]
        for model, row in data.items():
            cells = [model, f"{row['parameters']:,}", *(fmt(row, "dev", m) for m in METRICS)]
            if test:
                cells += [fmt(row, "test", "macro_auc"), fmt(row, "test", "macro_f1_at_thresholds")]
            cells += [f"{row['train_time_s']:.0f}", f"{row['ms_per_text']:.3f}"]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", *findings(data), ""]
    return "\n".join(out + frontier_table(results))


def on_frontier(rows: dict) -> set[str]:
    """The models that no other model matches or beats in both dev macro AUC and CPU ms per text."""
    def beats(other: dict, row: dict) -> bool:
        return (other["dev"]["macro_auc"] >= row["dev"]["macro_auc"] and other["ms_per_text"] <= row["ms_per_text"]
                and (other["dev"]["macro_auc"], other["ms_per_text"]) != (row["dev"]["macro_auc"], row["ms_per_text"]))
    return {model for model, row in rows.items() if not any(beats(other, row) for other in rows.values())}


def frontier_table(results: dict) -> list[str]:
    out = ["## Quality against speed", "", "Every model of both datasets by CPU ms per text (frontier.png): on the "
           "frontier when no other model is both as fast and as good (dev macro AUC).", ""]
    for name, rows in results["datasets"].items():
        front, teacher_ms = on_frontier(rows), rows["teacher"]["ms_per_text"]
        out += [f"### {name}", "", "| model | ms/text | speed vs teacher | dev macro AUC | on the frontier |",
                "|---|---:|---:|---:|---|"]
        for model, row in sorted(rows.items(), key=lambda item: item[1]["ms_per_text"]):
            out.append(f"| {model} | {row['ms_per_text']:.3f} | {teacher_ms / row['ms_per_text']:.1f}x | "
                       f"{row['dev']['macro_auc']:.4f} | {'yes' if model in front else ''} |")
        out.append("")
    return out


def plot(results: dict, path: Path) -> None:
    """frontier.png: dev macro AUC against CPU ms per text, every model, a panel per dataset."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 5), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = results["datasets"][name]
        front = sorted(on_frontier(rows), key=lambda m: rows[m]["ms_per_text"])
        ax.step([rows[m]["ms_per_text"] for m in front], [rows[m]["dev"]["macro_auc"] for m in front],
                where="post", color="tab:green", alpha=0.6, label="frontier")
        ax.axvline(rows["teacher"]["ms_per_text"] / 10, color="grey", ls="--", lw=1, label="10x the teacher's speed")
        for model, row in rows.items():
            auc, ms = row["dev"]["macro_auc"], row["ms_per_text"]
            ax.errorbar(ms, auc, yerr=row.get("std", {}).get("macro_auc", 0), fmt="o",
                        color="tab:green" if model in front else "tab:blue", ms=4 + row["parameters"] / 3e6)
            ax.annotate(f"{model} ({row['parameters'] / 1e6:.1f}M)", (ms, auc), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(title=f"{name}: quality against CPU speed (size: parameters; bars: seed std)",
               xlabel="CPU inference, ms per text (log)", ylabel="dev macro ROC AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    hf_logging.set_verbosity_error()
    if not args.data_dir.is_dir():
        sys.exit(f"data dir not found: {args.data_dir} (--data-dir)")
    results = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "threads": torch.get_num_threads(),
               "precision": precision_name(load_config().mixed_precision, training_device()),
               "seeds": args.seeds, "datasets": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name in args.datasets:  # the files are rewritten after each dataset
        results["datasets"][name] = bench_dataset(name, args)
        results.update(wall_time_s=time.perf_counter() - started, reused=args.reused)
        (args.out / "quality.json").write_text(json.dumps(results["datasets"], indent=2) + "\n")
        (args.out / "quality.md").write_text(markdown(results))
        plot(results, args.out / "frontier.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
