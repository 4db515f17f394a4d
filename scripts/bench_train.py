"""Training speed on this machine: the reference recipe against kd's default, side by side.

  (c) reference fine-tuning:   every text padded to 200 tokens, fp32, batch 16, AdamW (for-loop)
  (a) reference distillation:  (c) plus the teacher run online at every student step
  (b) kd's default:            what `kd distill` trains a student with here: cached teacher
                               logits, batches padded to their longest row and grouped by
                               length, the speedups of `train.speedups` (kd/speedups.py) as this
                               device's default picks them, bf16 autocast where the CPU computes
                               bf16 natively (mixed_precision=auto) with batch widths padded to
                               multiples of 8, batch and lr of configs/base.yaml

for the BERT-Tiny-shaped student (random init) and the MiniLM-L6 teacher, on GoEmotions train
and on a synthetic Jigsaw-sized corpus. Part 1 times a ladder of settings from (c) to (b), one
setting changed per row, every row trained by kd's own `train.fit` (each trial in a fresh
process: a short fit to warm up, then one timed epoch of a random subset sized to last about
--seconds); then (b) over one whole epoch. (a)'s online teacher runs through fit's layer
matching (the teacher's forward at every step, as kd runs it for hidden-state matching, weight 1).
With `--device cuda` part 1 runs on the GPU (its ladder without the CPU-only speedups), (b)
trains 3 whole epochs, and the MiniLM-L6 teacher's own training is timed, the reference's way
and kd's. Part 2 runs `kd distill` (student stage, 3 epochs, GoEmotions, the fine-tuned
teacher's cached logits) with kd's defaults, with the reference's numerics (batch 16, unsorted
batches, fp32), in fp32 where kd's default is bf16, and with the opt-in lazy embedding update,
each over 3 seeds, and compares time and dev quality at equal epochs. Where kd's default is
fp32, `--e2e-runs kd_default_in_bf16` measures its defaults in bf16 autocast too: on a CPU
without native bf16 that is emulated, slow, but numerically what a CPU with AVX512-BF16 trains
(the report is in bench_train_report.py).

    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_train.py \\
        --teacher checkpoints/bench-cache/runs/goemotions-teacher/teacher

Writes docs/benchmarks/training.{md,json}. On a GPU machine (docs/benchmarks/README.md says
how to bring the data there):

    python scripts/bench_train.py --device cuda --skip-end-to-end --corpora jigsaw_synthetic \\
        --rounds 1 --seconds 5 --out docs/benchmarks/training_gpu
"""

import argparse
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from bench_train_report import markdown
from machine import cpu_name, mkl_recipe_library  # scripts/machine.py
from transformers.utils import logging as hf_logging

from kd.config.settings import load_config
from kd.data.batches import EncodedDataset, make_loader
from kd.data.formats import read_labeled
from kd.data.tokens import TokenCache, encode
from kd.evaluation.predict import MODEL_INPUTS
from kd.models.build import build_model, label_names
from kd.models.hub import load_tokenizer
from kd.models.saved import load_classifier
from kd.runtime.context import RunContext
from kd.runtime.hardware import precision_name, resolve_mixed_precision
from kd.runtime.report import Reporter
from kd.training import speedups
from kd.training.layer_matching import LayerMatching
from kd.training.loop import Objective, TrainingJob, fit
from kd.training.losses import distillation_loss

JIGSAW_PRIORS = [0.096, 0.010, 0.053, 0.003, 0.049, 0.009]  # toxic .. identity_hate in train.csv
REFERENCE = {"speedups": [], "group_by_length": False, "pad_to_multiple_of": 200, "batch_size": 16}  # max_length 200


@dataclasses.dataclass
class Recipe:
    """One row: `train` settings (TrainConfig keys) over kd's student defaults, and how the
    step's loss is made."""
    name: str
    train: dict
    mixed_precision: str = "no"  # Accelerate's; "auto" as kd resolves it
    distill: bool = True  # False: the labels alone (alpha = 0)
    online_teacher: bool = False
    mkl_amd_kernels: bool = False  # MKL's Intel kernels on an AMD CPU (opt-in: recipes/mkl_amd/)
    model: str = "bert-tiny"  # what trains: the student, or (its own training timed) the teacher


def ladder(kd_batch: int, bf16: bool, device: str = "cpu", mkl_recipe: bool = False) -> list[Recipe]:
    """(c), (a), then one setting at a time up to kd's default (b), in bf16 autocast where `bf16`;
    then variants of (b) that kd does not use by default: bf16 where kd's default is fp32, MKL's
    Intel kernels preloaded on an AMD CPU (`mkl_recipe`: recipes/mkl_amd, opt-in) and the lazy
    embedding update (opt-in: it costs dev AUC, see part 2). On a GPU: the steps kd takes there,
    and no variants. The last step's settings must be kd's defaults, checked here."""
    c = Recipe("(c) reference fine-tuning", dict(REFERENCE), distill=False)
    a = dataclasses.replace(c, name="(a) reference distillation", distill=True, online_teacher=True)
    cpu = device == "cpu"
    kd_speedups = list(speedups.ON_CPU if cpu else speedups.ON_OTHER_DEVICES)  # added one at a time, in order
    steps = [("+ teacher logits cached", {"online_teacher": False}, {}),
             ("+ dynamic padding", {}, {"pad_to_multiple_of": 1}),
             ("+ length-grouped batches", {}, {"group_by_length": True}),
             ("+ fused AdamW", {}, {"speedups": kd_speedups[:1]}),
             *([("+ last layer for [CLS] only", {}, {"speedups": kd_speedups[:2]}),
                ("+ sparse embedding gradient", {}, {"speedups": kd_speedups})] if cpu else []),
             (f"+ batch {kd_batch}", {}, {"batch_size": kd_batch}),
             *([("+ bf16 autocast", {"mixed_precision": "bf16"}, {}),
                ("+ widths padded to multiples of 8", {}, {"pad_to_multiple_of": None})] if bf16 else [])]
    recipes = [c, a]
    for i, (name, change, train) in enumerate(steps):
        name += ": (b) kd default" if i == len(steps) - 1 else ""
        recipes.append(dataclasses.replace(recipes[-1], name=name, train={**recipes[-1].train, **train}, **change))
    b = recipes[-1]
    _check_is_kd_default(b, device)
    if not cpu:
        return recipes
    other_precision = [] if bf16 else [dataclasses.replace(b, name="(b) with bf16 autocast", mixed_precision="bf16",
                                                           train={**b.train, "pad_to_multiple_of": None})]
    mkl = [dataclasses.replace(b, name="(b) with MKL's Intel kernels preloaded (recipes/mkl_amd)",
                               mkl_amd_kernels=True)] if mkl_recipe else []
    return recipes + other_precision + mkl + [
        dataclasses.replace(b, name="(b) with the lazy embedding update",
                            train={**b.train, "lazy_embedding_update": True})]


def _check_is_kd_default(b: Recipe, device: str) -> None:
    """(b)'s settings, resolved, are those `kd distill` trains a student with on `device`."""
    defaults = load_config()
    ours = dataclasses.replace(defaults.student.train, **b.train)
    defaults_speedups = speedups.resolve(None, torch.device(device), 1, "no", False, False)[0]
    precision = resolve_mixed_precision(defaults.mixed_precision, torch.device(device))
    if (dataclasses.replace(defaults.student.train, speedups=defaults_speedups) != ours or b.mixed_precision != precision
            or not b.distill or b.online_teacher):
        raise SystemExit(f"the ladder's last step is not kd's default: {b}")


def teacher_recipes(kd_batch: int, bf16: bool) -> list[Recipe]:
    """The MiniLM-L6 teacher's own fine-tuning (alpha = 0): the reference's way (pad to 200, fp32,
    batch 16, AdamW for-loop) and kd's (its teacher batch `kd_batch`, this device's defaults)."""
    reference = Recipe("teacher: reference fine-tuning", dict(REFERENCE), distill=False, model="minilm-l6")
    kd_teacher = Recipe("teacher: kd default", {"batch_size": kd_batch, "speedups": None}, distill=False,
                        model="minilm-l6", mixed_precision="bf16" if bf16 else "no")
    return [reference, kd_teacher]


def synthetic_jigsaw(words: list[str], rows: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts of real words whose word counts follow the real Jigsaw train.csv: log-normal with
    median 37 and sigma 1.09 (fitted to its first 282 rows; 95th percentile about 210 words)."""
    rng = np.random.default_rng(seed)
    counts = np.clip(np.rint(rng.lognormal(np.log(37), 1.09, rows)), 1, 1250).astype(int)
    vocab = np.array(words)
    texts = [" ".join(vocab[rng.integers(0, len(vocab), n)]) for n in counts]
    labels = (rng.random((rows, len(JIGSAW_PRIORS))) < JIGSAW_PRIORS).astype(np.float32)
    return texts, labels


def pad_to(batch: dict, width: int | None, pad_id: int) -> dict:
    if width is None or batch["input_ids"].shape[1] >= width:
        return batch
    extra = width - batch["input_ids"].shape[1]
    batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    if "token_type_ids" in batch:
        batch["token_type_ids"] = F.pad(batch["token_type_ids"], (0, extra), value=0)
    return batch


def subset(corpus: dict, rows: np.ndarray) -> EncodedDataset:
    return EncodedDataset(corpus["ids"].take(rows), corpus["labels"][rows], corpus["teacher_logits"][rows])


def timed_fit(recipe: Recipe, corpus: dict, rows: np.ndarray, teacher, accelerator, out_dir: Path) -> float:
    """Seconds kd's `fit` trains one epoch of `corpus`'s `rows` with `recipe`, on a freshly
    built student (same init every time); its evaluation and saving are not counted."""
    names = [f"label{j}" for j in range(corpus["labels"].shape[1])]
    torch.manual_seed(0)
    student = build_model(recipe.model, "random", names, role="student")
    matching = LayerMatching(student, teacher, None, 1.0, 0.0, "mse") if recipe.online_teacher else None
    cfg = dataclasses.replace(load_config().student.train, **recipe.train, epochs=1, save_every_steps=0)
    objective = Objective(alpha=0.5 if recipe.distill else 0.0, temperature=2.0, matching=matching)
    with Reporter(False) as reporter:
        ctx = RunContext(load_config(), accelerator, reporter, TokenCache(), out_dir)
        result = fit(ctx, TrainingJob("bench", student, load_tokenizer(recipe.model), subset(corpus, rows),
                                      subset(corpus, np.arange(64)), cfg, out_dir, objective))
    return result.train_time_s


def trial(recipe: Recipe, corpus_file: Path, teacher_name: str, seconds: float, device: str,
          epochs: int) -> dict:
    """One timed trial of `recipe`, in this (fresh) process: a fit of 3 batches to warm up (and to
    size the timed one), then `epochs` whole epochs (seconds 0) or one epoch of a random subset
    sized to last about `seconds`."""
    corpus = pickle.loads(corpus_file.read_bytes())
    labels = corpus["labels"]
    corpus["teacher_logits"] = torch.randn(len(labels), labels.shape[1])  # speed does not depend on the values
    names = [f"label{j}" for j in range(labels.shape[1])]
    # Random weights: speed does not depend on them, and part 1 needs no hub cache.
    teacher = build_model(teacher_name, "random", names, role="teacher").eval() if recipe.online_teacher else None
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=recipe.mixed_precision)
    batch = recipe.train.get("batch_size", load_config().student.train.batch_size)
    order = np.random.default_rng(0).permutation(len(labels))
    with tempfile.TemporaryDirectory() as out:
        warm = timed_fit(recipe, corpus, order[:3 * batch], teacher, accelerator, Path(out))
        rows = len(labels) if not seconds else int(np.clip(3 * batch * seconds / warm, 4 * batch, len(labels)))
        times = [timed_fit(recipe, corpus, order[:rows], teacher, accelerator, Path(out)) for _ in range(epochs)]
    samples = (rows // batch) * batch  # each epoch drops its last incomplete batch
    return {"recipe": dataclasses.asdict(recipe), "rows": rows, "epochs": epochs if not seconds else None,
            "seconds": sum(times), "samples_per_s": samples * epochs / sum(times)}


def run_trial(recipe: Recipe, corpus_file: Path, teacher_name: str, seconds: float, device: str,
              epochs: int = 1, mkl_library: Path | None = None) -> dict:
    """One trial in a fresh process (each trial meets the process's first use of every batch
    shape alike); with `mkl_amd_kernels`, `mkl_library` (recipes/mkl_amd) preloaded."""
    command = [sys.executable, __file__, "--trial", json.dumps(dataclasses.asdict(recipe)),
               "--corpus-file", str(corpus_file), "--teacher-name", teacher_name, "--seconds", str(seconds),
               "--device", device, "--epochs", str(epochs)]
    env = {**os.environ, **({"LD_PRELOAD": str(mkl_library)} if recipe.mkl_amd_kernels else {})}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.splitlines()[-1])


def run_rounds(recipes: list[Recipe], corpus_file: Path, texts: int, args: argparse.Namespace) -> list[dict]:
    """Time every recipe --rounds times, round-robin so that a slow minute of the machine hits
    every recipe; the median trial of each, with every trial's rate."""
    trials: list[list[dict]] = [[] for _ in recipes]
    for round_ in range(args.rounds):
        for recipe, recipe_trials in zip(recipes, trials):
            recipe_trials.append(run_trial(recipe, corpus_file, args.teacher_name, args.seconds, args.device,
                                           mkl_library=args.mkl_library))
            row = recipe_trials[-1]
            print(f"  round {round_ + 1} {recipe.name:42s} {row['samples_per_s']:8.0f} samples/s "
                  f"({row['rows']:,} rows, {row['seconds']:.1f} s)", flush=True)
    rows = []
    for recipe_trials in trials:
        row = sorted(recipe_trials, key=lambda r: r["samples_per_s"])[len(recipe_trials) // 2]
        row["trials_samples_per_s"] = [r["samples_per_s"] for r in recipe_trials]
        row["epoch_s_estimate"] = texts / row["samples_per_s"]
        rows.append(row)
    return rows


def run_ladder(corpus: str, texts: list[str], labels: np.ndarray, batches: tuple[int, int], bf16: bool,
               args: argparse.Namespace) -> dict:
    """The ladder's rounds, then (b) over whole epochs: one on a CPU, three on a GPU, where the
    teacher's own training is timed too. `batches`: kd's student and teacher batch sizes."""
    started = time.perf_counter()
    ids = encode(load_tokenizer("bert-tiny"), texts, 200)
    lengths = ids.lengths
    corpus_stats = {"texts": len(texts), "tokenize_s": time.perf_counter() - started,
                    "tokens_median": float(np.median(lengths)), "tokens_p90": float(np.percentile(lengths, 90)),
                    "share_cut_at_200": float(np.mean(lengths >= 200)), "real_token_share_at_200": lengths.mean() / 200}
    print(f"{corpus}: {corpus_stats}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    corpus_file = args.work / f"ladder-{corpus}.pkl"
    corpus_file.write_bytes(pickle.dumps({"ids": ids, "labels": labels}))
    args.mkl_library = mkl_recipe_library(args.work) if args.device == "cpu" else None
    recipes = ladder(batches[0], bf16, args.device, args.mkl_library is not None)
    rows = run_rounds(recipes, corpus_file, len(texts), args)
    gpu = args.device != "cpu"
    teacher_rows = run_rounds(teacher_recipes(batches[1], bf16), corpus_file, len(texts), args) if gpu else []
    epochs = 3 if gpu else 1
    whole_epoch = run_trial(next(r for r in recipes if "(b) kd default" in r.name), corpus_file, args.teacher_name,
                            0.0, args.device, epochs)
    print(f"  (b) over {epochs} whole epoch(s): {whole_epoch['seconds']:.1f} s, "
          f"{whole_epoch['samples_per_s']:.0f} samples/s", flush=True)
    return {**corpus_stats, "rows": rows, "teacher_rows": teacher_rows, "trial_seconds": args.seconds,
            "whole_epoch": whole_epoch}


def end_to_end(data_dir: Path, teacher: Path, cache_dir: Path, work: Path, name: str,
               overrides: list[str], train_rows: int, seed: int) -> dict:
    """`kd distill`'s student stage, 3 epochs on GoEmotions train, scored on dev after each. In a
    fresh process: Accelerate allows one mixed-precision setting per process, and runs differ."""
    run_dir = work / f"{name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "kd.cli", "distill", "--config", "configs/goemotions.yaml",
                    f"data.train={data_dir}/goemotions/train.tsv", f"data.val={data_dir}/goemotions/dev.tsv",
                    f"data.labels_file={data_dir}/goemotions/emotions.txt", f"teacher.path={teacher}",
                    "student.name=bert-tiny", "student.init=random", "student.train.epochs=3",
                    f"cache_dir={cache_dir}", f"output_dir={work}", f"run_name={run_dir.name}", f"seed={seed}",
                    *overrides], check=True)
    final = json.loads((run_dir / "final_metrics.json").read_text())["student"]
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["stage"] == "student"]
    batch = load_config([run_dir / "config.yaml"]).student.train.batch_size
    trained = 3 * (train_rows // batch) * batch  # each epoch drops its last incomplete batch
    return {"seed": seed, "train_time_s": final["train_time_s"],
            "samples_per_s": trained / final["train_time_s"],
            "time_with_eval_s": sum(e["epoch_time_s"] for e in epochs),
            "dev_by_epoch": [{k: e["val"][k] for k in ("macro_auc", "macro_f1_tuned", "bce")} for e in epochs],
            "best_epoch": final["best_epoch"]}


def part2_runs(bf16: bool) -> dict[str, list[str]]:
    """Part 2's runs by name, with their overrides: the reference's numerics, kd's defaults, kd's
    defaults in the other precision (fp32 where the default is bf16; bf16 where it is fp32, which
    on a CPU without native bf16 is emulated: slow, but with the same numbers) and the lazy
    embedding update."""
    return {"reference_numerics": ["student.train.batch_size=16", "student.train.group_by_length=false",
                                   "student.train.lr=1e-3", "mixed_precision=no"],
            "kd_default": [],
            **({"kd_default_in_fp32": ["mixed_precision=no"]} if bf16 else
               {"kd_default_in_bf16": ["mixed_precision=bf16"]}),
            "lazy_embedding_update": ["student.train.lazy_embedding_update=true"]}


def end_to_end_runs(args: argparse.Namespace, train_rows: int, bf16: bool) -> dict:
    """Part 2: the runs --e2e-runs names (by default all but emulated bf16), each over
    --e2e-seeds seeds, round-robin by seed."""
    runs = {name: overrides for name, overrides in part2_runs(bf16).items()
            if name in args.e2e_runs or (not args.e2e_runs and name != "kd_default_in_bf16")}
    results = {name: {"overrides": overrides, "runs": []} for name, overrides in runs.items()}
    for seed in range(args.e2e_seeds):
        for name, overrides in runs.items():
            results[name]["runs"].append(end_to_end(
                args.data_dir, args.teacher, args.cache_dir, args.work, name.replace("_", "-"), overrides,
                train_rows, seed))
    return results


def padding_equivalence(teacher_dir: Path, texts: list[str]) -> dict:
    """The reference's padding to 200 and online teacher change no number, only the cost: the
    fine-tuned teacher's logits and a student's loss on batches padded to 200 vs to their longest."""
    teacher, tokenizer, _ = load_classifier(teacher_dir)
    student = build_model("bert-tiny", "random", label_names(teacher), role="student").eval()
    ids = encode(tokenizer, texts, 200)
    labels = np.zeros((len(ids), teacher.config.num_labels), dtype=np.float32)
    loader = make_loader(EncodedDataset(ids, labels), tokenizer, teacher, 32, shuffle=False)
    logit_gap = loss_gap = 0.0
    with torch.no_grad():
        for batch in loader:
            outputs = []
            for width in (None, 200):
                padded = pad_to(dict(batch), width, tokenizer.pad_token_id)
                inputs = {k: padded[k] for k in MODEL_INPUTS if k in padded}
                t_logits = teacher(**inputs).logits
                s_loss = distillation_loss(student(**inputs).logits, padded["labels"], t_logits, 0.5, 2.0)
                outputs.append((t_logits, s_loss))
            logit_gap = max(logit_gap, float((outputs[0][0] - outputs[1][0]).abs().max()))
            loss_gap = max(loss_gap, float((outputs[0][1] - outputs[1][1]).abs()))
    return {"texts": len(texts), "max_abs_teacher_logit_diff": logit_gap, "max_abs_loss_diff": loss_gap}


def report(results: dict) -> str:
    return markdown(results)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--teacher", type=Path, default=Path("checkpoints/bench-cache/runs/goemotions-teacher/teacher"),
                   help="MiniLM-L6 fine-tuned on GoEmotions (a save_pretrained folder), for part 2")
    p.add_argument("--teacher-name", default="minilm-l6", help="architecture of the online teacher, part 1")
    p.add_argument("--cache-dir", type=Path, default=Path("checkpoints/bench-cache"))
    p.add_argument("--work", type=Path, default=Path("checkpoints/bench-train"))
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per recipe and round in part 1")
    p.add_argument("--rounds", type=int, default=3, help="part 1 times every recipe this often; median kept")
    p.add_argument("--jigsaw-rows", type=int, default=160_000)
    p.add_argument("--skip-end-to-end", action="store_true", help="part 1 only")
    p.add_argument("--only-end-to-end", action="store_true",
                   help="part 2 only; part 1 is kept from --out's training.json")
    p.add_argument("--e2e-seeds", type=int, default=3, help="seeds of every part-2 run")
    p.add_argument("--e2e-runs", nargs="+", default=[], metavar="RUN",
                   choices=sorted({*part2_runs(True), *part2_runs(False)}),
                   help="part 2's runs (default: all but kd_default_in_bf16, emulated on CPUs without "
                        "native bf16); with --only-end-to-end, the others are kept from --out's training.json")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--render", action="store_true", help="only rewrite training.md from --out/training.json")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: part 1 on the GPU (see the docstring)")
    p.add_argument("--corpora", nargs="+", choices=["goemotions", "jigsaw_synthetic"],
                   default=["goemotions", "jigsaw_synthetic"], help="part 1's corpora")
    p.add_argument("--trial", help=argparse.SUPPRESS)  # internal: one ladder trial, a Recipe as JSON
    p.add_argument("--corpus-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.trial:
        hf_logging.set_verbosity_error()
        print(json.dumps(trial(Recipe(**json.loads(args.trial)), args.corpus_file, args.teacher_name, args.seconds,
                               args.device, args.epochs)))
        return
    if args.render:
        (args.out / "training.md").write_text(report(json.loads((args.out / "training.json").read_text())))
        return
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU here")
    defaults = load_config()
    kd_batch = defaults.student.train.batch_size
    bf16 = resolve_mixed_precision(defaults.mixed_precision, device) == "bf16"
    train = read_labeled(args.data_dir / "goemotions/train.tsv", "goemotions",
                         labels_file=args.data_dir / "goemotions/emotions.txt")
    command = "python " + " ".join(sys.argv)
    if args.only_end_to_end:  # part 1 as --out's training.json has it
        if not (args.out / "training.json").is_file():
            sys.exit(f"--only-end-to-end: no {args.out / 'training.json'} to take part 1 from; run without it first")
        results = json.loads((args.out / "training.json").read_text())
        results.setdefault("end_to_end_commands", []).append(command)
    else:
        results = {"command": command, "cpu": cpu_name(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "kd_batch": kd_batch, "ladder": {},
                   "kd_precision": precision_name(defaults.mixed_precision, device),
                   **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})}
        for corpus in args.corpora:
            texts, labels = ((train.texts, train.labels) if corpus == "goemotions" else
                             synthetic_jigsaw(" ".join(train.texts).split(), args.jigsaw_rows, seed=0))
            results["ladder"][corpus] = run_ladder(corpus, texts, labels, (kd_batch, defaults.teacher.train.batch_size),
                                                   bf16, args)
        save(results, args.out)  # part 1 is kept should part 2 fail
    if not args.skip_end_to_end:
        if not (args.teacher / "config.json").is_file():
            sys.exit(f"no fine-tuned teacher at {args.teacher}: see docs/benchmarks/README.md")
        results["equivalence"] = padding_equivalence(args.teacher, train.texts[:512])
        kept = results.get("end_to_end", {}) if args.only_end_to_end else {}  # runs this command leaves alone
        merged = {**kept, **end_to_end_runs(args, len(train), bf16)}
        order = [*part2_runs(bf16), *merged]
        results["end_to_end"] = {name: merged[name] for name in sorted(merged, key=order.index)}
    save(results, args.out)
    print(report(results))


def save(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "training.md").write_text(report(results))


if __name__ == "__main__":
    main()
