"""Shared fixtures. Tests never touch the network; ../shared is used only where present."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ["HF_HUB_OFFLINE"] = "1"
if (SHARED / "hf-cache").is_dir():
    os.environ["HF_HUB_CACHE"] = str(SHARED / "hf-cache")

import pytest  # noqa: E402
import tiny  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate's state is process-wide and takes one mixed-precision setting: each test starts
    from a fresh one, as a run in its own process does (a test's Accelerator(cpu=True), in fp32,
    would otherwise refuse a later run's bf16)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Local 'pretrained' tiny models: a 3-layer BERT and DistilBERT teacher, a 2-layer BERT student."""
    root = tmp_path_factory.mktemp("models")
    return {"bert": tiny.make_model(root / "bert", "bert", layers=3),
            "distilbert": tiny.make_model(root / "distilbert", "distilbert", layers=3),
            "student": tiny.make_model(root / "student", "bert", layers=2, hidden=16),
            "bert_nodropout": tiny.make_model(root / "bert0", "bert", layers=2, dropout=0.0),
            "student_nodropout": tiny.make_model(root / "student0", "bert", layers=1, hidden=16,
                                                 dropout=0.0)}


@pytest.fixture(scope="session")
def csv_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {"train": tiny.write_csv(root / "train.csv", 512, seed=0),
            "val": tiny.write_csv(root / "val.csv", 96, seed=1)}

