"""kd's loss in transformers' Trainer and in PyTorch Lightning, on a tiny model."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

import tiny
from kd.data.tokens import encode
from kd.errors import KDError
from kd.integrations.hf import DistillationTrainer, cached_teacher_logits, with_teacher_logits
from kd.models.lexical import add_lexical_part
from kd.training.losses import distillation_loss
from kd.models.build import build_model
from kd.models.hub import load_tokenizer


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
    (cache,) = (tmp_path / "cache/soft_targets").glob("*.safetensors")
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
    module = DistillationModule(build_model(str(models["student"]), "random", tiny.LABELS), alpha=0.5,
                                temperature=2.0, lr=3e-3, label_names=tiny.LABELS)
    batch = collate(train[:4])
    module.eval()  # no dropout: the two forward passes agree
    expected = distillation_loss(module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                                 .logits, batch["labels"], batch["teacher_logits"], 0.5, 2.0)
    assert module.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader, loader)
    metrics = trainer.callback_metrics
    assert {"train_loss", "val_loss", "val_macro_auc"} <= set(metrics) and 0 <= metrics["val_macro_auc"] <= 1
    module.model.save_pretrained(tmp_path / "student")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").num_labels == 3
