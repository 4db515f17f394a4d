"""The `kd` command: distill, pretrain, sweep, evaluate, predict, export, serve.

Errors a user can fix print as one line on stderr with exit code 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kd.errors import KDError, one_line


def _run_parser(sub, name: str, help: str, description: str):
    """kd distill and kd pretrain: the same config, CLI overrides and --resume."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML config (repeatable; later files override earlier ones)")
    p.add_argument("--teacher", help="teacher model: alias, hub id or folder (= teacher.name)")
    p.add_argument("--student", help="student model: alias, hub id or folder (= student.name)")
    p.add_argument("--resume", metavar="RUN_FOLDER",
                   help="continue an interrupted run from its saved state (with its own config)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. distill.alpha=0.7")
    return p


def _own_data_arguments(p) -> None:
    """kd distill on the user's own data file without a config file."""
    g = p.add_argument_group("your own data (CSV or TSV with a header, JSON lines or Parquet)")
    g.add_argument("--train", metavar="FILE", help="train file (= data.format=csv data.train=FILE)")
    g.add_argument("--val", metavar="FILE", help="val file (default: data.val_fraction of train)")
    g.add_argument("--text-column", metavar="C", help="the text column (default: text)")
    g.add_argument("--label-columns", metavar="A,B",
                   help="0/1 label columns, or one class column (single-label); default: the 0/1 columns")


def _sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of distill runs over config keys and seeds",
                       description="Every combination of a sweep file's grid, times its seeds; each distinct "
                                   "teacher is fine-tuned once. Finished runs are skipped, interrupted ones "
                                   "resumed. Writes runs.csv, results.csv, results.md and PNG plots.")
    p.add_argument("file", help="sweep file, e.g. configs/sweeps/kd_vs_labels.yaml")
    p.add_argument("--jobs", type=_at_least(1), default=1, help="runs at once, each in its own process")
    p.add_argument("--out", help="write the tables and plots here (default: the sweep's folder)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings for every run")


def _at_least(low: int):
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _data_arguments(p) -> None:
    from kd.config.settings import MIN_MAX_LENGTH

    p.add_argument("--model", required=True, help="a model folder written by kd")
    p.add_argument("--batch-size", type=_at_least(1), default=128)
    p.add_argument("--max-length", type=_at_least(MIN_MAX_LENGTH),
                   help="tokens per text (default: the length the model was trained at)")


def _data_setting_arguments(p, data_help: str, required: bool) -> None:
    """How kd evaluate, export and predict read a data file: as kd distill does (kd.data.inputs)."""
    p.add_argument("--data", required=required, help=data_help)
    g = p.add_argument_group("reading the file (default: as its run read its data: the run folder's config.yaml, "
                             "else a CSV-like file with a `text` column, as kd distill --train FILE)")
    g.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config whose data.* settings apply")
    g.add_argument("--format", choices=["jigsaw", "csv", "goemotions"], help="= data.format")
    g.add_argument("--text-column", metavar="C", help="= data.text_column")
    g.add_argument("--label-columns", metavar="A,B", help="= data.label_columns (default: the model's labels)")
    g.add_argument("--labels-file", metavar="FILE", help="= data.labels_file (goemotions format)")
    g.add_argument("--delimiter", help="= data.delimiter (default: tab for .tsv, comma otherwise)")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="data settings, e.g. data.quoting=none")


DATA_FILE = "labelled data file: CSV, TSV, JSON lines or Parquet"


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model or export folder (ONNX, int8) on a labelled file (prints JSON)")
    _data_arguments(p)
    _data_setting_arguments(p, DATA_FILE, required=True)


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="write an inference folder (PyTorch, ONNX or ONNX int8)",
                       description="Export a model folder, checked against PyTorch on real texts.")
    p.add_argument("--model", required=True, help="a model folder written by kd")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty)")
    p.add_argument("--onnx", action="store_true", help="write model.onnx for ONNX Runtime")
    p.add_argument("--quantize", choices=["int8"], help="int8 weights (implies --onnx)")
    _data_setting_arguments(p, DATA_FILE + ": the macro AUC of both models is compared on it", required=False)


def _serve_parser(sub) -> None:
    from kd.deployment.serve import Limits

    defaults = Limits()
    p = sub.add_parser("serve", help="serve a model over HTTP (POST /predict)")
    p.add_argument("--model", required=True, help="a model or export folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_at_least(0), default=8000, help="0: any free port")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    p.add_argument("--workers", type=_at_least(1), default=1, help="server processes, each with the model")
    for name, value in vars(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=_at_least(1), default=value, metavar="N")


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="per-label probabilities and predicted labels (JSON lines)",
                       description="Runs a model or export folder (ONNX Runtime when it has model.onnx).")
    _data_arguments(p)
    p.add_argument("--input", metavar="FILE", help="texts to classify: a data file's text column (CSV, TSV, JSON lines, "
                                                   "Parquet, read as its run read its data), or one text per line")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config whose data.* settings apply")
    p.add_argument("--text-column", metavar="C", help="= data.text_column")
    p.add_argument("texts", nargs="*", help="texts to classify")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kd", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _own_data_arguments(_run_parser(sub, "distill", "fine-tune a teacher and distill it into a student",
                                    "Fine-tune the teacher, cache its soft targets, train the student."))
    _run_parser(sub, "pretrain", "pre-train a student on unlabelled text by matching the teacher's hidden states",
                "Before any task: the student learns the pretrained teacher's hidden states on the texts of "
                "pretrain.files; then distill with student.name=RUN_FOLDER/student student.init=pretrained.")
    _sweep_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    _export_parser(sub)
    _serve_parser(sub)
    return parser


def _run_config(args):
    """(config, resume) of kd distill or kd pretrain: from --resume's run folder, or the arguments."""
    from kd.config.settings import load_config

    if args.resume:
        folder = Path(args.resume)
        if args.config or args.teacher or args.student or args.overrides or _own_data_overrides(args):
            raise KDError("--resume takes the run's own config.yaml; give no other settings")
        if not (folder / "config.yaml").is_file():
            raise KDError(f"not a run folder (no config.yaml): {folder}")
        return load_config([str(folder / "config.yaml")],
                           [f"run_name={folder.name}", f"output_dir={folder.parent}"]), True
    overrides = _own_data_overrides(args) + list(args.overrides)
    if args.teacher:
        overrides.insert(0, f"teacher.name={args.teacher}")
    if args.student:
        overrides.insert(0, f"student.name={args.student}")
    return load_config(args.config, overrides), False


def _own_data_overrides(args) -> list[str]:
    """--train/--val/--text-column/--label-columns as data.* overrides (given settings win)."""
    given = [getattr(args, key, None) for key in ("train", "val", "text_column", "label_columns")]
    if not any(given):
        return []
    if not args.train:
        raise KDError("--val, --text-column and --label-columns go with --train FILE")
    columns = [c.strip() for c in (args.label_columns or "").split(",") if c.strip()]
    return ["data.format=csv", f"data.train={json.dumps(args.train)}", f"data.val={json.dumps(args.val)}",
            "data.labels_file=null", f"data.text_column={json.dumps(args.text_column or 'text')}",
            f"data.label_columns={json.dumps(columns)}"]


def _distill(args) -> None:
    from kd.run.pipeline import distill

    distill(*_run_config(args))


def _pretrain(args) -> None:
    from kd.run.pipeline import pretrain

    pretrain(*_run_config(args))


def _sweep(args) -> None:
    from kd.sweep.grid import load_sweep
    from kd.sweep.runner import run_sweep

    run_sweep(load_sweep(args.file, args.overrides), args.jobs, Path(args.out) if args.out else None)


def _data_overrides(args) -> list[str]:
    """The data flags of kd evaluate, export and predict as data.* overrides (given ones only)."""
    flags = {"format": "format", "text_column": "text_column", "labels_file": "labels_file", "delimiter": "delimiter"}
    overrides = [f"data.{key}={json.dumps(getattr(args, flag))}" for flag, key in flags.items()
                 if getattr(args, flag, None) is not None]
    if getattr(args, "label_columns", None):
        columns = [c.strip() for c in args.label_columns.split(",") if c.strip()]
        overrides.append(f"data.label_columns={json.dumps(columns)}")
    return overrides + [o for o in getattr(args, "overrides", []) or []]


def _read_for_model(args, names: list[str], single_label: bool):
    """--data read as the model's run read its data (kd.data.inputs), its labels in the model's order."""
    from kd.data.inputs import data_settings, read_for_model

    return read_for_model(args.data, data_settings(args.model, args.config, _data_overrides(args)), names, single_label)


def _evaluate(args) -> None:
    """Score any folder kd writes: a save_pretrained folder (as training evaluates), or a `kd export`
    folder with model.onnx (ONNX Runtime through kd.Classifier, int8 included)."""
    from kd.deployment.classifier import ONNX_FILE, Classifier, inference_max_length
    from kd.evaluation.calibration import read_calibration
    from kd.evaluation.metrics import score

    if (Path(args.model) / ONNX_FILE).is_file():
        clf = Classifier.from_pretrained(args.model, max_length=args.max_length, batch_size=args.batch_size)
        data = _read_for_model(args, clf.labels, clf.single_label)
        temperatures = read_calibration(Path(args.model), clf.labels)
        metrics = score(clf.logits(data.texts), data.labels, clf.decision, clf.labels, clf.single_label, temperatures)
    else:
        from accelerate import Accelerator

        from kd.evaluation.predict import evaluate_model
        from kd.models.build import is_single_label, label_names
        from kd.models.saved import load_classifier

        model, tokenizer, decision = load_classifier(args.model)
        tokenizer.model_max_length = inference_max_length(
            args.max_length, getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length)
        data = _read_for_model(args, label_names(model), is_single_label(model))
        metrics, _ = evaluate_model(model, tokenizer, data, Accelerator(), args.batch_size, decision,
                                    temperatures=read_calibration(Path(args.model), data.label_names))
    print(json.dumps(metrics, indent=2))


def _export(args) -> None:
    from kd.deployment.export import export_model
    from kd.models.folder import read_labels, single_label_folder

    labelled = None
    if args.data:
        labelled = _read_for_model(args, read_labels(Path(args.model)), single_label_folder(Path(args.model)))
    report = export_model(args.model, args.out, args.onnx, args.quantize, labelled)
    print(json.dumps(report, indent=2))


def _serve(args) -> None:
    from kd.deployment.serve import Limits, serve

    limits = Limits(**{name: getattr(args, name) for name in vars(Limits())})
    if args.port > 65535:
        raise KDError(f"--port must be at most 65535, got {args.port}")
    serve(args.model, args.host, args.port, limits, args.backend, args.workers)


def _predict(args) -> None:
    from kd.data.inputs import data_settings, input_texts
    from kd.deployment.classifier import Classifier

    texts = list(args.texts)
    if args.input:
        texts += input_texts(args.input, data_settings(args.model, args.config, _data_overrides(args)))
    if not texts:
        raise KDError("no texts given: pass TEXT arguments or --input FILE")
    clf = Classifier.from_pretrained(args.model, max_length=args.max_length, batch_size=args.batch_size)
    for start in range(0, len(texts), 4096):  # print as it goes on long inputs
        chunk = texts[start:start + 4096]
        for text, record in zip(chunk, clf.records(clf.predict_proba(chunk))):
            print(json.dumps({"text": text, **record}))


def main(argv: list[str] | None = None) -> int:
    from kd.deployment import card

    card.invocation = list(sys.argv[1:] if argv is None else argv)  # for the model cards
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        commands = {"distill": _distill, "pretrain": _pretrain, "sweep": _sweep, "evaluate": _evaluate,
                    "predict": _predict, "export": _export, "serve": _serve}
        commands[args.command](args)
    except (KDError, OSError) as err:  # OSError: a full disk, a folder that vanished, ...
        if args.debug:
            raise
        print(f"kd: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
