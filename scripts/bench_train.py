"""Training speed on this machine: the reference recipe against kd's default, side by side.

  (c) reference fine-tuning:   every text padded to 200 tokens, fp32, batch 16, AdamW (for-loop)
  (a) reference distillation:  (c) plus the teacher run online at every student step
  (b) kd's default pipeline:   cached teacher logits, batches padded to their longest row and
                               grouped by length, fused AdamW, fast dropout masks (hidden states
                               and attention), freed memory kept by the allocator, the last
                               layer run for the [CLS] row only, a sparse word-embedding
                               gradient, bf16 autocast where the CPU computes bf16 natively
                               (mixed_precision=auto) with every batch shape's oneDNN kernels
                               kept (`import kd` sizes the cache), batch and lr of configs/base.yaml

for the BERT-Tiny-shaped student (random init) and the MiniLM-L6 teacher, on GoEmotions train
and on a synthetic Jigsaw-sized corpus. Part 1 times a ladder of recipes from (c) to (b), one
technique added per row, in a step loop that splits each step into data, teacher, forward,
backward and optimizer time; then (b) over one whole epoch, every batch shape's first use
included. Part 2 runs `kd distill` (student stage, 3 epochs, GoEmotions,
the fine-tuned teacher's cached logits) with kd's defaults, with the reference's numerics
(batch 16, unsorted batches, fp32), in fp32 where kd's default is bf16, and with the opt-in
lazy embedding update, each over 3 seeds, and compares time and dev quality at equal epochs.

    HF_HUB_CACHE=$PWD/../shared/hf-cache HF_HUB_OFFLINE=1 python scripts/bench_train.py \\
        --teacher checkpoints/bench-cache/runs/goemotions-teacher/teacher

Writes docs/benchmarks/training.{md,json}.
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

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging as hf_logging

import kd
from kd.config import load_config
from kd.batches import EncodedDataset, make_loader
from kd.data import encode, read_labeled
from kd.distill import run
from kd.evaluate import MODEL_INPUTS
from kd.losses import distillation_loss
from kd.models import build_model, default_lr, load_tokenizer
from kd.report import cpu_name
from kd.runtime import precision_name, resolve_mixed_precision
from kd.dropout import use_fast_dropout
from kd.first_token import use_first_token_last_layer
from kd.optim import clip_grad_norm, make_optimizer, use_sparse_embedding_gradient
from kd.runtime import keep_freed_memory

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
    first_token_last_layer: bool = False
    sparse_embedding_gradient: bool = False
    lazy_embedding_update: bool = False
    batch_size: int = 16
    bf16: bool = False
    kernel_cache: bool = False  # oneDNN keeps kd's number of kernels, not its default 1,024
    embedding_update: bool = True  # False: the word embedding table is frozen


def ladder(kd_batch: int, bf16: bool) -> list[Recipe]:
    """(c), (a), then one technique at a time up to kd's default (b), in bf16 autocast where `bf16`;
    then variants of (b) that kd does not use by default: bf16 where kd's default is fp32, the
    lazy embedding update (opt-in: it costs dev AUC, see part 2), and no update of the word
    embedding table at all (the floor for any embedding update)."""
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
             *([("+ bf16 autocast", {"bf16": True}), ("+ oneDNN kernels kept", {"kernel_cache": True})]
               if bf16 else [])]
    recipes = [c, a]
    for i, (name, change) in enumerate(steps):
        name += ": (b) kd default" if i == len(steps) - 1 else ""
        recipes.append(dataclasses.replace(recipes[-1], name=name, **change))
    b = recipes[-1]
    other_precision = [] if bf16 else [dataclasses.replace(b, name="(b) with bf16 autocast", bf16=True,
                                                           kernel_cache=True)]
    return recipes + other_precision + [
        dataclasses.replace(b, name="(b) with the lazy embedding update", lazy_embedding_update=True),
        dataclasses.replace(b, name="(b) without the embedding update", embedding_update=False)]


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
                seconds: float | None) -> dict:
    """Train `student` with `recipe` for `seconds` (0 or None: one whole epoch); samples/s and ms per step
    in each phase. The loop keeps the loss on the device, as kd's does: no host sync per step."""
    torch.manual_seed(0)
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
                         group_by_length=recipe.group_by_length)
    phases = dict.fromkeys(["data", "teacher", "forward", "backward", "optimizer"], 0.0)
    steps = samples = tokens = 0
    loss_sum = torch.zeros(())
    batches = iter(loader)
    warmup, started = 3, None
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None or (seconds and started and t0 - started > seconds):
            break
        batch = pad_to(batch, recipe.pad_to, tokenizer.pad_token_id)
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        t1 = time.perf_counter()
        teacher_logits = None
        if recipe.distill:
            if recipe.online_teacher:
                with torch.no_grad():
                    teacher_logits = teacher(**inputs).logits
            else:
                teacher_logits = batch["teacher_logits"]
        t2 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            logits = student(**inputs).logits
        loss = distillation_loss(logits.float(), batch["labels"], teacher_logits,
                                 0.5 if recipe.distill else 0.0, 2.0)
        t3 = time.perf_counter()
        loss.backward()
        clip_grad_norm(student.parameters(), 1.0)
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        loss_sum += loss.detach()
        t5 = time.perf_counter()
        steps += 1
        if steps == warmup:
            started = t5
            continue
        if steps > warmup:
            for key, (start, end) in zip(phases, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]):
                phases[key] += end - start
            samples += len(batch["labels"])
            tokens += int(batch["attention_mask"].sum())
    wall = time.perf_counter() - started
    return {"recipe": dataclasses.asdict(recipe), "lr": lr, "steps": steps - warmup, "samples": samples,
            "seconds": wall, "samples_per_s": samples / wall, "real_token_share":
            tokens / (samples * recipe.pad_to) if recipe.pad_to else 1.0,
            "ms_per_step": {k: 1e3 * v / (steps - warmup) for k, v in phases.items()},
            "mean_loss": float(loss_sum) / steps}


def run_trial(recipe: Recipe, corpus_file: Path, teacher_name: str, seconds: float) -> dict:
    """One trial in a fresh process (a recipe may change process-wide settings); oneDNN's kernel
    cache as `import kd` sizes it, or at oneDNN's default."""
    command = [sys.executable, __file__, "--trial", json.dumps(dataclasses.asdict(recipe)),
               "--corpus-file", str(corpus_file), "--teacher-name", teacher_name, "--seconds", str(seconds)]
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY":
           os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] if recipe.kernel_cache else "1024"}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.splitlines()[-1])


def run_ladder(corpus: str, texts: list[str], labels: np.ndarray, teacher_name: str,
               seconds: float, rounds: int, kd_batch: int, bf16: bool, work: Path) -> dict:
    """Time every recipe `rounds` times, round-robin so that a slow minute of the machine hits
    every recipe; then (b) over one whole epoch."""
    started = time.perf_counter()
    ids = encode(load_tokenizer("bert-tiny"), texts, 200)
    lengths = np.array([len(i) for i in ids])
    corpus_stats = {"texts": len(texts), "tokenize_s": time.perf_counter() - started,
                    "tokens_median": float(np.median(lengths)), "tokens_p90": float(np.percentile(lengths, 90)),
                    "share_cut_at_200": float(np.mean(lengths >= 200))}
    print(f"{corpus}: {corpus_stats}", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    corpus_file = work / f"ladder-{corpus}.pkl"
    corpus_file.write_bytes(pickle.dumps({"ids": ids, "labels": labels}))
    recipes = ladder(kd_batch, bf16)
    trials: list[list[dict]] = [[] for _ in recipes]
    for round_ in range(rounds):
        for recipe, recipe_trials in zip(recipes, trials):
            recipe_trials.append(run_trial(recipe, corpus_file, teacher_name, seconds))
            row = recipe_trials[-1]
            print(f"  round {round_ + 1} {recipe.name:42s} {row['samples_per_s']:8.0f} samples/s  ms/step: "
                  + " ".join(f"{k} {v:.1f}" for k, v in row["ms_per_step"].items()), flush=True)
    rows = []
    for recipe_trials in trials:  # the median trial of each recipe, with every trial's rate
        row = sorted(recipe_trials, key=lambda r: r["samples_per_s"])[len(recipe_trials) // 2]
        row["trials_samples_per_s"] = [r["samples_per_s"] for r in recipe_trials]
        row["epoch_s_estimate"] = len(texts) / row["samples_per_s"]
        rows.append(row)
    whole_epoch = run_trial(next(r for r in recipes if "(b) kd default" in r.name), corpus_file, teacher_name, 0.0)
    print(f"  (b) over one whole epoch: {whole_epoch['samples_per_s']:.0f} samples/s", flush=True)
    return {**corpus_stats, "rows": rows, "trial_seconds": seconds, "whole_epoch": whole_epoch}


def trial(recipe: Recipe, corpus_file: Path, teacher_name: str, seconds: float) -> dict:
    """One timed trial of `recipe`, in this (fresh) process."""
    corpus = pickle.loads(corpus_file.read_bytes())
    labels = corpus["labels"]
    names = [f"label{j}" for j in range(labels.shape[1])]
    cached = torch.randn(len(labels), labels.shape[1])  # speed does not depend on the values
    dataset = EncodedDataset(corpus["ids"], labels, cached)
    teacher = build_model(teacher_name, "pretrained", names, role="teacher").eval() if recipe.online_teacher else None
    torch.manual_seed(0)
    student = build_model("bert-tiny", "random", names, role="student").train()
    return time_recipe(recipe, dataset, load_tokenizer("bert-tiny"), student, teacher, seconds)


def end_to_end(data_dir: Path, teacher: Path, cache_dir: Path, work: Path, name: str,
               overrides: list[str], train_rows: int, seed: int) -> dict:
    """`kd distill`'s student stage, 3 epochs on GoEmotions train, scored on dev after each."""
    run_dir = work / f"{name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(["configs/goemotions.yaml"], [
            f"data.train={data_dir}/goemotions/train.tsv", f"data.val={data_dir}/goemotions/dev.tsv",
            f"data.labels_file={data_dir}/goemotions/emotions.txt", f"teacher.path={teacher}",
            "student.name=bert-tiny", "student.init=random", "student.train.epochs=3",
            f"cache_dir={cache_dir}", f"output_dir={work}", f"run_name={run_dir.name}", f"seed={seed}", *overrides])
    run(cfg)
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


def end_to_end_runs(args: argparse.Namespace, train_rows: int, bf16: bool) -> dict:
    """Part 2: the reference's numerics, kd's defaults (and, where they train in bf16, the same in
    fp32) and the lazy embedding update, each over --e2e-seeds seeds, round-robin by seed."""
    runs = {"reference_numerics": ["student.train.batch_size=16", "student.train.group_by_length=false",
                                   "student.train.lr=1e-3", "mixed_precision=no"],
            "kd_default": [],
            **({"kd_default_in_fp32": ["mixed_precision=no"]} if bf16 else {}),
            "lazy_embedding_update": ["student.train.lazy_embedding_update=true"]}
    results = {name: {"overrides": overrides, "runs": []} for name, overrides in runs.items()}
    for seed in range(args.e2e_seeds):
        for name, overrides in runs.items():
            results[name]["runs"].append(end_to_end(
                args.data_dir, args.teacher, args.cache_dir, args.work, name.replace("_", "-"), overrides,
                train_rows, seed))
    return results


def e2e_summary(result: dict) -> dict:
    """Median times and the mean ± sample std of epoch-3 dev quality over a run's seeds."""
    runs = result["runs"]
    auc = np.array([r["dev_by_epoch"][-1]["macro_auc"] for r in runs])
    return {"train_time_s": float(np.median([r["train_time_s"] for r in runs])),
            "time_with_eval_s": float(np.median([r["time_with_eval_s"] for r in runs])),
            "samples_per_s": float(np.median([r["samples_per_s"] for r in runs])),
            "auc": auc, "auc_mean": float(auc.mean()), "auc_std": float(auc.std(ddof=1)) if len(auc) > 1 else 0.0,
            "f1_mean": float(np.mean([r["dev_by_epoch"][-1]["macro_f1_tuned"] for r in runs]))}


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


def ladder_table(rows: list[dict]) -> list[str]:
    a = next(r for r in rows if r["recipe"]["name"].startswith("(a)"))["samples_per_s"]
    c = next(r for r in rows if r["recipe"]["name"].startswith("(c)"))["samples_per_s"]
    lines = ["| recipe | samples/s (median) | trials | vs (a) | vs (c) | epoch (s, from the rate) | ms/step: data "
             "| teacher | forward | backward | optimizer |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["ms_per_step"]
        trials = " / ".join(f"{t:,.0f}" for t in r["trials_samples_per_s"])
        lines.append(f"| {r['recipe']['name']} | {r['samples_per_s']:,.0f} | {trials} | {r['samples_per_s'] / a:.1f}x "
                     f"| {r['samples_per_s'] / c:.1f}x | {r['epoch_s_estimate']:,.0f} | "
                     + " | ".join(f"{ms[k]:.1f}" for k in ("data", "teacher", "forward", "backward", "optimizer"))
                     + " |")
    return lines


def kd_row(rows: list[dict]) -> dict:
    return next(r for r in rows if "(b) kd default" in r["recipe"]["name"])


def targets(results: dict) -> list[str]:
    lines = ["| target | measured | met |", "|---|---|---|"]
    for corpus, ladder_result in results["ladder"].items():
        rows = ladder_result["rows"]
        b = kd_row(rows)["samples_per_s"]
        for ref, goal in (("(a)", 20), ("(c)", 8)):
            base = next(r for r in rows if r["recipe"]["name"].startswith(ref))["samples_per_s"]
            lines.append(f"| {corpus}: (b)/{ref} >= {goal}x | {b / base:.1f}x | {'yes' if b / base >= goal else 'no'} |")
        epoch_rate = ladder_result["whole_epoch"]["samples_per_s"]
        c = next(r for r in rows if r["recipe"]["name"].startswith("(c)"))["samples_per_s"]
        lines.append(f"| {corpus}: (b) over one whole epoch / (c) >= 8x | {epoch_rate / c:.1f}x "
                     f"| {'yes' if epoch_rate / c >= 8 else 'no'} |")
    e2e = results.get("end_to_end")
    if e2e:
        kd_run, ref = e2e_summary(e2e["kd_default"]), e2e_summary(e2e["reference_numerics"])
        t = kd_run["train_time_s"]
        lines.append(f"| 3 distillation epochs, GoEmotions train, < 75 s | {t:.1f} s, median of {len(kd_run['auc'])} seeds "
                     f"({kd_run['time_with_eval_s']:.1f} s with 3 dev evaluations) | {'yes' if t < 75 else 'no'} |")
        gap = kd_run["auc_mean"] - ref["auc_mean"]
        lines.append(f"| quality unchanged: mean dev macro AUC at epoch 3 within 0.003 of the reference | {gap:+.4f} "
                     f"(seed std {kd_run['auc_std']:.4f} and {ref['auc_std']:.4f}) | "
                     + ("yes |" if abs(gap) <= 0.003 else "better by more than 0.003 |" if gap > 0 else "no |"))
    return lines


def markdown(results: dict) -> str:
    commands = f"`{results['command']}`" + (f", then part 2 again with `{results['end_to_end_command']}`"
                                           if "end_to_end_command" in results else "")
    out = ["# Training speed", "", f"Command: {commands}", "",
           f"Machine: {results['cpu']}, {results['threads']} torch threads, torch {results['torch']}, "
           f"no GPU; kd's default precision here (mixed_precision=auto): {results['kd_precision']}. Written by `scripts/bench_train.py`; its docstring says what (a), (b) and (c) are.",
           "", "## Targets", "", *targets(results), ""]
    for corpus, ladder_result in results["ladder"].items():
        rows, b = ladder_result["rows"], kd_row(ladder_result["rows"])
        step = sum(b["ms_per_step"].values())
        shares = ", ".join(f"{k} {v / step:.0%}" for k, v in b["ms_per_step"].items() if k != "teacher")
        out += [f"## Ladder: {corpus}", "",
                f"{ladder_result['texts']:,} texts; tokens per text: median {ladder_result['tokens_median']:.0f}, "
                f"90th percentile {ladder_result['tokens_p90']:.0f}, {ladder_result['share_cut_at_200']:.1%} cut at "
                f"200. Tokenized once (Rust tokenizer) in {ladder_result['tokenize_s']:.1f} s before training. "
                "Each row adds one technique to the row above; every row trains the same BERT-Tiny-shaped "
                "student from the same init, timed over its first steps after 3 warm-up steps, in "
                "round-robin rounds, each trial in a fresh process; the median round is shown.", "",
                *ladder_table(rows), "",
                f"In (c), real tokens are {rows[0]['real_token_share']:.0%} of those the model computes on: "
                f"removing all padding can make the model's part of a step at most "
                f"{1 / rows[0]['real_token_share']:.1f}x faster, since on a CPU its cost grows with the tokens.", "",
                f"(b) over one whole epoch ({ladder_result['whole_epoch']['steps']:,} steps after the 3 warm-up "
                f"steps, the first use of every batch shape included): "
                f"{ladder_result['whole_epoch']['samples_per_s']:,.0f} samples/s. The rows above time an epoch's "
                f"first {ladder_result['trial_seconds']:.0f} seconds only, where most batch shapes are new.", "",
                f"Where a step of (b) goes ({step:.1f} ms at batch {b['recipe']['batch_size']}): {shares}. "
                "Host syncs: none per step (the loss is summed on the device; kd reads it once per epoch). "
                "On a CPU they cost nothing anyway: the ops run synchronously.", ""]
    e2e = results.get("end_to_end")
    if e2e:
        eq = results["equivalence"]
        out += ["## End to end: `kd distill`, student stage, 3 epochs on GoEmotions train", "",
                "The fine-tuned MiniLM-L6 teacher's cached logits; BERT-Tiny-shaped student from random "
                "init; scored on GoEmotions dev after every epoch. `reference numerics` computes what "
                "(a) computes (batch 16, unsorted batches, BERT-Tiny's usual lr 1e-3) without its waste: padding to 200 and running "
                "the teacher online change the numbers only by float rounding "
                f"(measured on {eq['texts']} texts: teacher logits differ by at most "
                f"{eq['max_abs_teacher_logit_diff']:.1e}, the loss by at most {eq['max_abs_loss_diff']:.1e}).", "",
                "Each run is repeated with seeds 0, 1, ... (student init, dropout and batch order); times are "
                "medians over seeds, quality is at epoch 3.", "",
                "| run | overrides | train time | with evaluation | samples/s | dev macro AUC per seed "
                "| mean ± std | dev macro F1 (tuned), mean |", "|---|---|---:|---:|---:|---|---|---:|"]
        for name, result in e2e.items():
            summary = e2e_summary(result)
            out.append(f"| {name} | `{' '.join(result['overrides']) or '(none)'}` | {summary['train_time_s']:.1f} s "
                       f"| {summary['time_with_eval_s']:.1f} s | {summary['samples_per_s']:,.0f} "
                       f"| {' / '.join(f'{a:.4f}' for a in summary['auc'])} "
                       f"| {summary['auc_mean']:.4f} ± {summary['auc_std']:.4f} | {summary['f1_mean']:.4f} |")
        out.append("")
    out += ["## GPU", "", "Not measured: no GPU was available to this run.", ""]
    return "\n".join(out)


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
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--render", action="store_true", help="only rewrite training.md from --out/training.json")
    p.add_argument("--trial", help=argparse.SUPPRESS)  # internal: one ladder trial, a Recipe as JSON
    p.add_argument("--corpus-file", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.trial:
        hf_logging.set_verbosity_error()
        print(json.dumps(trial(Recipe(**json.loads(args.trial)), args.corpus_file, args.teacher_name, args.seconds)))
        return
    if args.render:
        (args.out / "training.md").write_text(markdown(json.loads((args.out / "training.json").read_text())))
        return
    hf_logging.set_verbosity_error()
    defaults = load_config()
    kd_batch = defaults.student.train.batch_size
    bf16 = resolve_mixed_precision(defaults.mixed_precision, torch.device("cpu")) == "bf16"
    train = read_labeled(args.data_dir / "goemotions/train.tsv", "goemotions",
                         labels_file=args.data_dir / "goemotions/emotions.txt")
    command = "python " + " ".join(sys.argv)
    if args.only_end_to_end:  # part 1 as --out's training.json has it
        if not (args.out / "training.json").is_file():
            sys.exit(f"--only-end-to-end: no {args.out / 'training.json'} to take part 1 from; run without it first")
        results = json.loads((args.out / "training.json").read_text())
        results["end_to_end_command"] = command
    else:
        results = {"command": command, "cpu": cpu_name(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "kd_batch": kd_batch, "ladder": {},
                   "kd_precision": precision_name(defaults.mixed_precision, torch.device("cpu"))}
        jigsaw_texts, jigsaw_labels = synthetic_jigsaw(" ".join(train.texts).split(), args.jigsaw_rows, seed=0)
        for corpus, texts, labels in [("goemotions", train.texts, train.labels),
                                      ("jigsaw_synthetic", jigsaw_texts, jigsaw_labels)]:
            results["ladder"][corpus] = run_ladder(corpus, texts, labels, args.teacher_name,
                                                   args.seconds, args.rounds, kd_batch, bf16, args.work)
    if not args.skip_end_to_end:
        if not (args.teacher / "config.json").is_file():
            sys.exit(f"no fine-tuned teacher at {args.teacher}: see docs/benchmarks/README.md")
        results["equivalence"] = padding_equivalence(args.teacher, train.texts[:512])
        results["end_to_end"] = end_to_end_runs(args, len(train), bf16)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "training.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
