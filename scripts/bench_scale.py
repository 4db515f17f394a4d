"""Scale: wall time and peak memory of each stage of a run at 100k, 1M and 5M rows.

Stages: reading the labelled shards, tokenizing, teacher labelling (soft targets), one student
epoch. Two data paths, each size in a fresh process (its peak resident memory its own):
  columns  this checkout: the labelled shards read one at a time into memory-mapped columns of
           texts, labels and ids (kd/stored_data.py), token ids in flat arrays saved and mapped
           back (kd/tokens.py), soft targets labelled in shards and mapped (kd/soft_targets.py)
  lists    the in-memory path of --baseline (a commit, run from `git archive` of its src/): token
           ids as Python lists of ints, soft targets one tensor; at the sizes it fits in memory
Then teacher labelling alone, on 1 and on 2 processes (`accelerate launch`), and tokenizing with
num_proc 1 and 2.

The corpus: GoEmotions-format TSV shards of 100,000 rows. Row i is the shipped sample's text
a = 7919 i mod n, a space, and the first half of the words of its text b = 104729 i + 1 mod n
(n = 4,000 sample texts), with text a's labels and the id s<i>: every row differs from its
neighbours, the length distribution stays the sample's, and no data leaves the project.
The teacher is BERT-Tiny-shaped (2 layers, hidden 128, random weights: speed does not depend on
them), the student 1 layer of hidden 64: the benchmark measures the data path, not the models.

    python scripts/bench_scale.py [--sizes 100000 1000000 5000000] [--lists-sizes 100000 1000000]

Writes docs/benchmarks/scale.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/goemotions-sample"
SHARD_ROWS = 100_000
MAX_LENGTH = 128


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    p.add_argument("--lists-sizes", type=int, nargs="*", default=[100_000, 1_000_000],
                   help="sizes to run the in-memory path of --baseline at")
    p.add_argument("--baseline", default="84b3eaf", help="commit whose in-memory path is the 'lists' rows")
    p.add_argument("--processes-size", type=int, default=1_000_000, help="rows for the 1 vs 2 process labelling")
    p.add_argument("--work", type=Path, default=Path("checkpoints/bench-scale"), help="corpus, models, caches")
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks")
    p.add_argument("--worker", nargs=3, metavar=("PATH", "SIZE", "STAGES"), help=argparse.SUPPRESS)
    return p.parse_args()


def write_corpus(folder: Path, rows: int) -> str:
    """Shards of the synthetic corpus (module docstring) with `rows` rows in all; returns their glob."""
    from kd.data.formats import read_labeled

    folder.mkdir(parents=True, exist_ok=True)
    pattern = str(folder / "train-*.tsv")
    if len(list(folder.glob("train-*.tsv"))) == -(-rows // SHARD_ROWS):
        return pattern
    sample = read_labeled(SAMPLE / "train.tsv", "goemotions", labels_file=SAMPLE / "emotions.txt")
    ids = [",".join(map(str, row.nonzero()[0])) for row in sample.labels]
    n = len(sample.texts)
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        with open(folder / f"train-{shard:05d}.tsv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            for i in range(start, min(start + SHARD_ROWS, rows)):
                a, b = (i * 7919) % n, (i * 104729 + 1) % n
                words = sample.texts[b].split()
                writer.writerow([f"{sample.texts[a]} {' '.join(words[:len(words) // 2])}", ids[a], f"s{i}"])
    return pattern


def make_models(folder: Path) -> tuple[Path, Path]:
    """Teacher (2 layers) and student (1 layer), hidden 32, random weights: small, so that the data path's
    cost shows and 5M rows fit in the benchmark's time."""
    import torch
    from transformers import BertConfig

    from kd.data.formats import read_label_names
    from kd.models.build import build_model
    from kd.models.hub import load_tokenizer
    from kd.models.saved import save_classifier

    teacher, student = folder / "teacher", folder / "student"
    if not (teacher / "config.json").is_file():
        torch.manual_seed(0)
        tokenizer = load_tokenizer("bert-tiny")
        for path, layers in ((teacher, 2), (student, 1)):
            BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=MAX_LENGTH).save_pretrained(path)
            tokenizer.save_pretrained(path)
        names = read_label_names(SAMPLE / "emotions.txt")
        save_classifier(build_model(str(teacher), "random", names), tokenizer, None, teacher)
    return teacher, student


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class AnonymousPeak(threading.Thread):
    """The process's peak anonymous resident memory (GiB), sampled every 50 ms: resident memory
    less the pages of memory-mapped files, which the kernel can drop and read again."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0

    def run(self) -> None:
        status = Path("/proc/self/status")
        while status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 2**20)
            time.sleep(0.05)


def worker(path: str, rows: int, stages: str, work: Path) -> None:
    """One (path, size) in this process: prints {stage: [seconds, peak GB after it]} as JSON."""
    from accelerate import Accelerator

    from kd.config.settings import Config, DataConfig, TrainConfig
    from kd.data.batches import EncodedDataset
    from kd.data.splits import load_splits
    from kd.data.tokens import TokenCache
    from kd.models.build import build_model
    from kd.models.saved import load_classifier
    from kd.runtime.context import RunContext
    from kd.runtime.report import Reporter
    from kd.teacher.logits_cache import train_logits
    from kd.training.loop import Objective, TrainingJob, fit

    accelerator = Accelerator(cpu=True, mixed_precision="no")
    with accelerator.main_process_first():
        corpus = write_corpus(work / "corpus" / str(rows), rows)
        teacher_dir, student_dir = make_models(work / "models")
    cache = Path(os.environ["CACHE"])  # fresh, one for all processes of a launch
    reporter = Reporter(accelerator.is_main_process)
    anonymous = AnonymousPeak()
    anonymous.start()
    result, started = {}, time.perf_counter()

    def stage(name: str) -> None:
        nonlocal started
        result[name] = [round(time.perf_counter() - started, 2), round(peak_gb(), 3), round(anonymous.peak, 3)]
        started = time.perf_counter()

    data_cfg = DataConfig(format="goemotions", train=corpus, val=str(SAMPLE / "dev.tsv"),
                          labels_file=str(SAMPLE / "emotions.txt"), max_length=MAX_LENGTH)
    read = (lambda: load_splits(data_cfg)) if path == "lists" else (lambda: load_splits(data_cfg, cache / "data"))
    train, val = read()
    stage("read")
    if path == "columns":
        train, val = read()  # mapped back from the columns just written
        stage("read again")
    tokens = (TokenCache() if path == "lists" else
              TokenCache(folder=cache / "tokens", num_proc=int(os.environ.get("NUM_PROC", "1")),
                         main_process_first=accelerator.main_process_first))
    cfg = Config(data=data_cfg, cache_dir=str(cache / "soft"))
    cfg.teacher.train.eval_batch_size = 256
    ctx = RunContext(cfg, accelerator, reporter, tokens, cache / "run")
    tokenizer = ctx.tokenizer("bert-tiny")
    ids = tokens(tokenizer, "train", train.texts)
    stage("tokenize")
    if stages == "tokenize":
        return print("RESULT " + json.dumps(result))
    teacher, _, _ = load_classifier(teacher_dir)
    logits, _ = train_logits(ctx, ctx.keep("teacher", teacher, tokenizer, teacher_dir), train)
    stage("label")
    if stages == "all":
        student = build_model(str(student_dir), "random", train.label_names)
        val_set = EncodedDataset(TokenCache()(tokenizer, "val", val.texts), val.labels)
        fit(ctx, TrainingJob("student", student, tokenizer, EncodedDataset(ids, train.labels, logits), val_set,
                             TrainConfig(epochs=1, batch_size=64, save_every_steps=0, lr=1e-3), cache / "student",
                             Objective(alpha=0.5, temperature=2.0)))
        stage("epoch")
    if accelerator.is_main_process:
        print("RESULT " + json.dumps(result))


def run_worker(path: str, rows: int, stages: str, args, src: Path | None = None, launch: int = 0,
               env: dict | None = None) -> dict | None:
    cache = Path(tempfile.mkdtemp(dir=args.work, prefix=f"cache-{path}-{rows}-"))
    env = {**os.environ, "CACHE": str(cache),
           **(env or {})}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    script = [str(Path(__file__).resolve()), "--work", str(args.work), "--worker", path, str(rows), stages]
    command = [sys.executable, *script] if not launch else [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch), "--num_machines", "1",
        *(["--multi_gpu"] if launch > 1 else []), "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "0", *script]
    print(f"-- {path} {rows:,} rows, {stages}{f', {launch} process(es)' if launch else ''}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    shutil.rmtree(cache, ignore_errors=True)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode or line is None:
        print(f"   failed ({done.returncode}): {done.stderr[-800:]}", flush=True)
        return None
    print(f"   {line[7:]}", flush=True)
    return json.loads(line[7:])


def baseline_src(commit: str, work: Path) -> Path:
    """The baseline commit's src/ folder, from git archive."""
    folder = work / f"src-{commit}"
    if not (folder / "src/kd").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def main() -> None:
    args = parse_args()
    args.work = args.work.resolve()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.worker[2], args.work)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    results: dict = {"columns": {}, "lists": {}, "labelling": {}, "tokenizing": {}}
    for rows in args.sizes:
        results["columns"][rows] = run_worker("columns", rows, "all", args)
    old = baseline_src(args.baseline, args.work)
    for rows in args.lists_sizes:
        results["lists"][rows] = run_worker("lists", rows, "all", args, src=old)
    rows = args.processes_size
    for processes in (1, 2):
        results["labelling"][processes] = run_worker("columns", rows, "label", args, launch=processes)
    for num_proc in (1, 2):
        results["tokenizing"][num_proc] = run_worker("columns", rows, "tokenize", args, env={"NUM_PROC": str(num_proc)})
    results["wall_min"] = round((time.perf_counter() - began) / 60, 1)
    write_report(results, args)


STAGES = ("read", "read again", "tokenize", "label", "epoch")


def _cells(result: dict | None, rows: int) -> list[str]:
    if result is None:
        return ["failed"] * (len(STAGES) + 1)
    cells = [f"{result[s][0]:,.1f} s ({1e6 * result[s][0] / rows:.1f} µs/row)" if s in result else "-"
             for s in STAGES]
    return cells + [f"{max(r[1] for r in result.values()):.2f} ({max(r[2] for r in result.values()):.2f})"]


def write_report(results: dict, args) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import cpu_name

    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Scale: reading, tokenizing, teacher labelling, one student epoch", "",
             "Command: `" + " ".join(["python scripts/bench_scale.py", *sys.argv[1:]]) + "`", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores. Wall time of this invocation: "
             f"{results['wall_min']} min. Written by `scripts/bench_scale.py`; its docstring says how the corpus "
             "and the models are made.", "",
             "Each cell: wall seconds of the stage, and per row. Peak memory: the process's peak resident set "
             "over the whole run in GiB (the pages of memory-mapped files it read count in it), and in brackets "
             "its peak anonymous memory: what stays when the kernel drops the mapped pages, which it can "
             "(they are read back from disk). Read again: the columns path maps the columns it wrote back.", "",
             "| path | rows | read | read again | tokenize | teacher labelling | one student epoch | peak GiB (anonymous) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path in ("columns", "lists"):
        for rows, result in results[path].items():
            lines.append(f"| {path} | {int(rows):,} | " + " | ".join(_cells(result, int(rows))) + " |")
    label, tokenize = ({int(k): v for k, v in results[part].items()} for part in ("labelling", "tokenizing"))
    if label.get(1) and label.get(2):
        one, two = label[1]["label"][0], label[2]["label"][0]
        lines += ["", f"Teacher labelling of {args.processes_size:,} rows under `accelerate launch`: 1 process "
                  f"{one:.1f} s, 2 processes {two:.1f} s: {one / two:.2f}x. Accelerate gives each process one "
                  "thread (its default `--num_cpu_threads_per_process`)."]
        whole = {int(k): v for k, v in results["columns"].items()}.get(args.processes_size)
        if whole:
            lines[-1] += (f" One process started directly, with both cores' threads, took {whole['label'][0]:.1f} s "
                          f"(the columns row above): {whole['label'][0] / two:.2f}x the 2 processes' time.")
    if tokenize.get(1) and tokenize.get(2):
        lines += ["", f"Tokenizing {args.processes_size:,} rows: num_proc 1 {tokenize[1]['tokenize'][0]:.1f} s, "
                  f"num_proc 2 {tokenize[2]['tokenize'][0]:.1f} s."]
    (args.out / "scale.md").write_text("\n".join(lines) + "\n")
    (args.out / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
