"""Side by side with the tools users would pick instead: kd, SetFit and the transformers Trainer
recipe, on HatEval and GoEmotions (train -> dev), the same real all-MiniLM-L6-v2 weights, this CPU,
one run.

Per dataset (`--datasets`), in this order, each timed by the wall clock:
  kd        kd distill with its documented recipes: the teacher (all-MiniLM-L6-v2 fine-tuned, kd's
            teacher stage, configs/minilm.yaml), the l2 student (configs/minilm.yaml with
            student.layers=[0,5]: its first and last pretrained layers) and the BERT-Tiny-shaped
            student as kd makes it without BERT-Tiny weights (configs/bert-tiny-kd-pretrain.yaml:
            pre-trained by distillation, lexical part); --seeds seeds each for the students
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
            so each phase's training steps get the wall-clock minutes of kd's matching phase, measured
            in this run (a callback ends them; its set-up before the first step, the pairs and the
            teacher's embeddings, and the head, fitted as SetFit does, come on top and are in its
            minutes; max_steps 20,000 only bounds the pairs it draws up front); one seed
Every tool trains on the same rows: HatEval's 9,000; for GoEmotions a random 20,000 of its 43,410
(kd's data.max_train_samples, split_seed 0), as SetFit's pair sampler holds every index pair of its
train texts (15 GB for all 43k, and as much again to shuffle them, past this 24 GB machine) and the
full split would take the three tools past 4 hours here.
Every model's dev probabilities are scored alike, with kd's metrics: macro AUC, and macro F1 with
per-label thresholds tuned out of fold. Student speed: CPU ms per text at batch 64 on 1,000 dev
texts (kd.Classifier for kd and Trainer folders, SetFit's predict_proba for SetFit).

    pip install -e ".[peers]"
    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_peers.py

Every dataset starts from an empty --work-dir (no cached teacher, soft targets or pre-trained
student), so each tool's minutes are its own. Writes docs/benchmarks/peers.{md,json} and peers.png
(dev macro AUC against training minutes) after each dataset (--redraw: again from peers.json
alone); a run with --datasets X replaces X's results there and keeps the others', and one with
--tools replaces only those tools' rows (SetFit's budgets then come from kd's rows there).
torchdistill is not here: the bench's README section says what stopped it.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_name, ms_per_text  # scripts/machine.py
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
TRAIN_ROWS = {"goemotions": 20_000}  # SetFit's pair sampler holds every index pair: 3.2 GB at 20k, 15 GB at 43k
SPEED_TEXTS = 1000
TOOLS = ["kd", "trainer", "setfit"]
SETFIT_MAX_STEPS = 20_000  # bounds the pairs it draws up front; the wall-clock budget ends training first


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--work-dir", type=Path, default=ROOT / "checkpoints" / "peers-work",
                   help="emptied before each dataset")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="kd's student seeds")
    p.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS,
                   help="run these; the others' rows (and kd's minutes, SetFit's budgets) come from peers.json")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--redraw", action="store_true", help="write peers.md and .png again from peers.json; train nothing")
    return p.parse_args()


def kd_config(name: str, args, extra: list[str], more: list[str] = ()):
    files = [ROOT / f for f in DATASETS[name]] + [ROOT / "configs/minilm.yaml"] + [ROOT / f for f in more]
    data = args.data_dir / ("hateval2019-en" if name == "hateval" else "goemotions")
    paths = ([f"data.train={data}/hateval2019_en_train.csv", f"data.val={data}/hateval2019_en_dev.csv"]
             if name == "hateval" else [f"data.train={data}/train.tsv", f"data.val={data}/dev.tsv",
                                        f"data.labels_file={data}/emotions.txt"])
    rows = [f"data.max_train_samples={TRAIN_ROWS[name]}"] if name in TRAIN_ROWS else []
    return load_config(files, [*paths, *rows, f"cache_dir={args.work_dir}", f"output_dir={args.work_dir / 'runs'}",
                               *extra])


def score(logits: np.ndarray, dev) -> dict:
    metrics, _ = tuned_metrics(logits, dev.labels, dev.label_names)
    return {"macro_auc": metrics["macro_auc"], "macro_f1_tuned": metrics["macro_f1_tuned"]}


def folder_row(tool: str, role: str, folder: Path, minutes: float, dev, seed: int | None) -> dict:
    clf = Classifier.from_pretrained(folder, backend="torch", batch_size=64)
    texts = list(dev.texts)
    return {"tool": tool, "model": role, "seed": seed, "train_minutes": minutes,
            "parameters": sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(
                folder, trust_remote_code=True).parameters()),
            "ms_per_text": ms_per_text(clf.logits, texts[:SPEED_TEXTS]), **score(clf.logits(texts), dev)}


def run_kd(name: str, args, dev) -> list[dict]:
    """kd's teacher, then its l2 and tiny students over the seeds."""
    rows, started = [], time.perf_counter()
    teacher_run = shared_teacher_run(kd_config(name, args, []))
    teacher_minutes = (time.perf_counter() - started) / 60
    rows.append(folder_row("kd", "teacher", teacher_run / "teacher", teacher_minutes, dev, 0))
    for student, more, shape in (("l2", [], ["student.layers=[0,5]"]),
                                 ("tiny", ["configs/bert-tiny-kd-pretrain.yaml"], [])):
        for seed in args.seeds:
            cfg = kd_config(name, args, [f"teacher.path={teacher_run / 'teacher'}", f"seed={seed}",
                                         f"run_name={name}-{student}-s{seed}", *shape], more)
            shutil.rmtree(Path(cfg.output_dir) / cfg.run_name, ignore_errors=True)
            started = time.perf_counter()
            run_dir = distill(cfg)
            elapsed = (time.perf_counter() - started) / 60
            rows.append(folder_row("kd", student, run_dir / "student", elapsed, dev, seed))
    return rows


def kd_minutes(rows: list[dict]) -> dict:
    """kd's minutes per model: its first seed's (pre-training included), SetFit's budgets."""
    minutes: dict = {}
    for row in rows:
        if row["tool"] == "kd":
            minutes.setdefault(row["model"], row["train_minutes"])
    return minutes


class Budget(TrainerCallback):
    """Ends training once its steps have run for `seconds` of wall clock (SetFit's phases on a large split);
    the set-up before the first step (pairs, the teacher's embeddings) is not in the budget."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

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
    work = args.work_dir / "trainer" / name
    shutil.rmtree(work, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    train_set, dev_set = hf_datasets(tokenizer, train, dev)
    names = train.label_names
    labels = {"num_labels": len(names), "problem_type": "multi_label_classification",
              "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
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

    work = args.work_dir / "setfit" / name
    shutil.rmtree(work, ignore_errors=True)
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
    encoder = body[0].auto_model
    encoder.encoder.layer = torch.nn.ModuleList([encoder.encoder.layer[0], encoder.encoder.layer[-1]])
    encoder.config.num_hidden_layers = 2
    body.save(str(work / "l2-body"))
    started = time.perf_counter()
    student = SetFitModel.from_pretrained(str(work / "l2-body"), multi_target_strategy="one-vs-rest")
    distiller = SetFitDistillation(teacher_model=teacher, student_model=student,
                                   train_dataset=data.remove_columns("label"), args=SetFitArguments(**settings))
    distiller.add_callback(Budget(budgets["l2"] * 60))  # its __init__ takes no callbacks
    distiller.train()
    rows.append(setfit_row("l2", student, (time.perf_counter() - started) / 60, dev))
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (tool, model): mean and std over seeds; a student's pipeline minutes add its tool's teacher's."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["tool"], row["model"]), []).append(row)
    out = []
    for (tool, model), runs in groups.items():
        stats = {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1
                     else None] for k in ("macro_auc", "macro_f1_tuned", "ms_per_text")}
        teacher = 0.0 if model == "teacher" else groups[(tool, "teacher")][0]["train_minutes"]
        out.append({"tool": tool, "model": model, "seeds": len(runs), "train_minutes": runs[0]["train_minutes"],
                    "pipeline_minutes": teacher + runs[0]["train_minutes"], "parameters": runs[0]["parameters"],
                    **stats})
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    colours = {"kd": "tab:blue", "trainer": "tab:orange", "setfit": "tab:green"}
    markers = {"teacher": "o", "l2": "s", "tiny": "^"}
    for ax, (name, summary) in zip(axes[0], results.items()):
        for row in summary:
            ax.scatter(row["pipeline_minutes"], row["macro_auc"][0], color=colours[row["tool"]],
                       marker=markers[row["model"]], s=60, label=f"{row['tool']} {row['model']}")
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title(name)
        ax.set_xlabel("training minutes, a student's teacher included (wall clock, this CPU)")
        ax.set_ylabel("dev macro AUC")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(results: dict) -> str:
    lines = ["# kd beside SetFit and the transformers Trainer recipe", "",
             "Written by `scripts/bench_peers.py` (settings per tool: its docstring; what the numbers say: "
             "docs/benchmarks/README.md). Dev splits, the same all-MiniLM-L6-v2 weights, this CPU; every model's "
             "dev probabilities scored with kd's metrics (macro F1 with per-label thresholds tuned out of fold). "
             "Minutes: wall clock of training; a student's pipeline minutes add its tool's teacher's. kd's students: "
             "mean ± std over the seeds (their minutes: the first seed's, pre-training included); the Trainer "
             "recipe and SetFit: one seed each.", ""]
    for name, result in results.items():
        rows = "all" if result["train_rows"] is None else f"a random {result['train_rows']:,}"
        lines += [f"## {name}", "", f"{rows} train rows for every tool, kd's seeds {result['seeds']}.", ""]
        lines += [f"- `{i['command']}`: {', '.join(i['tools'])}, {i['minutes']:.0f} minutes, {i['machine']}"
                  for i in result["invocations"]]
        lines += ["",
                  "| tool | model | dev macro AUC | dev macro F1 (tuned) | train minutes | pipeline minutes | "
                  "parameters | CPU ms per text (batch 64) | seeds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["summary"]:
            cell = lambda pair, fmt: fmt.format(pair[0]) + ("" if pair[1] is None else " ± " + fmt.format(pair[1]))  # noqa: E731
            lines.append(f"| {r['tool']} | {r['model']} | {cell(r['macro_auc'], '{:.4f}')} | "
                         f"{cell(r['macro_f1_tuned'], '{:.4f}')} | {r['train_minutes']:.1f} | "
                         f"{r['pipeline_minutes']:.1f} | {r['parameters']:,} | {cell(r['ms_per_text'], '{:.2f}')} | "
                         f"{r['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "peers.md").write_text(markdown(results), encoding="utf-8")
    plot({name: result["summary"] for name, result in results.items()}, out / "peers.png")


def bench_dataset(name: str, args, before: dict | None) -> dict:
    """The chosen tools on one dataset, from an empty work folder; the others' rows kept from `before`."""
    if "kd" not in args.tools and before is None:
        raise SystemExit(f"--tools without kd needs {name}'s kd rows in peers.json (SetFit's budgets, the table)")
    started = time.perf_counter()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    train, dev = load_splits(kd_config(name, args, []).data, args.work_dir / "data")
    kept = [] if before is None else [r for r in before["runs"] if r["tool"] not in args.tools]
    rows = kept + (run_kd(name, args, dev) if "kd" in args.tools else [])
    if "trainer" in args.tools:
        rows += run_trainer(name, args, train, dev)
    if "setfit" in args.tools:
        rows += run_setfit(name, args, train, dev, kd_minutes(rows))
    rows.sort(key=lambda r: TOOLS.index(r["tool"]))
    command = ("HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_peers.py "
               f"--datasets {name}" + (f" --seeds {' '.join(map(str, args.seeds))}" if "kd" in args.tools else "")
               + ("" if args.tools == TOOLS else " --tools " + " ".join(args.tools)))
    earlier = [] if not kept else [{**i, "tools": [t for t in i["tools"] if t not in args.tools]}
                                   for i in before["invocations"] if set(i["tools"]) - set(args.tools)]
    invocation = {"command": command, "minutes": (time.perf_counter() - started) / 60, "tools": args.tools,
                  "machine": f"{cpu_name()}, {torch.get_num_threads()} torch threads"}
    return {"summary": summarize(rows), "runs": rows, "seeds": args.seeds if "kd" in args.tools else before["seeds"],
            "train_rows": TRAIN_ROWS.get(name), "invocations": [*earlier, invocation]}


def main() -> None:
    args = parse_args()
    saved = args.out / "peers.json"
    results = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    if args.redraw:
        return write(results, args.out)
    for name in args.datasets:
        results[name] = bench_dataset(name, args, results.get(name))
        write(results, args.out)
        print(markdown({name: results[name]}), flush=True)


if __name__ == "__main__":
    main()
