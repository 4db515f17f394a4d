"""Soft targets: computed once, reused on the same key, recomputed when anything in the key changes."""

import shutil
from dataclasses import replace

import pytest
import tiny
import torch

from kd.config.settings import DataConfig
from kd.data.splits import load_splits
from kd.models.build import build_model
from kd.models.hub import load_tokenizer
from kd.models.saved import load_classifier, save_classifier
from kd.teacher.logits_cache import train_logits


@pytest.fixture
def setup(models, tmp_path):
    teacher_dir = tmp_path / "teacher"

    model = build_model(str(models["bert"]), "pretrained", tiny.LABELS)
    tokenizer = load_tokenizer(str(models["bert"]))
    save_classifier(model, tokenizer, torch.full((3,), 0.5).numpy(), teacher_dir)
    data_cfg = DataConfig(format="csv", train=str(tiny.write_csv(tmp_path / "train.csv", 40, seed=0)),
                          val=None, text_column="text", label_columns=tiny.LABELS, labels_file=None,
                          max_length=16)
    return teacher_dir, data_cfg, tmp_path / "cache"


def _soft_targets(teacher_dir, data_cfg, cache_dir):
    teacher, tokenizer, _ = load_classifier(teacher_dir)
    train, _ = load_splits(data_cfg)
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    ctx = tiny.context(cache_dir.parent, data_cfg, cache_dir=cache_dir)
    ctx.cfg.teacher.train.eval_batch_size = 16
    logits, hit = train_logits(ctx, ctx.keep("teacher", teacher, tokenizer, teacher_dir), train)
    return logits, hit, len(calls)


def test_miss_then_hit(setup):
    teacher_dir, data_cfg, cache_dir = setup
    logits, hit, forwards = _soft_targets(teacher_dir, data_cfg, cache_dir)
    assert not hit and forwards > 0 and logits.shape == (32, 3)
    again, hit, forwards = _soft_targets(teacher_dir, data_cfg, cache_dir)
    assert hit and forwards == 0 and torch.equal(logits, again)
    assert len(list((cache_dir / "soft_targets").iterdir())) == 1  # no temporary files left


def test_any_change_in_the_key_recomputes(setup, tmp_path):
    teacher_dir, data_cfg, cache_dir = setup
    _soft_targets(teacher_dir, data_cfg, cache_dir)
    assert not _soft_targets(teacher_dir, replace(data_cfg, max_length=12), cache_dir)[1]
    assert not _soft_targets(teacher_dir, replace(data_cfg, split_seed=7), cache_dir)[1]
    edited = tmp_path / "edited.csv"
    edited.write_text(open(data_cfg.train).read().replace("happy", "great"))
    assert not _soft_targets(teacher_dir, replace(data_cfg, train=str(edited)), cache_dir)[1]
    other = tmp_path / "other-teacher"
    shutil.copytree(teacher_dir, other)
    model, tokenizer, thresholds = load_classifier(other)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    save_classifier(model, tokenizer, thresholds, other)
    logits, hit, _ = _soft_targets(other, data_cfg, cache_dir)
    assert not hit
    assert _soft_targets(teacher_dir, data_cfg, cache_dir)[1]  # the original key still hits
    assert len(list((cache_dir / "soft_targets").iterdir())) == 5


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "pickle"])
def test_a_damaged_cache_entry_is_detected_and_recomputed(setup, damage):
    teacher_dir, data_cfg, cache_dir = setup
    logits, _, _ = _soft_targets(teacher_dir, data_cfg, cache_dir)
    logits = logits.clone()  # it maps the file that is damaged in place below
    (entry,) = (cache_dir / "soft_targets").iterdir()
    raw = bytearray(entry.read_bytes())
    if damage == "flip a byte":
        raw[-3] ^= 0xFF  # inside the logits: a valid file whose checksum no longer matches
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:  # a pickle where safetensors is expected: never unpickled, just refused
        import pickle
        raw = bytearray(pickle.dumps({"logits": torch.zeros(1)}))
    entry.write_bytes(bytes(raw))
    again, hit, forwards = _soft_targets(teacher_dir, data_cfg, cache_dir)
    assert not hit and forwards > 0 and torch.equal(again, logits)
    assert _soft_targets(teacher_dir, data_cfg, cache_dir)[1]  # the rewritten entry is good
