"""`kd export`: a trained model folder -> an inference folder, checked against PyTorch.

With `onnx=True` the folder holds `model.onnx` (inputs `input_ids` and `attention_mask`,
dynamic batch and sequence axes, output `logits`), optionally int8 (dynamic quantization of
the weights), beside `tokenizer.json`, `config.json` (labels) and its decision rule (`thresholds.json`, or
`class_offsets.json` for a single-label model); without,
a plain `save_pretrained` folder. For BERT-architecture classifiers the graph computes the
last layer for the [CLS] position only, the one the head reads (kd.models.first_token, as in training). Before the folder lands,
the exported model runs on real texts beside the PyTorch one: the largest |Δ probability| must stay within 1e-4 for fp32,
and on a labelled file int8 may move macro ROC AUC by at most 0.005. The folder is built
next to its target and renamed into place only when the check passes; `export.json` in it
records the check.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from kd.data.texts import LabeledTexts
from kd.deployment.card import write_export_card
from kd.deployment.classifier import ONNX_FILE, Classifier
from kd.errors import KDError
from kd.evaluation.calibration import CALIBRATION_FILE
from kd.evaluation.metrics import score
from kd.files import staged_folder
from kd.models.build import is_single_label, label_names
from kd.models.first_token import use_first_token_last_layer
from kd.models.folder import write_decision
from kd.models.saved import load_classifier, save_classifier

FP32_MAX_PROB_DIFF = 1e-4
INT8_MAX_AUC_SHIFT = 0.005
OPSET = 17


class _LogitsOnly(torch.nn.Module):
    """The classifier as a function of (input_ids, attention_mask) -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model, path: Path) -> None:
    """Trace the model to ONNX with dynamic batch and sequence axes."""
    example = torch.ones((2, 8), dtype=torch.long)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"},
               "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    # The TorchScript exporter: its graph runs faster in ONNX Runtime than the dynamo one.
    # Its tracer warns about shape arithmetic that is constant for an encoder; the parity
    # check on texts of many lengths and batch sizes is what shows the graph is right.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trace_to_onnx(model, path, example, dynamic)


def _trace_to_onnx(model, path: Path, example: torch.Tensor, dynamic: dict) -> None:
    model = copy.deepcopy(model).eval()
    use_first_token_last_layer(model)  # a BERT classifier's last layer for [CLS] only, as in training
    torch.onnx.export(_LogitsOnly(model), (example, example), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes=dynamic, opset_version=OPSET)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization: int8 weights, activations quantized on the fly."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process is for CNNs
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def parity_texts() -> list[str]:
    """200 real comments shipped with kd (GoEmotions dev, CC BY 4.0; see assets/NOTICE)."""
    text = resources.files("kd").joinpath("assets/parity-texts.txt").read_text(encoding="utf-8")
    return text.splitlines()


def _macro_auc(clf: Classifier, data: LabeledTexts) -> float | None:
    return score(clf.logits(data.texts), data.labels, clf.decision, clf.labels, clf.single_label)["macro_auc"]


def check_parity(reference: Classifier, exported: Classifier, texts: list[str],
                 labelled: LabeledTexts | None, quantized: bool) -> dict:
    """Compare the exported model with PyTorch; raise KDError when it is off."""
    diff = float(np.abs(reference.predict_proba(texts) - exported.predict_proba(texts)).max())
    report = {"texts": len(texts), "max_abs_prob_diff": diff}
    if not quantized and diff > FP32_MAX_PROB_DIFF:
        raise KDError(f"ONNX and PyTorch disagree: max |Δ probability| {diff:.2e} > "
                      f"{FP32_MAX_PROB_DIFF:.0e}")
    if labelled is not None:
        auc_torch, auc_export = _macro_auc(reference, labelled), _macro_auc(exported, labelled)
        report.update(labelled_rows=len(labelled), macro_auc_pytorch=auc_torch,
                      macro_auc_exported=auc_export)
        if auc_torch is not None and auc_export is not None:
            shift = abs(auc_export - auc_torch)
            report["macro_auc_shift"] = shift
            if quantized and shift > INT8_MAX_AUC_SHIFT:
                raise KDError(f"int8 moves macro AUC by {shift:.4f} > {INT8_MAX_AUC_SHIFT} "
                              f"({auc_torch:.4f} -> {auc_export:.4f}); export fp32 instead")
    return report


def _write_onnx_folder(model, tokenizer, decision, folder: Path, quantize: str | None) -> None:
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_decision(folder, label_names(model), decision, is_single_label(model))
    if quantize is None:
        export_onnx(model, folder / ONNX_FILE)
        return
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / ONNX_FILE
        export_onnx(model, fp32)
        quantize_int8(fp32, folder / ONNX_FILE)


def export_model(model_dir: str | Path, out_dir: str | Path, onnx: bool = False,
                 quantize: str | None = None, labelled: LabeledTexts | None = None,
                 texts: list[str] | None = None) -> dict:
    """Write the inference folder `out_dir` and return its parity report."""
    if quantize not in (None, "int8"):
        raise KDError(f"unknown quantization {quantize!r}: the only one is int8")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise KDError(f"{out_dir} exists and is not empty: pick another --out or remove it")
    onnx = onnx or quantize is not None
    model, tokenizer, decision = load_classifier(model_dir, attn_implementation="eager")
    with staged_folder(out_dir) as staging:
        if onnx:
            _write_onnx_folder(model, tokenizer, decision, staging, quantize)
        else:
            save_classifier(model, tokenizer, decision, staging)
        if (Path(model_dir) / CALIBRATION_FILE).is_file():
            shutil.copy(Path(model_dir) / CALIBRATION_FILE, staging / CALIBRATION_FILE)
        report = {"source": str(model_dir), "format": "onnx" if onnx else "pytorch",
                  "quantize": quantize}
        if onnx:
            report["parity"] = check_parity(
                Classifier.from_pretrained(model_dir, backend="torch"),
                Classifier.from_pretrained(staging, backend="onnx"),
                texts or parity_texts(), labelled, quantize is not None)
        (staging / "export.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        write_export_card(Path(model_dir), staging, report)
    return report
