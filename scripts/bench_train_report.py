"""The report of scripts/bench_train.py: training.md from training.json (--render redoes it)."""

import numpy as np


def e2e_summary(result: dict) -> dict:
    """Median times and the mean ± sample std of epoch-3 dev quality over a run's seeds."""
    runs = result["runs"]
    auc = np.array([r["dev_by_epoch"][-1]["macro_auc"] for r in runs])
    return {"train_time_s": float(np.median([r["train_time_s"] for r in runs])),
            "time_with_eval_s": float(np.median([r["time_with_eval_s"] for r in runs])),
            "samples_per_s": float(np.median([r["samples_per_s"] for r in runs])),
            "auc": auc, "auc_mean": float(auc.mean()), "auc_std": float(auc.std(ddof=1)) if len(auc) > 1 else 0.0,
            "f1_mean": float(np.mean([r["dev_by_epoch"][-1]["macro_f1_tuned"] for r in runs]))}


def rate(rows: list[dict], prefix: str) -> float:
    """Samples/s of the row whose recipe name starts with `prefix`."""
    return next(r for r in rows if r["recipe"]["name"].startswith(prefix))["samples_per_s"]


def ladder_table(rows: list[dict], bases: tuple[str, ...] = ("(a)", "(c)")) -> list[str]:
    """One row per recipe, its rate against each base (the row whose name starts so)."""
    rates = [rate(rows, base) for base in bases]
    lines = [f"| recipe | settings changed | samples/s (median) | trials | "
             f"{' | '.join(f'vs {base}' for base in bases)} | epoch (s, from the rate) |",
             f"|---|---|---:|---|{'---:|' * len(bases)}---:|"]
    previous = None
    for r in rows:
        trials = " / ".join(f"{t:,.0f}" for t in r["trials_samples_per_s"])
        ratios = " | ".join(f"{r['samples_per_s'] / base:.1f}x" for base in rates)
        lines.append(f"| {r['recipe']['name']} | {changed(previous, r['recipe'])} | {r['samples_per_s']:,.0f} "
                     f"| {trials} | {ratios} | {r['epoch_s_estimate']:,.0f} |")
        previous = previous if r["recipe"]["name"].startswith("(b) with") else r["recipe"]
    return lines


def changed(before: dict | None, recipe: dict) -> str:
    """`recipe`'s settings that differ from `before`'s, as config keys (train.* for the student's)."""
    if before is None:
        return ", ".join(f"`train.{k}={v}`" for k, v in recipe["train"].items())
    keys = [f"`train.{k}={v}`" for k, v in recipe["train"].items() if before["train"].get(k, "unset") != v]
    keys += [f"`{k}={recipe[k]}`" for k in ("mixed_precision", "online_teacher", "distill", "mkl_amd_kernels")
             if recipe[k] != before[k]]
    return ", ".join(keys).replace("None", "null")


def kd_row(rows: list[dict]) -> dict:
    return next(r for r in rows if "(b) kd default" in r["recipe"]["name"])


def targets(results: dict) -> list[str]:
    """The issue's CPU targets, met or not (its GPU figures: gpu_summary)."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    for corpus, ladder_result in results["ladder"].items():
        rows = ladder_result["rows"]
        b = kd_row(rows)["samples_per_s"]
        for ref, goal in (("(a)", 20), ("(c)", 8)):
            base = rate(rows, ref)
            lines.append(f"| {corpus}: (b)/{ref} >= {goal}x | {b / base:.1f}x | {'yes' if b / base >= goal else 'no'} |")
        epoch_rate = ladder_result["whole_epoch"]["samples_per_s"]
        c = rate(rows, "(c)")
        lines.append(f"| {corpus}: (b) over one whole epoch / (c) >= 8x | {epoch_rate / c:.1f}x "
                     f"| {'yes' if epoch_rate / c >= 8 else 'no'} |")
    e2e = results.get("end_to_end")
    if e2e:
        kd_run, ref = e2e_summary(e2e["kd_default"]), e2e_summary(e2e["reference_numerics"])
        t = kd_run["train_time_s"]
        lines.append(f"| 3 distillation epochs, GoEmotions train, < 75 s | {t:.1f} s, median of {len(kd_run['auc'])} seeds "
                     f"({kd_run['time_with_eval_s']:.1f} s with 3 dev evaluations) | {'yes' if t < 75 else 'no'} |")
        for name in ("kd_default", "kd_default_in_bf16", "kd_default_in_fp32"):
            if name in e2e:
                lines.append(quality_target(name, e2e_summary(e2e[name]), ref))
    return lines


def quality_target(name: str, run: dict, ref: dict) -> str:
    """The issue's quality target for one part-2 run: its mean dev macro AUC at epoch 3 against
    the reference numerics'."""
    gap = run["auc_mean"] - ref["auc_mean"]
    met = "yes" if abs(gap) <= 0.003 else "better by more than 0.003" if gap > 0 else "no"
    return (f"| quality unchanged ({name}): mean dev macro AUC at epoch 3 within 0.003 of the reference "
            f"| {gap:+.4f} (seed std {run['auc_std']:.4f} and {ref['auc_std']:.4f}) | {met} |")


def gpu_summary(results: dict) -> list[str]:
    """What the issue asks of a GPU: student and teacher training rates and 3 student epochs on
    the 160k corpus."""
    lines = ["| corpus | (b) samples/s | (b)/(a) | (b)/(c) | teacher training "
             "samples/s: reference / kd | 3 whole epochs of (b) |", "|---|---:|---:|---:|---:|---:|"]
    for corpus, ladder_result in results["ladder"].items():
        rows, epochs = ladder_result["rows"], ladder_result["whole_epoch"]
        b = kd_row(rows)
        teacher = " / ".join(f"{r['samples_per_s']:,.0f}" for r in ladder_result["teacher_rows"])
        lines.append(f"| {corpus} | {b['samples_per_s']:,.0f} | {b['samples_per_s'] / rate(rows, '(a)'):.1f}x "
                     f"| {b['samples_per_s'] / rate(rows, '(c)'):.1f}x | {teacher} "
                     f"| {epochs['seconds']:.1f} s ({epochs['samples_per_s']:,.0f} samples/s) |")
    return lines + ["", "The reference needed 432 s for 3 student epochs on the 160k corpus on a 2021 Colab GPU."]


def markdown(results: dict) -> str:
    """training.md for bench_train.py's `results`."""
    commands = ", then ".join(f"`{c}`" for c in [results["command"], *results.get("end_to_end_commands", [])])
    gpu = results.get("gpu")
    machine = (f"{gpu}, host CPU {results['cpu']}" if gpu else f"{results['cpu']}, {results['threads']} torch "
               "threads, no GPU")
    out = ["# Training speed", "", f"Command: {commands}", "",
           f"Machine: {machine}, torch {results['torch']}; kd's default precision here (mixed_precision=auto): "
           f"{results['kd_precision']}. Written by `scripts/bench_train.py`; its docstring says what (a), (b) "
           "and (c) are.", "", *(["## GPU", "", *gpu_summary(results)] if gpu else ["## Targets", "", *targets(results)]),
           ""]
    for corpus, ladder_result in results["ladder"].items():
        rows, epochs = ladder_result["rows"], ladder_result["whole_epoch"]
        out += [f"## Ladder: {corpus}", "",
                f"{ladder_result['texts']:,} texts; tokens per text: median {ladder_result['tokens_median']:.0f}, "
                f"90th percentile {ladder_result['tokens_p90']:.0f}, {ladder_result['share_cut_at_200']:.1%} cut at "
                f"200. Tokenized once (Rust tokenizer) in {ladder_result['tokenize_s']:.1f} s before training. "
                "Each row changes one setting of the row above (the `(b) with` rows change (b)); every row "
                "trains the same BERT-Tiny-shaped student from the same init through kd's `train.fit`, "
                "each trial in a fresh process: a fit of 3 batches to warm up, then one epoch of a random "
                f"subset sized to last about {ladder_result['trial_seconds']:.0f} s (its training time, "
                "without evaluation), in round-robin rounds; the median round is shown.", "",
                *ladder_table(rows), "",
                f"In (c), real tokens are {ladder_result['real_token_share_at_200']:.0%} of those the model "
                f"computes on: removing all padding can make the model's part of a step at most "
                f"{1 / ladder_result['real_token_share_at_200']:.1f}x faster, since on a CPU its cost grows "
                "with the tokens.", "",
                f"(b) over {epochs.get('epochs') or 1} whole epoch(s) of all {epochs['rows']:,} texts (after "
                f"the warm-up fit): {epochs['seconds']:,.1f} s, {epochs['samples_per_s']:,.0f} samples/s.", ""]
        if ladder_result.get("teacher_rows"):
            out += ["The MiniLM-L6 teacher's own training (alpha = 0), timed the same way:", "",
                    *ladder_table(ladder_result["teacher_rows"], bases=("teacher: reference",)), ""]
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
        if "kd_default_in_bf16" in e2e and results["kd_precision"] == "fp32":  # auto: bf16 is emulated here
            out += ["kd_default_in_bf16 trains in bf16 autocast on a CPU that emulates bf16: its times are not "
                    "those of a CPU with native bf16 (AVX512-BF16 or AMX), where `auto` picks bf16; its quality "
                    "is, since autocast rounds the same operands to bf16 on any CPU.", ""]
    if not gpu:
        out += ["## GPU", "", "Not measured by this run, which had no GPU: `--device cuda` measures it "
                "(the script's docstring).", ""]
    return "\n".join(out)
