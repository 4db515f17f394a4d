"""What a training stage reports about the model it saved: val metrics, size, train time, and its
calibration (temperatures fitted on val, written beside the model)."""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator

from kd.data.batches import EncodedDataset, make_loader
from kd.data.texts import LabeledTexts
from kd.data.tokens import TokenCache
from kd.evaluation.calibration import calibrate, write_calibration
from kd.evaluation.predict import predict_logits, prepare_for_inference
from kd.models.build import count_parameters
from kd.models.saved import folder_size_mb
from kd.runtime.report import Reporter


def stage_summary(folder: Path, metrics: dict, model, train_time_s: float | None, **extra) -> dict:
    """What a stage reports about its saved model: val metrics, size and train time."""
    return {"path": str(folder), "val": metrics, "parameters": count_parameters(model),
            "size_mb": folder_size_mb(folder), "train_time_s": train_time_s, **extra}


def calibrate_saved(folder: Path, model, tokenizer, val: LabeledTexts, tokens: TokenCache, batch_size: int,
                    accelerator: Accelerator, reporter: Reporter, stage: str) -> dict:
    """Temperatures fitted on val for the saved model, written beside it (kd.calibration); its
    expected calibration error before and after (out of fold)."""
    dataset = EncodedDataset(tokens(tokenizer, "val", val.texts), val.labels)
    model, loader = prepare_for_inference(accelerator, model, make_loader(dataset, tokenizer, model, batch_size, False))
    with reporter.task(f"{stage} calibration", len(loader)) as advance:
        logits, labels = predict_logits(model, loader, accelerator, advance)
    temperatures, errors = calibrate(logits, labels, val.single_label)
    if accelerator.is_main_process:
        write_calibration(folder, val.label_names, temperatures, val.single_label)
    accelerator.wait_for_everyone()
    return {**errors, "temperatures": [round(float(t), 4) for t in temperatures]}
