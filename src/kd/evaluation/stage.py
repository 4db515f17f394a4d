"""The calibration stage, and what a training stage reports about the model it saved (its val
metrics, size and train time)."""

from __future__ import annotations

from pathlib import Path

from kd.data.batches import EncodedDataset, make_loader
from kd.data.texts import LabeledTexts
from kd.evaluation.calibration import calibrate, write_calibration
from kd.evaluation.predict import predict_logits, prepare_for_inference
from kd.models.build import count_parameters
from kd.models.saved import folder_size_mb
from kd.runtime.context import RunContext


def stage_summary(folder: Path, metrics: dict, model, train_time_s: float | None, **extra) -> dict:
    """What a stage reports about its saved model: val metrics, size and train time."""
    return {"path": str(folder), "val": metrics, "parameters": count_parameters(model),
            "size_mb": folder_size_mb(folder), "train_time_s": train_time_s, **extra}


def calibration_stage(ctx: RunContext, role: str, folder: Path, val: LabeledTexts) -> dict:
    """Temperatures fitted on val for the `role` model (teacher, student) saved in `folder`, written
    into that folder as calibration.json (kd.evaluation.calibration); returns its expected
    calibration error before and after (out of fold) and the temperatures."""
    held = ctx.model(role, folder)
    batch_size = getattr(ctx.cfg, role).train.eval_batch_size
    dataset = EncodedDataset(ctx.tokens(held.tokenizer, "val", val.texts), val.labels)
    model, loader = prepare_for_inference(ctx.accelerator, held.model,
                                          make_loader(dataset, held.tokenizer, held.model, batch_size, False))
    with ctx.reporter.task(f"{role} calibration", len(loader)) as advance:
        logits, labels = predict_logits(model, loader, ctx.accelerator, advance)
    temperatures, errors = calibrate(logits, labels, val.single_label)
    if ctx.is_main:
        write_calibration(folder, val.label_names, temperatures, val.single_label)
    ctx.accelerator.wait_for_everyone()
    return {**errors, "temperatures": [round(float(t), 4) for t in temperatures]}
