"""The Trainer and Lightning bridges on any number of processes (run under `accelerate launch`):
train a tiny student with alpha 0.5 on rows with teacher logits, evaluate on a separate val set
without them, and on rank 0 write the metrics to OUT/<bridge>.json and the model to OUT/<bridge>/.

    python bridges_on_processes.py MODEL_FOLDER OUT
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny  # noqa: E402

from kd.data.tokens import encode  # noqa: E402
from kd.integrations.hf import DistillationTrainer, metrics, with_teacher_logits  # noqa: E402
from kd.models.build import build_model  # noqa: E402
from kd.models.hub import load_tokenizer  # noqa: E402

VAL_ROWS = 51  # uneven over 2 processes: the sampler repeats a row to even them out


def rows(tokenizer, n: int, seed: int) -> list[dict]:
    texts, labels = tiny.make_texts(n, seed)
    return [{"input_ids": ids.tolist(), "labels": [float(v) for v in row]}
            for ids, row in zip(encode(tokenizer, texts, 32), labels)]


def main(model_folder: str, out: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    tokenizer = load_tokenizer(model_folder)
    train = with_teacher_logits(rows(tokenizer, 128, 0), np.random.default_rng(0).normal(size=(128, 3)))
    val = rows(tokenizer, VAL_ROWS, 1)
    collate = DataCollatorWithPadding(tokenizer)

    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(out / "hf-work"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                             max_steps=48, learning_rate=3e-3, report_to=[], use_cpu=True, save_strategy="no")
    trainer = DistillationTrainer(model=build_model(model_folder, "random", tiny.LABELS), args=args, alpha=0.5,
                                  train_dataset=train, eval_dataset=val, data_collator=collate,
                                  compute_metrics=metrics(tiny.LABELS))
    trainer.train()
    result = trainer.evaluate()
    if rank == 0:
        trainer.save_model(str(out / "hf"))
        (out / "hf.json").write_text(json.dumps(result))

    import lightning

    from kd.integrations.lightning import DistillationModule

    torch.manual_seed(0)
    module = DistillationModule(build_model(model_folder, "random", tiny.LABELS), alpha=0.5, lr=3e-3,
                                label_names=tiny.LABELS)
    loader = lambda data, **kw: torch.utils.data.DataLoader(data, batch_size=8, collate_fn=collate, **kw)  # noqa: E731
    fitter = lightning.Trainer(max_epochs=3, accelerator="cpu", devices=int(os.environ.get("WORLD_SIZE", "1")),
                               logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False)
    fitter.fit(module, loader(train, shuffle=True), loader(val))
    logged = {k: float(v) for k, v in fitter.callback_metrics.items()}
    if fitter.global_rank == 0:
        module.model.save_pretrained(out / "lightning")
        (out / "lightning.json").write_text(json.dumps(logged))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
