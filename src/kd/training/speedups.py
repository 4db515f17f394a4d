"""Training speedups: each one named in `train.speedups`, each changing how a step is computed,
never what it computes (the lazy embedding update, which does, is `train.lazy_embedding_update`).

  fused_adamw                AdamW's update of every dense tensor in one kernel (torch's
                             `fused=True`): several times faster than its per-tensor loop
  cls_only_last_layer        the last BERT layer computed for the [CLS] row only, all the head
                             reads (kd.models.first_token); not with hidden-state or attention matching
  sparse_embedding_gradient  a row-sparse gradient for the word embedding table, so clipping
                             and AdamW touch the rows a batch used (kd.training.optim); one process, no fp16

`speedups: null` (the default) takes those that docs/benchmarks/training.md measures beyond
noise on this kind of device: all three on a CPU, fused AdamW alone elsewhere. A speedup
listed where it cannot apply is left out, and said so.
"""

from __future__ import annotations

from typing import get_args

import torch

from kd.config.settings import SpeedupName
from kd.models.first_token import use_first_token_last_layer
from kd.training.optim import use_sparse_embedding_gradient

ALL = get_args(SpeedupName)
ON_CPU = ALL
ON_OTHER_DEVICES = ("fused_adamw",)


def resolve(listed: list[str] | None, device: torch.device, num_processes: int, mixed_precision: str,
            matches_layers: bool, lazy_embedding_update: bool) -> tuple[list[str], list[str]]:
    """(the speedups to apply, a note for each one asked for that the run rules out): `listed`,
    or None for this device's defaults. The lazy embedding update asks for the sparse gradient."""
    asked = [] if listed is None else list(listed)
    if lazy_embedding_update and "sparse_embedding_gradient" not in asked:
        asked.append("sparse_embedding_gradient")
    defaults = ON_CPU if device.type == "cpu" else ON_OTHER_DEVICES
    names = asked if listed is not None else list(dict.fromkeys([*defaults, *asked]))
    why_not = {"cls_only_last_layer": matches_layers and "hidden-state or attention matching reads every row",
               "sparse_embedding_gradient": (num_processes > 1 or mixed_precision == "fp16")
               and "it needs one process and no fp16"}
    notes = [f"{name} left out: {why_not[name]}" for name in asked if why_not.get(name)]
    return [name for name in names if not why_not.get(name)], notes


def apply(model: torch.nn.Module, names: list[str]) -> None:
    """Change `model` in place for the speedups in `names` that act on it (fused AdamW acts on
    the optimizer: kd.training.optim.make_optimizer)."""
    if "cls_only_last_layer" in names:
        use_first_token_last_layer(model)
    use_sparse_embedding_gradient(model, "sparse_embedding_gradient" in names)
