"""Nothing from outside is unpickled: planted pickles are refused, and their code never runs."""

from __future__ import annotations

import pickle

import pytest
import tiny

from kd.errors import KDError
from kd.models.saved import load_classifier
from kd.training.checkpoint import load_state


class Payload:
    """Unpickling this creates the file `marker`: proof that the pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_place_of_model_weights_is_refused(models, tmp_path):
    folder = tiny.make_classifier(tmp_path / "model", models["bert"], steps=1)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "executed"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": Payload(marker)}))
    with pytest.raises(KDError, match="cannot load"):
        load_classifier(folder)
    assert not marker.exists()


def test_a_pickle_in_place_of_a_training_state_is_refused(tmp_path):
    marker = tmp_path / "executed"
    state = tmp_path / "student.safetensors"
    state.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(KDError, match="cannot resume"):
        load_state(state, None, None, None)
    assert not marker.exists()
