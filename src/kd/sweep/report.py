"""A sweep's results: runs.csv (one row per run), results.csv and results.md (the student's val
metrics per setting, mean ± sample std over seeds, best first) and PNG plots: bars.png (every
setting; runs that learn from the teacher and labels-only runs in two colours; the teacher as a
line) and, when distill.temperature is swept, temperature.png (metric vs T, a line per setting
of the other keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

METRICS = {"macro_auc": "macro AUC", "macro_f1_tuned": "macro F1 (tuned)", "bce": "BCE",
           "macro_f1": "macro F1 @0.5", "micro_f1": "micro F1", "exact_match": "exact match",
           "cross_entropy": "cross-entropy", "accuracy": "accuracy"}
SHOWN = ("macro_auc", "macro_f1_tuned", "bce")


def run_rows(runs) -> pd.DataFrame:
    """One row per finished run: its grid labels, seed, the student's val metrics and costs."""
    rows = []
    for sweep_run in runs:
        final = json.loads((sweep_run.folder / "final_metrics.json").read_text(encoding="utf-8"))
        student, distill = final["student"], sweep_run.config.distill
        rows.append({**sweep_run.setting, "seed": sweep_run.seed, "run": sweep_run.name,
                     **{m: student["val"].get(m) for m in METRICS},  # single-label has no exact match
                     "uses_teacher": distill.alpha > 0 or distill.matches_layers,
                     "parameters": student["parameters"], "train_time_s": student["train_time_s"],
                     "best_epoch": student["best_epoch"], "teacher_macro_auc": final["teacher"]["val"]["macro_auc"],
                     "teacher_macro_f1_tuned": final["teacher"]["val"]["macro_f1_tuned"]})
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Mean and sample std over seeds of every metric, per setting; best `metric` first."""
    grouped = rows.groupby(keys, sort=False)
    table = grouped[list(METRICS)].agg(["mean", "std"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    table["seeds"] = grouped.size()
    table["train_time_s"] = grouped["train_time_s"].mean()
    for column in ("uses_teacher", "parameters", "teacher_macro_auc", "teacher_macro_f1_tuned"):
        table[column] = grouped[column].first()
    table = table.reset_index()
    return table.sort_values(f"{metric}_mean", ascending=metric in ("bce", "cross_entropy"), kind="stable")


def _cell(mean: float, std: float) -> str:
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def markdown(sweep, table: pd.DataFrame, keys: list[str]) -> str:
    teachers = table[["teacher_macro_auc", "teacher_macro_f1_tuned"]].drop_duplicates()
    lines = [f"# Sweep `{sweep.name}`", "",
             f"`kd sweep {sweep.file}`: {int(table['seeds'].sum())} runs, the student's val metrics per "
             f"setting (mean ± sample std over seeds), best {METRICS[sweep.metric]} first.", ""]
    lines += [f"Teacher (val): macro AUC {auc:.4f}, macro F1 (tuned) {f1:.4f}." for auc, f1 in teachers.values]
    shown = SHOWN if table["bce_mean"].notna().any() else ("macro_auc", "macro_f1_tuned", "cross_entropy")  # single-label
    header = [*keys, *(METRICS[m] for m in shown), "learns from teacher", "parameters", "train s", "seeds"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in keys] + [_cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in shown]
        cells += ["yes" if row["uses_teacher"] else "no", f"{int(row['parameters']):,}",
                  f"{row['train_time_s']:.0f}", str(int(row["seeds"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _setting_label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{key.split('.')[-1]}={row[key]}" for key in keys)


def plot_bars(table: pd.DataFrame, keys: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = table.iloc[::-1]  # best at the top
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.35 * len(ordered)))
    colors = ["tab:blue" if kd else "tab:gray" for kd in ordered["uses_teacher"]]
    ax.barh([_setting_label(r, keys) for _, r in ordered.iterrows()], ordered[f"{metric}_mean"],
            xerr=ordered[f"{metric}_std"].fillna(0), color=colors, capsize=3)
    low = (ordered[f"{metric}_mean"] - ordered[f"{metric}_std"].fillna(0)).min()
    high = max((ordered[f"{metric}_mean"] + ordered[f"{metric}_std"].fillna(0)).max(),
               ordered["teacher_macro_auc"].max() if metric == "macro_auc" else -float("inf"))
    ax.set_xlim(low - 0.1 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
    if metric == "macro_auc":
        for auc in ordered["teacher_macro_auc"].unique():
            ax.axvline(auc, color="tab:red", linestyle="--", label=f"teacher {auc:.4f}")
    ax.bar(0, 0, color="tab:blue", label="learns from the teacher")
    ax.bar(0, 0, color="tab:gray", label="labels only")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"student val {METRICS[metric]} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_temperature(table: pd.DataFrame, keys: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in keys if k != "distill.temperature"]
    table = table.assign(T=pd.to_numeric(table["distill.temperature"])).sort_values("T")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, group in (table.groupby(others, sort=False) if others else [((), table)]):
        name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, label if isinstance(label, tuple) else (label,)))
        ax.errorbar(group["T"], group[f"{metric}_mean"], yerr=group[f"{metric}_std"].fillna(0),
                    marker="o", capsize=3, label=name or None)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(table["T"].unique()), [f"{t:g}" for t in sorted(table["T"].unique())])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel(f"student val {METRICS[metric]}")
    if others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep, runs, out: Path) -> None:
    """runs.csv, results.csv, results.md and the plots, in `out`."""
    if not runs:
        return
    out.mkdir(parents=True, exist_ok=True)
    keys = list(sweep.grid)
    rows = run_rows(runs)
    rows.to_csv(out / "runs.csv", index=False)
    table = summarize(rows, keys, sweep.metric)
    table.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(markdown(sweep, table, keys), encoding="utf-8")
    plot_bars(table, keys, sweep.metric, out / "bars.png")
    temperatures = sweep.grid.get("distill.temperature", {})
    if len(temperatures) > 1 and pd.to_numeric(pd.Series(list(temperatures)), errors="coerce").notna().all():
        plot_temperature(table, keys, sweep.metric, out / "temperature.png")
    print(markdown(sweep, table, keys))
