"""Model cards: the README.md of every model folder kd writes, in the Hugging Face format (YAML
metadata, then Markdown): labels, teacher, data files, val metrics of teacher and student, size,
speed and the exact command. `kd distill` writes one into teacher/ and student/; `kd export`
carries it into the export folder with what the export did."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import yaml

from kd.data.splits import Splits
from kd.deployment.classifier import Classifier
from kd.runtime.context import RunContext

CARD = "README.md"
SPEED_TEXTS = 256  # val texts timed for ms per text
invocation: list[str] | None = None  # the `kd` arguments of this process (kd.cli.main sets them)


def command_line() -> str:
    """The kd command this process runs, as a user would type it."""
    return " ".join(shlex.quote(a) for a in ["kd", *(invocation if invocation is not None else sys.argv[1:])])


def ms_per_text(folder: Path, texts: list[str]) -> float:
    """CPU milliseconds per text through kd.Classifier (PyTorch), batches of 64, after a warm-up."""
    clf = Classifier.from_pretrained(folder, backend="torch")
    clf.predict_proba(texts[:8])
    started = time.perf_counter()
    clf.predict_proba(texts)
    return 1000 * (time.perf_counter() - started) / max(len(texts), 1)


def _metric_rows(summary: dict) -> list[tuple[str, str]]:
    single = "accuracy" in summary["val"]
    keys = (["macro_auc", "macro_f1_tuned", "macro_f1", "accuracy_tuned", "accuracy"] if single
            else ["macro_auc", "macro_f1_tuned", "macro_f1", "micro_f1"])
    return [(key, summary["val"].get(key)) for key in keys]


def _metadata(role: str, summaries: dict, labels: list[str], single_label: bool, data: dict) -> dict:
    own = summaries[role]
    metrics = [{"type": key, "name": f"{key} (val)", "value": round(value, 4)}
               for key, value in _metric_rows(own) if value is not None]
    return {"library_name": "transformers", "pipeline_tag": "text-classification",
            "tags": ["text-classification", "single-label" if single_label else "multi-label",
                     "knowledge-distillation", "kd"],
            "model-index": [{"name": f"kd {role}", "results": [{
                "task": {"type": "text-classification"},
                "dataset": {"name": Path(data["train"]).name, "type": "custom"}, "metrics": metrics}]}]}


def write_run_cards(ctx: RunContext, data: Splits, summaries: dict) -> None:
    """The model-card stage: README.md of the run's student/ and, when the run fine-tuned it,
    teacher/; `summaries` has the "teacher" and "student" stage summaries."""
    cfg = ctx.cfg
    roles = ["student"] + ([] if summaries["teacher"].get("given") else ["teacher"])
    labels, single_label = data.train.label_names, data.train.single_label
    files = {"train": cfg.data.train, "val": cfg.data.val}
    texts = list(data.val.texts[:SPEED_TEXTS])
    speeds = {role: ms_per_text(Path(s["path"]), texts) if Path(s["path"]).is_dir() else None  # not a file of scores
              for role, s in summaries.items()}
    for role in roles:
        folder = Path(summaries[role]["path"])
        lines = ["---", yaml.safe_dump(_metadata(role, summaries, labels, single_label, files), sort_keys=False).strip(),
                 "---", "", f"# kd {role}: {'single' if single_label else 'multi'}-label text classifier", ""]
        if role == "student":
            lines += [f"Distilled by kd from the teacher `{summaries['teacher']['path']}` "
                      f"(alpha {cfg.distill.alpha}, temperature {cfg.distill.temperature}); its start: "
                      f"{summaries['student'].get('recipe', 'n/a')}.", ""]
        lines += _body(folder, role, summaries, labels, single_label, files, speeds)
        (folder / CARD).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _body(folder: Path, role: str, summaries: dict, labels: list[str], single_label: bool, data: dict,
          speeds: dict) -> list[str]:
    note = ("Single-label: the class predicted is the one whose logit plus its offset in "
            "`class_offsets.json` (tuned on val for macro F1; 0 for every class is the most probable "
            "class) is highest." if single_label else
            "Multi-label: a label is predicted when its sigmoid probability reaches its threshold in "
            "`thresholds.json` (tuned on val).")
    lines = ["## Labels", "", ", ".join(f"`{name}`" for name in labels), "", note, "",
             "## Data", "", f"- train: `{data['train']}`", f"- val: `{data['val'] or 'split off train'}`", "",
             "## Metrics on val", "", "| metric | " + " | ".join(summaries) + " |", "|---|" + "---:|" * len(summaries)]
    for key, _ in _metric_rows(summaries[role]):
        cells = [summaries[r]["val"].get(key) for r in summaries]
        lines.append(f"| {key} | " + " | ".join(_cell(c, "{:.4f}") for c in cells) + " |")
    lines += _calibration(summaries[role].get("calibration"), len(labels), single_label)
    return lines + [
        "", "## Size and speed", "", "| | " + " | ".join(summaries) + " |", "|---|" + "---:|" * len(summaries),
        "| parameters | " + " | ".join(_cell(s["parameters"], "{:,}") for s in summaries.values()) + " |",
        "| size on disk (MB) | " + " | ".join(_cell(s["size_mb"], "{:.1f}") for s in summaries.values()) + " |",
        "| CPU ms per text (batches of 64) | " + " | ".join(_cell(speeds[r], "{:.2f}") for r in summaries) + " |",
        "", "## How it was made", "", "```bash", command_line(), "```", "",
        "The resolved settings are in the run's `config.yaml`.", "", "## Use", "", "```python",
        "from transformers import pipeline",
        f'classify = pipeline("text-classification", model="{folder}", top_k=None)', "```"]


def _calibration(calibration: dict | None, labels: int, single_label: bool) -> list[str]:
    """The card's calibration section: the expected calibration error before and after, out of fold."""
    if not calibration:
        return []
    temperatures = 1 if single_label else labels
    return ["", "## Calibration", "",
            f"Expected calibration error on val: {calibration['ece_before']:.4f} as trained, "
            f"{calibration['ece_after']:.4f} with temperature scaling (out of fold: fitted on one half of val, "
            f"measured on the other). {calibration.get('kept', temperatures)} of {temperatures} temperature(s) kept "
            "in `calibration.json`; one that did not lower the error is 1. kd.Classifier, `kd predict` and "
            "`kd serve` apply them; transformers' pipeline does not."]


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def write_export_card(source: Path, out: Path, report: dict) -> None:
    """The source folder's card, when it has one, with a section on the export."""
    card = (source / CARD).read_text(encoding="utf-8") if (source / CARD).is_file() else (
        "---\nlibrary_name: kd\npipeline_tag: text-classification\n---\n\n# kd export\n")
    section = ["", "## Export", "", f"`{command_line()}`", "", "```json", json.dumps(report, indent=2), "```",
               "", "Load it with `kd.Classifier.from_pretrained(FOLDER)` (ONNX Runtime when `model.onnx` is here)."]
    (out / CARD).write_text(card.rstrip("\n") + "\n" + "\n".join(section) + "\n", encoding="utf-8")
