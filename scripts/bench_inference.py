"""Inference speed on this CPU: the reference approach against kd's exported models.

For each model (a BERT-Tiny-shaped student, a 2-layer MiniLM student, the MiniLM teacher)
and each way of running it:
  (a) reference: PyTorch, transformers tokenizer, every text padded to 200 tokens
  (b) PyTorch, dynamic length (kd.Classifier, backend torch)
  (c) ONNX Runtime fp32      (kd export --onnx, kd.Classifier)
  (d) ONNX Runtime int8      (kd export --quantize int8, kd.Classifier)
it measures single-text latency end to end (tokenization included; p50, p99) and batched
throughput, then serves the tiny student's int8 folder with `kd serve` and loads it from
a bounded generator on loopback. Writes docs/benchmarks/inference.{md,json}.

    python scripts/bench_inference.py --tiny DIR --l2 DIR --teacher DIR

A model not given is built untrained with the right shape (speed does not depend on the
weights; the int8 AUC check then means nothing, and the report says so).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from loadgen import free_port, run_load  # scripts/loadgen.py
from machine import cpu_name  # scripts/machine.py
from transformers.utils import logging as hf_logging

from kd.data.formats import read_labeled
from kd.deployment.classifier import Classifier
from kd.deployment.export import export_model
from kd.errors import KDError
from kd.models.build import build_model, count_parameters
from kd.models.hub import load_tokenizer
from kd.models.saved import load_classifier, save_classifier
from kd.runtime.cores import usable_cores

MODES = {"a": "PyTorch, pad to 200, reference", "b": "PyTorch, dynamic length",
         "c": "ONNX Runtime fp32", "d": "ONNX Runtime int8"}
SHAPES = {"tiny": ("bert-tiny", "random", None), "l2": ("minilm-l6", "teacher-layers", 2),
          "teacher": ("minilm-l6", "pretrained", None)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in SHAPES:
        p.add_argument(f"--{name}", type=Path, help=f"trained {name} model folder")
    p.add_argument("--data", type=Path, default=Path("data/goemotions-sample/dev.tsv"),
                   help="GoEmotions-format labelled file: texts for timing, labels for the int8 AUC check")
    p.add_argument("--labels-file", type=Path, default=Path("data/goemotions-sample/emotions.txt"))
    p.add_argument("--budget", type=float, default=20.0, help="seconds per measurement at most")
    p.add_argument("--server-seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3,
                   help="throughput and server runs per setting; the median is reported (noisy machines)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    return p.parse_args()


def untrained(name: str, labels: list[str], folder: Path) -> Path:
    model_name, init, layers = SHAPES[name]
    try:
        model = build_model(model_name, init, labels, num_layers=layers, teacher_name=model_name)
    except KDError:  # no hub cache with the weights: the same shape from random init
        model = build_model(model_name, "random", labels, num_layers=layers)
    tokenizer = load_tokenizer(model_name)
    tokenizer.model_max_length = 200  # the length kd trains at by default, as the reference pads to
    save_classifier(model, tokenizer, np.full(len(labels), 0.5), folder)
    return folder


def reference_runner(folder: Path):
    """The reference: the transformers tokenizer, pad to 200, the PyTorch model."""
    model, tokenizer, _ = load_classifier(folder)

    def run(texts: list[str]) -> np.ndarray:
        inputs = tokenizer(texts, padding="max_length", truncation=True, max_length=200,
                           return_tensors="pt")
        with torch.no_grad():
            return torch.sigmoid(model(**inputs).logits).numpy()
    return run


def latency(run, texts: list[str], budget: float) -> dict:
    for text in texts[:10]:
        run([text])
    times, deadline = [], time.perf_counter() + budget
    for text in texts:
        start = time.perf_counter()
        run([text])
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline and len(times) >= 50:
            break
    ms = np.array(times) * 1e3
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def throughput(run, texts: list[str], budget: float, repeats: int, chunk: int = 1024) -> float:
    """texts/s, the median of `repeats` passes over the texts (each cut short at `budget` s)."""
    run(texts[:64])
    rates = []
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while done < len(texts) and (time.perf_counter() - start < budget or done == 0):
            done += len(run(texts[done:done + chunk]))
        rates.append(done / (time.perf_counter() - start))
    return float(np.median(rates))


def bench_model(name: str, folder: Path, work: Path, texts: list[str], labelled, budget: float,
                repeats: int) -> dict:
    exports = {mode: work / f"{name}-{mode}" for mode in ("c", "d")}
    checks = {mode: export_model(folder, exports[mode], onnx=True,
                                 quantize="int8" if mode == "d" else None, labelled=labelled)["parity"]
              for mode in exports}
    runners = {"a": reference_runner(folder),
               "b": Classifier.from_pretrained(folder, backend="torch").predict_proba,
               "c": Classifier.from_pretrained(exports["c"]).predict_proba,
               "d": Classifier.from_pretrained(exports["d"]).predict_proba}
    result = {"folder": str(folder), "parameters": count_parameters(load_classifier(folder)[0]),
              "onnx_mb": {m: (exports[m] / "model.onnx").stat().st_size / 2**20 for m in exports},
              "parity": checks, "modes": {}}
    for mode, run in runners.items():
        row = latency(run, texts, budget)
        row["texts_per_s"] = throughput(run, texts * 4, budget, repeats)
        result["modes"][mode] = row
        print(f"{name:8s} ({mode}) {MODES[mode]:32s} p50 {row['p50_ms']:8.3f} ms  p99 "
              f"{row['p99_ms']:8.3f} ms  {row['texts_per_s']:9.0f} texts/s", flush=True)
    return result


def bench_server(folder: Path, texts: list[str], seconds: float, concurrency: int,
                 workers: int, repeats: int) -> dict:
    """One `kd serve` process tree under load: the median of `repeats` trials."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kd.cli", "serve", "--model", str(folder),
                               "--port", str(port), "--workers", str(workers)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while run_load("127.0.0.1", port, [b'{"texts": ["warm up"]}'], 1, 0.2).statuses[200] == 0:
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"kd serve did not start: {server.stdout.read().decode()}")
        bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
        run_load("127.0.0.1", port, bodies, concurrency, 2.0)  # warm-up
        trials = [run_load("127.0.0.1", port, bodies, concurrency, seconds).summary()
                  for _ in range(repeats)]
        summary = sorted(trials, key=lambda t: t["requests_per_s"])[len(trials) // 2]
        summary["trials_requests_per_s"] = [t["requests_per_s"] for t in trials]
    finally:
        server.terminate()
        server.wait()
    summary.update(concurrency=concurrency, seconds=seconds, workers=workers)
    print(f"server, {workers} worker(s): {summary['requests_per_s']:,.0f} requests/s, p50 "
          f"{summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, {summary['errors']} errors", flush=True)
    return summary


def markdown(results: dict) -> str:
    lines = ["# Inference speed", "", f"Command: `{results['command']}`", "",
             f"Machine: {results['machine']}", "",
             f"Texts: {results['texts']}. Latency is one text per call, end to end (tokenization "
             "included), in-process; p50 and p99 over the texts. Throughput: the texts four times over, "
             "1,024 per call (kd sorts them by length and batches up to 64; the reference batches "
             "64 in input order, padded to 200); the median of the repeats.", ""]
    for name, res in results["models"].items():
        ref = res["modes"]["a"]
        weights = "trained" if res["trained"] else "untrained, same shape"
        lines += [f"## {name}: {res['parameters']:,} parameters ({res['folder']}, {weights})", "",
                  "| mode | p50 ms | p99 ms | p50 speed-up vs (a) | texts/s batched | vs (a) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for mode, row in res["modes"].items():
            lines.append(f"| ({mode}) {MODES[mode]} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
                         f"{ref['p50_ms'] / row['p50_ms']:.1f}x | {row['texts_per_s']:,.0f} | "
                         f"{row['texts_per_s'] / ref['texts_per_s']:.1f}x |")
        for mode, check in res["parity"].items():
            auc = (f"; macro AUC {check['macro_auc_pytorch']:.4f} (PyTorch) vs "
                   f"{check['macro_auc_exported']:.4f}" if "macro_auc_exported" in check else "")
            lines.append(f"\n({mode}) {res['onnx_mb'][mode]:.1f} MB; max |Δ probability| vs PyTorch "
                         f"over {check['texts']} texts: {check['max_abs_prob_diff']:.2e}{auc}.")
        lines.append("")
    s = results["server"][0]
    lines += ["## Server", "", f"`kd serve --workers N` on the tiny student's int8 folder; "
              f"{s['concurrency']} keep-alive connections on loopback (`scripts/loadgen.py`), one text per "
              f"request, {s['seconds']:.0f} s after a 2 s warm-up; generator and server share the CPU. "
              "The median of the trials (requests/s of each trial in inference.json).", "",
              "| workers | requests/s | p50 ms | p99 ms | max ms | requests | errors |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['workers']} | {s['requests_per_s']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
              f"{s['max_ms']:.1f} | {s['requests']:,} | {s['errors']} |" for s in results["server"]]
    lines.append("")
    return "\n".join(lines + targets(results))


def targets(results: dict) -> list[str]:
    """The issue's targets for the BERT-Tiny-shaped student, each with the measured value."""
    tiny = results["models"]["tiny"]["modes"]
    s = max(results["server"], key=lambda row: row["requests_per_s"])
    best = max(("b", "c", "d"), key=lambda m: tiny[m]["texts_per_s"])
    checks = [("single text p50 ≤ 0.5 ms, int8 (d)", f"{tiny['d']['p50_ms']:.3f} ms", tiny["d"]["p50_ms"] <= 0.5),
              ("p50 ≥ 10x faster than (a)", f"{tiny['a']['p50_ms'] / tiny['d']['p50_ms']:.1f}x",
               tiny["a"]["p50_ms"] / tiny["d"]["p50_ms"] >= 10),
              ("≥ 8,000 texts/s batched", f"{tiny[best]['texts_per_s']:,.0f} ({best})",
               tiny[best]["texts_per_s"] >= 8000),
              ("server ≥ 2,000 requests/s", f"{s['requests_per_s']:,.0f} ({s['workers']} workers)",
               s["requests_per_s"] >= 2000),
              ("server p99 ≤ 20 ms", f"{s['p99_ms']:.1f} ms", s["p99_ms"] <= 20),
              ("server: zero errors", str(s["errors"]), s["errors"] == 0)]
    return ["## Targets (tiny student)", "", "| target | measured | met |", "|---|---:|:---:|"] + [
        f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks] + [""]


def main() -> None:
    args = parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    labelled = read_labeled(args.data, "goemotions", labels_file=args.labels_file)
    texts = labelled.texts
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    results = {"command": "python " + " ".join(sys.argv),
               "machine": f"{cpu_name()}, {usable_cores()} cores; torch "
                          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}",
               "texts": f"{len(texts)} from {args.data} (mean {np.mean([len(t) for t in texts]):.0f} characters)",
               "models": {}}
    try:
        for name in SHAPES:
            trained = getattr(args, name)
            folder = trained or untrained(name, labelled.label_names, work / name)
            # the int8 AUC check means something only for a trained model
            results["models"][name] = bench_model(name, folder, work, texts,
                                                  labelled if trained else None, args.budget,
                                                  args.repeats)
            results["models"][name]["trained"] = trained is not None
        results["server"] = [bench_server(work / "tiny-d", texts, args.server_seconds,
                                          args.concurrency, workers, args.repeats)
                             for workers in (1, 2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference.json").write_text(json.dumps(results, indent=2))
    (args.out / "inference.md").write_text(markdown(results))
    print(f"wrote {args.out / 'inference.md'} and inference.json")


if __name__ == "__main__":
    main()
