"""The training loop's own decisions: the data order's seed, what the gradient clip covers."""

from __future__ import annotations

import numpy as np
import tiny
import torch
from accelerate import Accelerator

from kd.cli import main
from kd.config.settings import TrainConfig
from kd.data.batches import EncodedDataset
from kd.data.tokens import encode
from kd.models.build import build_model
from kd.models.hub import load_tokenizer
from kd.student import stage as student_stage
from kd.training import loop
from kd.training.layer_matching import LayerMatching


def test_the_length_grouped_order_is_seeded_by_the_run_seed_not_torchs_state(models, tmp_path, monkeypatch):
    seeds, real_make_loader = [], loop.make_loader
    monkeypatch.setattr(loop, "make_loader", lambda *a, **k: seeds.append(k.get("seed")) or real_make_loader(*a, **k))
    ctx = tiny.context(tmp_path, seed=5)
    tokenizer = load_tokenizer(str(models["student"]))
    texts, labels = tiny.make_texts(64, seed=0)
    rows = EncodedDataset(encode(tokenizer, texts, 16), labels.astype(np.float32))
    torch.manual_seed(999)  # whatever the process's torch state: another rank, a user's own seeding
    loop.fit(ctx, loop.TrainingJob("student", build_model(str(models["student"]), "random", tiny.LABELS), tokenizer,
                                   rows, None, TrainConfig(epochs=1, batch_size=16), tmp_path / "out"))
    assert seeds[0] == 5


def test_the_gradient_clip_covers_the_layer_matching_projections(models, csv_data, tmp_path, monkeypatch):
    matchings, clipped = [], []

    class Recorded(LayerMatching):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            matchings.append(self)

    def clip(parameters, max_norm):
        clipped.append({id(p) for p in parameters})
        return torch.tensor(0.0)

    monkeypatch.setattr(student_stage, "LayerMatching", Recorded)
    monkeypatch.setattr(loop, "clip_grad_norm", clip)  # the sparse-gradient clip CPU runs take
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, parameters, max_norm: clip(parameters, max_norm))
    assert main(["distill", *tiny.tiny_overrides(models, csv_data, tmp_path, **{
        "distill.hidden_weight": 1.0, "teacher.train.epochs": 1, "student.train.epochs": 1})]) == 0
    (matching,) = matchings
    projections = {id(p) for p in matching.projections.parameters()}
    assert projections and clipped and all(projections <= ids for ids in clipped[-3:])
