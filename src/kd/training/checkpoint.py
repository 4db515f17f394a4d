"""Resumable training state: one safetensors file per stage, written atomically.

`state/<stage>.safetensors` holds the model weights, the optimizer's tensors and every
process's torch RNG states (its CPU generator's and, where CUDA runs, its own device's: the
dropout each process draws); its metadata holds, as JSON, where training stands (epoch, step
within it, scheduler, best epoch, history, loss so far) and how many processes trained. A run
resumes on as many processes as it was saved from, or is refused in one line. Nothing is
pickled, so a state file from anywhere can be read safely; a damaged one is an error, not a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kd.errors import KDError
from kd.files import write_atomically


@dataclass
class Progress:
    epoch: int = 1               # the epoch under way (epochs + 1: training finished)
    step: int = 0                # batches of that epoch already trained
    loss_sum: float = 0.0        # of those batches
    train_time_s: float = 0.0
    best_epoch: int = 0
    best: dict | None = None     # val metrics of the best epoch
    history: list = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)
    optimizer_groups: list = field(default_factory=list)


def state_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "state" / f"{stage}.safetensors"


def save_state(path: Path, model, optimizer, scheduler, progress: Progress, rng_states: list[dict]) -> None:
    """Write the state to a temporary file and rename it over the previous one; `rng_states`: each
    process's rng_state(), in rank order."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, slots in optimizer_state["state"].items():
        for name, value in slots.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).contiguous().cpu()
    for rank, state in enumerate(rng_states):
        tensors.update({f"{key}.{rank}": value for key, value in state.items()})
    progress.scheduler = scheduler.state_dict()
    progress.optimizer_groups = optimizer_state["param_groups"]
    metadata = {"progress": json.dumps(vars(progress)), "processes": str(len(rng_states))}
    write_atomically(path, lambda partial: save_file(tensors, partial, metadata=metadata))


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch RNG states: its CPU generator's and, once CUDA is in use, its own CUDA
    device's (dropout on a GPU draws from it: without it a resumed GPU run would not repeat the
    uninterrupted one)."""
    state = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, torch.Tensor] | None) -> None:
    """Put this process's RNG states back; None: nothing to do. Returns None, so that `rng =
    restore_rng(rng)` restores a saved state once."""
    if state is None:
        return None
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])


def check_processes(path: Path, processes: int) -> None:
    """Refuse, in one line, a state saved by another number of processes than `processes`."""
    try:
        with safe_open(path, framework="pt") as handle:
            saved = int(handle.metadata().get("processes", "1"))
    except Exception as err:  # damaged: load_state says so when it gets there
        raise KDError(f"cannot resume from {path}: {str(err).splitlines()[0]}") from None
    _check_processes(path, saved, processes)


def _check_processes(path: Path, saved: int, processes: int) -> None:
    if saved != processes:
        raise KDError(f"{path} was saved by {saved} training process(es) and this run has {processes}: resume "
                      f"with accelerate launch --num_processes {saved}" + (" (one per GPU)" if saved > 1 else ""))


def load_state(path: Path, model, optimizer, scheduler, rank: int = 0,
               processes: int = 1) -> tuple[Progress, dict[str, torch.Tensor]]:
    """Restore model, optimizer and scheduler in place; (progress, the RNG states process `rank`
    of `processes` saved, for restore_rng). A state saved by another number of processes is refused."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata()
            progress = Progress(**json.loads(metadata["progress"]))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # safetensors and json raise their own types for damaged files
        raise KDError(f"cannot resume from {path}: {str(err).splitlines()[0]}") from None
    _check_processes(path, int(metadata.get("processes", "1")), processes)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": progress.optimizer_groups})
    scheduler.load_state_dict(progress.scheduler)
    return progress, {key: tensors[f"{key}.{rank}"] for key in ("rng", "cuda_rng") if f"{key}.{rank}" in tensors}
