"""kd's loss in transformers' Trainer and in PyTorch Lightning, on a tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)

from kd.data.tokens import encode
from kd.errors import KDError
from kd.integrations.hf import (
    DistillationTrainer,
    cached_teacher_logits,
    with_teacher_logits,
)
from kd.models.build import build_model
from kd.models.hub import load_tokenizer
from kd.models.lexical import add_lexical_part
from kd.training.losses import distillation_loss


@pytest.fixture(scope="module")
def rows(models):
    texts, labels = tiny.make_texts(64, seed=3)
    tokenizer = load_tokenizer(str(models["bert"]))
    teacher_logits = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32)
    encoded = [{"input_ids": ids, "labels": [float(v) for v in row]}
               for ids, row in zip(encode(tokenizer, texts, 32), labels)]
    return tokenizer, with_teacher_logits(encoded, teacher_logits), teacher_logits


def test_the_trainer_trains_on_kds_loss_and_saves_a_loadable_folder(models, rows, tmp_path):
    tokenizer, train, teacher_logits = rows
    student = build_model(str(models["student"]), "random", tiny.LABELS)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, max_steps=8,
                             learning_rate=3e-3, report_to=[], use_cpu=True, save_strategy="no")
    trainer = DistillationTrainer(model=student, args=args, train_dataset=train, alpha=0.7, temperature=2.0,
                                  data_collator=DataCollatorWithPadding(tokenizer))
    batch = trainer.data_collator(train[:4])
    assert "teacher_logits" in batch  # the column reaches the loss
    loss, outputs = trainer.compute_loss(student, batch, return_outputs=True)
    expected = distillation_loss(outputs.logits.float(), batch["labels"], batch["teacher_logits"], 0.7, 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    hard = distillation_loss(outputs.logits.float(), batch["labels"], alpha=0.0)
    assert loss.item() != pytest.approx(hard.item())  # the teacher's term is in it
    result = trainer.train()
    assert result.global_step == 8 and np.isfinite(result.training_loss)
    trainer.save_model(str(tmp_path / "student"))
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert loaded.config.problem_type == "multi_label_classification"
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_the_trainer_trains_a_student_with_kds_lexical_part(models, rows, tmp_path):
    tokenizer, train, _ = rows
    kept = np.unique(np.concatenate([row["input_ids"] for row in train]))
    student = add_lexical_part(build_model(str(models["student"]), "random", tiny.LABELS), kept, 64,
                               tokenizer.unk_token_id)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, max_steps=8,
                             learning_rate=3e-3, report_to=[], use_cpu=True, save_strategy="no")
    trainer = DistillationTrainer(model=student, args=args, train_dataset=train, alpha=0.5, temperature=2.0,
                                  data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    assert trainer.model.lexical.weight.abs().sum() > 0  # the table starts at zero: it trained
    trainer.save_model(str(tmp_path / "student"))
    assert (tmp_path / "student" / "lexical_bert.py").is_file()  # plain transformers reads it without kd
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_without_teacher_logits_alpha_must_be_0(models, rows, tmp_path):
    tokenizer, train, _ = rows
    plain = [{k: v for k, v in row.items() if k != "teacher_logits"} for row in train]
    student = build_model(str(models["student"]), "random", tiny.LABELS)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = DistillationTrainer(model=student, args=args, alpha=0.5, data_collator=DataCollatorWithPadding(tokenizer))
    with pytest.raises(KDError, match="needs the teacher's logits"):
        trainer.compute_loss(student, trainer.data_collator(plain[:2]))
    trainer.alpha = 0.0
    assert trainer.compute_loss(student, trainer.data_collator(plain[:2])).item() > 0


def test_teacher_logits_come_from_kds_cache(models, csv_data, tmp_path):
    from kd.cli import main

    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path)]) == 0
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, **{  # a second run: a second file
        "run_name": "again", "data.max_length": 24})]) == 0
    assert len(list((tmp_path / "cache/soft_targets").glob("*.safetensors"))) == 2
    final = json.loads((tmp_path / "runs/run/final_metrics.json").read_text())
    cache = Path(final["soft_targets_file"])  # the run names the file it used
    logits = cached_teacher_logits(cache)
    assert logits.shape == (512, 3) and np.isfinite(logits).all()
    cache.write_bytes(cache.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(KDError, match="checksum|cannot read"):
        cached_teacher_logits(cache)


def test_lightning_module_trains_on_kds_loss(models, rows, tmp_path):
    lightning = pytest.importorskip("lightning")
    from kd.integrations.lightning import DistillationModule

    tokenizer, train, _ = rows
    collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(train, batch_size=16, collate_fn=collate)
    texts, labels = tiny.make_texts(40, seed=9)  # a val set of its own, without teacher logits
    val = [{"input_ids": ids, "labels": [float(v) for v in row]} for ids, row in zip(encode(tokenizer, texts, 32), labels)]
    val_loader = torch.utils.data.DataLoader(val, batch_size=16, collate_fn=collate)
    module = DistillationModule(build_model(str(models["student"]), "random", tiny.LABELS), alpha=0.5,
                                temperature=2.0, lr=3e-3, label_names=tiny.LABELS)
    batch = collate(train[:4])
    module.eval()  # no dropout: the two forward passes agree
    expected = distillation_loss(module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                                 .logits, batch["labels"], batch["teacher_logits"], 0.5, 2.0)
    assert module.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader, val_loader)
    metrics = trainer.callback_metrics
    assert {"train_loss", "val_loss", "val_macro_auc"} <= set(metrics) and 0 <= metrics["val_macro_auc"] <= 1
    module.model.save_pretrained(tmp_path / "student")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").num_labels == 3


def _val_metrics(folder, models):
    """kd's metrics of a saved model on the bridges' val set, in this one process."""
    import bridges_on_processes as bridges

    from kd.evaluation.metrics import compute_metrics

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = load_tokenizer(str(models["student"]))
    val = bridges.rows(tokenizer, bridges.VAL_ROWS, 1)
    collate, logits = DataCollatorWithPadding(tokenizer), []
    with torch.no_grad():  # in the bridges' batches of 8: the same padding, the same float rounding
        for start in range(0, len(val), 8):
            batch = collate(val[start:start + 8])
            logits.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy())
    logits = np.concatenate(logits)
    labels = np.array([row["labels"] for row in val], np.float32)
    return logits, labels, compute_metrics(logits, labels, np.full(3, 0.5), tiny.LABELS)


@pytest.mark.slow
def test_both_bridges_evaluate_a_plain_val_set_over_every_process(models, tmp_path):
    """On 2 processes, alpha 0.5, a val set without teacher logits (51 rows: uneven over the two):
    the Trainer's and Lightning's val metrics equal a one-process evaluation of the model they trained."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kd.evaluation.metrics import tuned_metrics

    script = Path(__file__).resolve().parent / "bridges_on_processes.py"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(script), str(models["student"]), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    hf = json.loads((tmp_path / "hf.json").read_text())
    logits, labels, expected = _val_metrics(tmp_path / "hf", models)
    tuned, _ = tuned_metrics(logits, labels, tiny.LABELS)
    assert hf["eval_macro_auc"] == pytest.approx(expected["macro_auc"], abs=1e-6)
    assert hf["eval_macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-6)
    assert hf["eval_macro_f1_tuned"] == pytest.approx(tuned["macro_f1_tuned"], abs=1e-6)
    assert hf["eval_loss"] == pytest.approx(expected["bce"], abs=5e-3)  # the label loss (a mean of batch means)

    logged = json.loads((tmp_path / "lightning.json").read_text())
    _, _, expected = _val_metrics(tmp_path / "lightning", models)
    assert logged["val_macro_auc"] == pytest.approx(expected["macro_auc"], abs=1e-6)
    assert logged["val_macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-6)


def test_soft_targets_come_from_kds_own_stages_in_a_process_of_their_own(models, csv_data, tmp_path):
    """kd.integrations.teacher.soft_targets fine-tunes the teacher and labels the train rows once, as
    kd distill would, and leaves this process's Accelerate state alone for the user's Trainer."""
    from accelerate.state import is_initialized

    from kd.config.settings import load_config
    from kd.integrations.teacher import soft_targets

    cfg = load_config([], [o for o in tiny.tiny_overrides(models, csv_data, tmp_path) if not o.startswith("run_name")])
    train, logits = soft_targets(cfg)
    assert len(train) == 512 and logits.shape == (512, 3) and np.isfinite(logits).all()
    assert not is_initialized()  # the stages ran in a child process
    (teacher_run,) = (tmp_path / "cache/teachers").iterdir()
    stamp = (teacher_run / "final_metrics.json").stat().st_mtime_ns
    again_train, again = soft_targets(cfg)
    assert np.array_equal(again, logits) and list(again_train.texts) == list(train.texts)
    assert (teacher_run / "final_metrics.json").stat().st_mtime_ns == stamp  # read back, not trained again
