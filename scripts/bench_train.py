"""Training speed on this machine: the reference recipe against kd's default, side by side.

  (c) reference fine-tuning:   every text padded to 200 tokens, fp32, batch 16, AdamW (for-loop)
  (a) reference distillation:  (c) plus the teacher run online at every student step
  (b) kd's default pipeline:   cached teacher logits, batches padded to their longest row and
                               grouped by length, fused AdamW, fast dropout masks (hidden states
                               and attention), freed memory kept by the allocator, the last
                               layer run for the [CLS] row only, a sparse word-embedding
                               gradient, bf16 autocast where the CPU computes bf16 natively
                               (mixed_precision=auto) with every batch shape's oneDNN kernels
                               kept (`import kd` sizes the cache) and, in bf16, batch widths
                               padded to multiples of 8, batch and lr of configs/base.yaml

for the BERT-Tiny-shaped student (random init) and the MiniLM-L6 teacher, on GoEmotions train
and on a synthetic Jigsaw-sized corpus. Part 1 times a ladder of recipes from (c) to (b), one
technique added per row, in a step loop that splits each step into data, teacher, forward,
backward and optimizer time; then (b) over one whole epoch, every batch shape's first use
included. With `--device cuda` part 1 runs on the GPU (the CPU-only techniques left out of
its ladder, phases timed by CUDA events, so no host sync per step), (b) trains 3 whole
epochs, and the MiniLM-L6 teacher's own training is timed, the reference's way and kd's.
Part 2 runs `kd distill` (student stage, 3 epochs, GoEmotions,
the fine-tuned teacher's cached logits) with kd's defaults, with the reference's numerics
(batch 16, unsorted batches, fp32), in fp32 where kd's default is bf16, and with the opt-in
lazy embedding update, each over 3 seeds, and compares time and dev quality at equal epochs.
Where kd's default is fp32, `--e2e-runs kd_default_in_bf16` measures its defaults in bf16
autocast too: on a CPU without native bf16 that is emulated, slow, but numerically what a CPU
with AVX512-BF16 trains (the report is in bench_train_report.py).

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
import time
from pathlib import Path

import kd  # noqa: F401  before torch: it sizes oneDNN's kernel cache (kd/__init__.py)
import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging as hf_logging

from kd.config import load_config
from kd.batches import EncodedDataset, make_loader
from kd.data import read_labeled
from kd.tokens import encode
from kd.evaluate import MODEL_INPUTS
from kd.losses import distillation_loss
from kd.models import build_model, default_lr, load_tokenizer
from kd.dropout import use_fast_dropout
from kd.first_token import use_first_token_last_layer
from kd.optim import clip_grad_norm, make_optimizer, use_sparse_embedding_gradient
from kd.runtime import keep_freed_memory, precision_name, resolve_mixed_precision
from kd.train import MIXED_PRECISION_PAD_MULTIPLE as BF16_PAD
from machine import cpu_name, mkl_recipe_library  # scripts/machine.py

from bench_train_report import markdown

JIGSAW_PRIORS = [0.096, 0.010, 0.053, 0.003, 0.049, 0.009]  # toxic .. identity_hate in train.csv


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    distill: bool = True
    online_teacher: bool = True
    pad_to: int | None = 200  # None: pad a batch to its longest row
    group_by_length: bool = False
    fused_adamw: bool = False
    fast_dropout: bool = False
    fast_attention_dropout: bool = False
    keep_freed_memory: bool = False
    mkl_amd_kernels: bool = False  # MKL's Intel kernels on an AMD CPU (opt-in: recipes/mkl_amd/)
    first_token_last_layer: bool = False
    sparse_embedding_gradient: bool = False
    lazy_embedding_update: bool = False
    batch_size: int = 16
    bf16: bool = False
    kernel_cache: bool = False  # oneDNN keeps kd's number of kernels, not its default 1,024
    pad_to_multiple_of: int = 1  # batch widths rounded up to a multiple (kd: 8 in mixed precision)
    embedding_update: bool = True  # False: the word embedding table is frozen
    model: str = "bert-tiny"  # what trains: the student, or (its own training timed) the teacher


WARMUP_STEPS = {"cpu": 3, "cuda": 20}  # untimed steps before a trial's clock starts: a GPU's kernels warm up slower
CPU_ONLY = {"fast_dropout", "fast_attention_dropout", "keep_freed_memory", "mkl_amd_kernels",
            "sparse_embedding_gradient", "kernel_cache"}  # kd uses these on CPU alone; elsewhere its training leaves them out


def ladder(kd_batch: int, bf16: bool, device: str = "cpu", mkl_recipe: bool = False) -> list[Recipe]:
    """(c), (a), then one technique at a time up to kd's default (b), in bf16 autocast where `bf16`;
    then variants of (b) that kd does not use by default: bf16 where kd's default is fp32, MKL's
    Intel kernels preloaded on an AMD CPU (`mkl_recipe`: recipes/mkl_amd, opt-in), the lazy
    embedding update (opt-in: it costs dev AUC, see part 2), and no update of the word embedding
    table at all (the floor for any embedding update). On a GPU: the steps kd takes there, and
    no variants."""
    c = Recipe("(c) reference fine-tuning", distill=False, online_teacher=False)
    a = dataclasses.replace(c, name="(a) reference distillation", distill=True, online_teacher=True)
    steps = [("+ teacher logits cached", {"online_teacher": False}),
             ("+ dynamic padding", {"pad_to": None}),
             ("+ length-grouped batches", {"group_by_length": True}),
             ("+ fused AdamW", {"fused_adamw": True}),
             ("+ fast dropout masks", {"fast_dropout": True}),
             ("+ fast attention dropout", {"fast_attention_dropout": True}),
             ("+ freed memory kept", {"keep_freed_memory": True}),
             ("+ last layer for [CLS] only", {"first_token_last_layer": True}),
             ("+ sparse embedding gradient", {"sparse_embedding_gradient": True}),
             (f"+ batch {kd_batch}", {"batch_size": kd_batch}),
             *([("+ bf16 autocast", {"bf16": True}), ("+ oneDNN kernels kept", {"kernel_cache": True}),
                (f"+ widths padded to multiples of {BF16_PAD}", {"pad_to_multiple_of": BF16_PAD})] if bf16 else [])]
    if device != "cpu":
        steps = [(name, change) for name, change in steps if not CPU_ONLY & change.keys()]
    recipes = [c, a]
    for i, (name, change) in enumerate(steps):
        name += ": (b) kd default" if i == len(steps) - 1 else ""
        recipes.append(dataclasses.replace(recipes[-1], name=name, **change))
    b = recipes[-1]
    if device != "cpu":
        return recipes
    other_precision = [] if bf16 else [dataclasses.replace(b, name="(b) with bf16 autocast", bf16=True,
                                                           kernel_cache=True, pad_to_multiple_of=BF16_PAD)]
    mkl = [dataclasses.replace(b, name="(b) with MKL's Intel kernels preloaded (recipes/mkl_amd)",
                               mkl_amd_kernels=True)] if mkl_recipe else []
    return recipes + other_precision + mkl + [
        dataclasses.replace(b, name="(b) with the lazy embedding update", lazy_embedding_update=True),
        dataclasses.replace(b, name="(b) without the embedding update", embedding_update=False)]


def teacher_recipes(kd_batch: int, bf16: bool) -> list[Recipe]:
    """The MiniLM-L6 teacher's own fine-tuning (alpha = 0): the reference's way (pad to 200, fp32,
    batch 16, AdamW for-loop) and kd's (its teacher batch `kd_batch`, its techniques)."""
    reference = Recipe("teacher: reference fine-tuning", distill=False, online_teacher=False, model="minilm-l6")
    kd_teacher = dataclasses.replace(reference, name="teacher: kd default", pad_to=None, group_by_length=True,
                                     fused_adamw=True, batch_size=kd_batch, bf16=bf16,
                                     pad_to_multiple_of=BF16_PAD if bf16 else 1)
    return [reference, kd_teacher]


class PhaseClock:
    """The phase boundaries of training steps: host time on a CPU, whose ops run synchronously;
    CUDA events on a GPU, read after the last step, so that timing adds no host sync per step
    (each phase is then GPU time, the GPU's waits on the host included)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.steps: list[list] = []

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def mean_ms(self) -> list[float]:
        """Mean ms per step of each phase over the steps added."""
        self.sync()
        gap = (lambda a, b: a.elapsed_time(b)) if self.cuda else (lambda a, b: 1e3 * (b - a))
        return np.mean([[gap(a, b) for a, b in zip(marks, marks[1:])] for marks in self.steps], axis=0).tolist()


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


def time_recipe(recipe: Recipe, dataset: EncodedDataset, tokenizer, student, teacher,
                seconds: float | None, device: torch.device = torch.device("cpu"), epochs: int = 1) -> dict:
    """Train `student` with `recipe` on `device` for `seconds` (0 or None: `epochs` whole epochs);
    samples/s and ms per step in each phase. The loop keeps the loss on the device, as kd's
    does: no host sync per step."""
    torch.manual_seed(0)
    student.to(device)
    teacher = teacher.to(device) if teacher is not None else None
    lr = default_lr(student, recipe.batch_size)
    if recipe.fast_dropout:
        use_fast_dropout(student, attention=recipe.fast_attention_dropout)
    if recipe.keep_freed_memory:
        keep_freed_memory()
    if recipe.first_token_last_layer:
        use_first_token_last_layer(student)
    use_sparse_embedding_gradient(student, recipe.sparse_embedding_gradient or recipe.lazy_embedding_update)
    student.get_input_embeddings().weight.requires_grad_(recipe.embedding_update)
    optimizer = make_optimizer(student, lr, 0.01, fused=recipe.fused_adamw, lazy=recipe.lazy_embedding_update)
    loader = make_loader(dataset, tokenizer, student, recipe.batch_size, shuffle=True,
                         group_by_length=recipe.group_by_length, pad_to_multiple_of=recipe.pad_to_multiple_of)
    clock = PhaseClock(device)
    steps = samples = 0
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), device=device)
    batches = (batch for epoch in range(epochs) for batch in _epoch(loader, epoch))
    warmup, started = WARMUP_STEPS[device.type], None
    while True:
        t0 = clock.mark()
        batch = next(batches, None)
        if batch is None or (seconds and started and time.perf_counter() - started > seconds):
            break
        batch = pad_to(batch, recipe.pad_to, tokenizer.pad_token_id)
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        t1 = clock.mark()
        teacher_logits = None
        if recipe.distill:
            if recipe.online_teacher:
                with torch.no_grad():
                    teacher_logits = teacher(**inputs).logits
            else:
                teacher_logits = batch["teacher_logits"]
        t2 = clock.mark()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
            logits = student(**inputs).logits
        loss = distillation_loss(logits.float(), batch["labels"], teacher_logits,
                                 0.5 if recipe.distill else 0.0, 2.0)
        t3 = clock.mark()
        loss.backward()
        clip_grad_norm(student.parameters(), 1.0)
        t4 = clock.mark()
        optimizer.step()
        optimizer.zero_grad()
        loss_sum += loss.detach()
        t5 = clock.mark()
        steps += 1
        if steps == warmup:
            clock.sync()
            started = time.perf_counter()
        elif steps > warmup:
            clock.steps.append([t0, t1, t2, t3, t4, t5])
            samples += len(batch["labels"])
            tokens += batch["attention_mask"].sum()
    clock.sync()
    wall = time.perf_counter() - started
    phases = dict(zip(["data", "teacher", "forward", "backward", "optimizer"], clock.mean_ms()))
    return {"recipe": dataclasses.asdict(recipe), "lr": lr, "steps": steps - warmup, "samples": samples,
            "epochs": epochs if not seconds else None, "seconds": wall, "samples_per_s": samples / wall,
            "real_token_share": int(tokens) / (samples * recipe.pad_to) if recipe.pad_to else 1.0,
            "ms_per_step": phases, "mean_loss": float(loss_sum) / steps}


def _epoch(loader, epoch: int):
    """The loader's batches for `epoch` (length-grouped batches are reshuffled each epoch)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    yield from loader


def run_trial(recipe: Recipe, corpus_file: Path, teacher_name: str, seconds: float, device: str,
              epochs: int = 1, mkl_library: Path | None = None) -> dict:
    """One trial in a fresh process (a recipe may change process-wide settings); oneDNN's kernel
    cache as `import kd` sizes it, or at oneDNN's default; with `mkl_amd_kernels`, `mkl_library`
    (recipes/mkl_amd) preloaded."""
    command = [sys.executable, __file__, "--trial", json.dumps(dataclasses.asdict(recipe)),
               "--corpus-file", str(corpus_file), "--teacher-name", teacher_name, "--seconds", str(seconds),
               "--device", device, "--epochs", str(epochs)]
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY":
           os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] if recipe.kernel_cache else "1024",
           **({"LD_PRELOAD": str(mkl_library)} if recipe.mkl_amd_kernels else {})}
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
            print(f"  round {round_ + 1} {recipe.name:42s} {row['samples_per_s']:8.0f} samples/s  ms/step: "
                  + " ".join(f"{k} {v:.1f}" for k, v in row["ms_per_step"].items()), flush=True)
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
    lengths = np.array([len(i) for i in ids])
    corpus_stats = {"texts": len(texts), "tokenize_s": time.perf_counter() - started,
                    "tokens_median": float(np.median(lengths)), "tokens_p90": float(np.percentile(lengths, 90)),
                    "share_cut_at_200": float(np.mean(lengths >= 200))}
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


def trial(recipe: Recipe, corpus_file: Path, teacher_name: str, seconds: float, device: torch.device,
          epochs: int) -> dict:
    """One timed trial of `recipe`, in this (fresh) process."""
    corpus = pickle.loads(corpus_file.read_bytes())
    labels = corpus["labels"]
    names = [f"label{j}" for j in range(labels.shape[1])]
    cached = torch.randn(len(labels), labels.shape[1])  # speed does not depend on the values
    dataset = EncodedDataset(corpus["ids"], labels, cached)
    # Random weights: speed does not depend on them, and part 1 needs no hub cache.
    teacher = build_model(teacher_name, "random", names, role="teacher").eval() if recipe.online_teacher else None
    torch.manual_seed(0)
    trained = build_model(recipe.model, "random", names, role="student").train()
    return time_recipe(recipe, dataset, load_tokenizer(recipe.model), trained, teacher, seconds, device, epochs)


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
    teacher, tokenizer, _ = kd.models.load_classifier(teacher_dir)
    student = build_model("bert-tiny", "random", kd.models.label_names(teacher), role="student").eval()
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
    """training.md for `results`, whose trials ran WARMUP_STEPS untimed steps first."""
    return markdown(results, WARMUP_STEPS["cuda" if "gpu" in results else "cpu"])


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
                               torch.device(args.device), args.epochs)))
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
