"""Side by side with the tools users would pick instead: kd, SetFit and the transformers Trainer
recipe, on HatEval and GoEmotions (train -> dev), the same real all-MiniLM-L6-v2 weights, this CPU,
one run.

Per dataset (`--datasets`), in this order, each timed by the wall clock:
  kd        kd distill with its documented recipes: the teacher (all-MiniLM-L6-v2 fine-tuned, kd's
            teacher stage, configs/minilm.yaml), the l2 student (its first and last pretrained
            layers, configs/minilm.yaml) and the BERT-Tiny-shaped student as kd makes it without
            BERT-Tiny weights (configs/bert-tiny-kd-pretrain.yaml: pre-trained by distillation,
            lexical part); --seeds seeds each for the students
  trainer   the transformers Trainer recipe of its task guides: the teacher fine-tuned with Trainer
            (lr 2e-5, batch 16, 2 epochs, weight decay 0.01, the best epoch by eval loss), then a
            Trainer subclass whose compute_loss runs the teacher inside every step and adds its soft
            term to the student's own loss ((1 - λ)·loss + λ·T²·soft, λ 0.5, T 5; KL of softmaxes,
            BCE of sigmoids for multi-label) into the same l2 student and a BERT-Tiny-shaped one
            (random init: its weights are not at hand); one seed
  setfit    the released setfit package: a SetFit model on all-MiniLM-L6-v2 (contrastive body
            fine-tuning, one-vs-rest logistic heads; SetFit's default arguments: batch 16, 1 body
            epoch, body lr 2e-5, oversampled pairs) and its DistillationTrainer into the l2 student
            as a sentence-transformers folder. Its pairs would take hours on the full train split,
            so each phase gets the wall-clock budget of kd's matching phase, measured in this run
            (a callback ends it; the head is then fitted as SetFit does; max_steps 20,000 only
            bounds the pairs it draws up front). Its pair sampler holds every index pair of its
            train texts (15 GB for GoEmotions' 43k, and as much again to shuffle them), so on a
            24 GB machine it gets 20,000 of them, drawn at random; one seed
Every model's dev probabilities are scored alike, with kd's metrics: macro AUC, and macro F1 with
per-label thresholds tuned out of fold. Student speed: CPU ms per text at batch 64 on 1,000 dev
texts (kd.Classifier for kd and Trainer folders, SetFit's predict_proba for SetFit).

    pip install -e ".[peers]"
    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_peers.py

Writes docs/benchmarks/peers.{md,json} and peers.png (dev macro AUC against training minutes).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from kd.config.settings import load_config
from kd.data.splits import load_splits
from kd.deployment.classifier import Classifier
from kd.evaluation.metrics import tuned_metrics
from kd.run.pipeline import distill
from kd.run.teachers import shared_teacher_run

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DATASETS = {"hateval": ["configs/hateval.yaml"], "goemotions": ["configs/goemotions.yaml"]}
SPEED_TEXTS = 1000
SETFIT_ROWS = 20_000  # its pair sampler holds every index pair of its train texts: 3.2 GB at 20k, 15 GB at 43k
SETFIT_MAX_STEPS = 20_000  # bounds the pairs it draws up front; the wall-clock budget ends training first


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "checkpoints" / "peers-cache")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="kd's student seeds")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    return p.parse_args()


def kd_config(name: str, args, extra: list[str], more: list[str] = ()):
    files = [ROOT / f for f in DATASETS[name]] + [ROOT / "configs/minilm.yaml"] + [ROOT / f for f in more]
    data = args.data_dir / ("hateval2019-en" if name == "hateval" else "goemotions")
    paths = ([f"data.train={data}/hateval2019_en_train.csv", f"data.val={data}/hateval2019_en_dev.csv"]
             if name == "hateval" else [f"data.train={data}/train.tsv", f"data.val={data}/dev.tsv",
                                        f"data.labels_file={data}/emotions.txt"])
    return load_config(files, [*paths, f"cache_dir={args.cache_dir}", f"output_dir={args.cache_dir / 'runs'}",
                               *extra])


def score(logits: np.ndarray, dev) -> dict:
    metrics, _ = tuned_metrics(logits, dev.labels, dev.label_names)
    return {"macro_auc": metrics["macro_auc"], "macro_f1_tuned": metrics["macro_f1_tuned"]}


def ms_per_text(predict, texts: list[str]) -> float:
    predict(texts[:64])  # warm-up
    started = time.perf_counter()
    predict(texts)
    return 1000 * (time.perf_counter() - started) / len(texts)


def folder_row(tool: str, role: str, folder: Path, minutes: float, dev, seed: int | None) -> dict:
    clf = Classifier.from_pretrained(folder, backend="torch", batch_size=64)
    texts = list(dev.texts)
    return {"tool": tool, "model": role, "seed": seed, "train_minutes": minutes,
            "parameters": sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(
                folder, trust_remote_code=True).parameters()),
            "ms_per_text": ms_per_text(clf.logits, texts[:SPEED_TEXTS]), **score(clf.logits(texts), dev)}


def run_kd(name: str, args, dev) -> tuple[list[dict], dict]:
    """kd's teacher, then its l2 and tiny students over the seeds; (rows, phase minutes)."""
    rows, started = [], time.perf_counter()
    teacher_run = shared_teacher_run(kd_config(name, args, []))
    teacher_minutes = (time.perf_counter() - started) / 60
    rows.append(folder_row("kd", "teacher", teacher_run / "teacher", teacher_minutes, dev, 0))
    minutes = {"teacher": teacher_minutes}
    for student, more in (("l2", []), ("tiny", ["configs/bert-tiny-kd-pretrain.yaml"])):
        for seed in args.seeds:
            cfg = kd_config(name, args, [f"teacher.path={teacher_run / 'teacher'}", f"seed={seed}",
                                         f"run_name={name}-{student}-s{seed}"], more)
            shutil.rmtree(Path(cfg.output_dir) / cfg.run_name, ignore_errors=True)
            started = time.perf_counter()
            run_dir = distill(cfg)
            elapsed = (time.perf_counter() - started) / 60
            minutes.setdefault(student, elapsed)  # the first seed's: pre-training included
            rows.append(folder_row("kd", student, run_dir / "student", elapsed, dev, seed))
    return rows, minutes


class Budget(TrainerCallback):
    """Ends training once `seconds` of wall clock have passed (SetFit's phases on a large split)."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.started > self.seconds:
            control.should_training_stop = True
        return control


def hf_datasets(tokenizer, train, dev):
    from datasets import Dataset

    def build(data):
        encoded = tokenizer(list(data.texts), truncation=True, max_length=128)
        return Dataset.from_dict({**encoded, "labels": data.labels.tolist()})
    return build(train), build(dev)


class DistillationTrainer(Trainer):
    """The task guides' recipe: the teacher runs inside every step; (1 - λ)·student loss + λ·T²·soft."""

    def __init__(self, *args, teacher=None, temperature: float = 5.0, lambda_param: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.temperature, self.lambda_param = teacher.eval(), temperature, lambda_param

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student = model(**inputs)
        with torch.no_grad():
            teacher = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"})
        t = self.temperature
        if model.config.problem_type == "multi_label_classification":
            soft = F.binary_cross_entropy_with_logits(student.logits / t, torch.sigmoid(teacher.logits / t))
        else:
            soft = F.kl_div(F.log_softmax(student.logits / t, -1), F.softmax(teacher.logits / t, -1),
                            reduction="batchmean")
        loss = (1 - self.lambda_param) * student.loss + self.lambda_param * t**2 * soft
        return (loss, student) if return_outputs else loss


def guide_arguments(folder: Path, seed: int) -> TrainingArguments:
    return TrainingArguments(output_dir=str(folder), learning_rate=2e-5, per_device_train_batch_size=16,
                             per_device_eval_batch_size=64, num_train_epochs=2, weight_decay=0.01,
                             eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                             save_total_limit=1, report_to=[], seed=seed, use_cpu=True, disable_tqdm=True)


def first_and_last_layers(model):
    """A copy of the pretrained encoder keeping its first and last layers, as kd's l2 student."""
    model.bert.encoder.layer = torch.nn.ModuleList([model.bert.encoder.layer[0], model.bert.encoder.layer[-1]])
    model.config.num_hidden_layers = 2
    return model


def run_trainer(name: str, args, train, dev) -> list[dict]:
    """The Trainer recipe: its teacher, then its two students with the teacher online."""
    work = args.cache_dir / "trainer" / name
    shutil.rmtree(work, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    train_set, dev_set = hf_datasets(tokenizer, train, dev)
    labels = {"num_labels": len(train.label_names), "problem_type": "multi_label_classification",
              "id2label": dict(enumerate(train.label_names)), "label2id": {n: i for i, n in enumerate(train.label_names)}}
    collate, rows = DataCollatorWithPadding(tokenizer), []

    def fit(role: str, model, trainer_class=Trainer, **extra) -> None:
        started = time.perf_counter()
        trainer = trainer_class(model=model, args=guide_arguments(work / f"{role}-work", 0), train_dataset=train_set,
                                eval_dataset=dev_set, data_collator=collate, **extra)
        trainer.train()
        minutes = (time.perf_counter() - started) / 60
        trainer.save_model(str(work / role))
        tokenizer.save_pretrained(work / role)
        rows.append(folder_row("trainer", role, work / role, minutes, dev, 0))

    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(MINILM, **labels)
    fit("teacher", teacher)
    teacher = AutoModelForSequenceClassification.from_pretrained(work / "teacher")
    l2 = first_and_last_layers(AutoModelForSequenceClassification.from_pretrained(MINILM, **labels))
    fit("l2", l2, DistillationTrainer, teacher=teacher)
    from transformers import BertConfig

    tiny = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512, **labels))
    fit("tiny", tiny, DistillationTrainer, teacher=teacher)
    return rows


def setfit_row(role: str, model, minutes: float, dev) -> dict:
    texts = list(dev.texts)
    predict = lambda batch: model.predict_proba(batch, batch_size=64, as_numpy=True)  # noqa: E731
    probs = np.clip(np.asarray(predict(texts), dtype=np.float64), 1e-7, 1 - 1e-7)
    return {"tool": "setfit", "model": role, "seed": 0, "train_minutes": minutes,
            "parameters": sum(p.numel() for p in model.model_body.parameters()),
            "ms_per_text": ms_per_text(predict, texts[:SPEED_TEXTS]), **score(np.log(probs / (1 - probs)), dev)}


def run_setfit(name: str, args, train, dev, budgets: dict) -> list[dict]:
    """SetFit's teacher and its distilled l2 student, each phase within kd's matching budget."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from setfit import DistillationTrainer as SetFitDistillation
    from setfit import SetFitModel
    from setfit import Trainer as SetFitTrainer
    from setfit import TrainingArguments as SetFitArguments

    work = args.cache_dir / "setfit" / name
    shutil.rmtree(work, ignore_errors=True)
    if len(train) > SETFIT_ROWS:
        train = train.take(np.sort(np.random.default_rng(0).choice(len(train), SETFIT_ROWS, replace=False)))
    data = Dataset.from_dict({"text": list(train.texts), "label": train.labels.astype(int).tolist()})
    settings = {"report_to": "none", "seed": 0, "max_steps": SETFIT_MAX_STEPS}  # else SetFit's defaults
    rows = []
    torch.manual_seed(0)
    started = time.perf_counter()
    teacher = SetFitModel.from_pretrained(MINILM, multi_target_strategy="one-vs-rest")
    trainer = SetFitTrainer(model=teacher, args=SetFitArguments(**settings), train_dataset=data,
                            callbacks=[Budget(budgets["teacher"] * 60)])
    trainer.train()
    rows.append(setfit_row("teacher", teacher, (time.perf_counter() - started) / 60, dev))
    body = SentenceTransformer(MINILM)
    first_and_last = body[0].auto_model
    first_and_last.encoder.layer = torch.nn.ModuleList([first_and_last.encoder.layer[0], first_and_last.encoder.layer[-1]])
    first_and_last.config.num_hidden_layers = 2
    body.save(str(work / "l2-body"))
    started = time.perf_counter()
    student = SetFitModel.from_pretrained(str(work / "l2-body"), multi_target_strategy="one-vs-rest")
    distiller = SetFitDistillation(teacher_model=teacher, student_model=student, train_dataset=data.remove_columns("label"),
                                   args=SetFitArguments(**settings))
    distiller.add_callback(Budget(budgets["l2"] * 60))  # its __init__ takes no callbacks
    distiller.train()
    rows.append(setfit_row("l2", student, (time.perf_counter() - started) / 60, dev))
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (tool, model): mean and std over seeds of every number."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["tool"], row["model"]), []).append(row)
    out = []
    for (tool, model), runs in groups.items():
        stats = {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1
                     else None] for k in ("macro_auc", "macro_f1_tuned", "ms_per_text")}
        out.append({"tool": tool, "model": model, "seeds": len(runs), "train_minutes": runs[0]["train_minutes"],
                    "parameters": runs[0]["parameters"], **stats})
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    colours = {"kd": "tab:blue", "trainer": "tab:orange", "setfit": "tab:green"}
    for ax, (name, summary) in zip(axes[0], results.items()):
        for row in summary:
            ax.scatter(row["train_minutes"], row["macro_auc"][0], color=colours[row["tool"]],
                       marker="o" if row["model"] == "teacher" else "s")
            ax.annotate(f"{row['tool']} {row['model']}", (row["train_minutes"], row["macro_auc"][0]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_title(name)
        ax.set_xlabel("training minutes (wall clock, this CPU)")
        ax.set_ylabel("dev macro AUC")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(results: dict, minutes: float, seeds: list[int]) -> str:
    lines = ["# kd beside SetFit and the transformers Trainer recipe", "",
             "`HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_peers.py` "
             f"({minutes:.0f} minutes for the whole run). Dev splits, the same all-MiniLM-L6-v2 weights, one CPU "
             "run; every model's dev probabilities scored with kd's metrics (macro F1 with per-label thresholds "
             f"tuned out of fold). kd's students: mean ± std over seeds {seeds} (their minutes: the first seed's, "
             "pre-training included); the Trainer recipe and SetFit: one seed each. Setting per tool: the "
             "script's docstring.", ""]
    for name, summary in results.items():
        lines += [f"## {name}", "", "| tool | model | dev macro AUC | dev macro F1 (tuned) | train minutes | "
                  "parameters | CPU ms per text (batch 64) | seeds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in summary:
            cell = lambda pair, fmt: fmt.format(pair[0]) + ("" if pair[1] is None else " ± " + fmt.format(pair[1]))  # noqa: E731
            lines.append(f"| {r['tool']} | {r['model']} | {cell(r['macro_auc'], '{:.4f}')} | "
                         f"{cell(r['macro_f1_tuned'], '{:.4f}')} | {r['train_minutes']:.1f} | {r['parameters']:,} | "
                         f"{cell(r['ms_per_text'], '{:.2f}')} | {r['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started, results, raw = time.perf_counter(), {}, {}
    for name in args.datasets:
        cfg = kd_config(name, args, [])
        train, dev = load_splits(cfg.data, args.cache_dir / "data")
        kd_rows, budgets = run_kd(name, args, dev)
        rows = kd_rows + run_trainer(name, args, train, dev) + run_setfit(name, args, train, dev, budgets)
        raw[name], results[name] = rows, summarize(rows)
        print(json.dumps(results[name], indent=1), flush=True)
    minutes = (time.perf_counter() - started) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps({"results": results, "runs": raw, "minutes": minutes,
                                                     "seeds": args.seeds}, indent=2), encoding="utf-8")
    (args.out / "peers.md").write_text(markdown(results, minutes, args.seeds), encoding="utf-8")
    plot(results, args.out / "peers.png")
    print(markdown(results, minutes, args.seeds))


if __name__ == "__main__":
    main()
