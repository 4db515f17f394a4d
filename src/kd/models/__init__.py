"""Models: where they come from (kd.models.hub), how a classifier is built and initialised
(kd.models.build), model folders (kd.models.saved, kd.models.folder) and the student's lexical part.

The names most code needs are importable from here; each is imported on first use, so that code
that reads a model folder without torch (kd.Classifier on ONNX) stays free of it."""

from importlib import import_module

_HOMES = {"build_model": "kd.models.build", "label_names": "kd.models.build", "load_tokenizer": "kd.models.hub",
          "load_classifier": "kd.models.saved", "save_classifier": "kd.models.saved",
          "add_lexical_part": "kd.models.lexical"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'kd.models' has no attribute {name!r}")
