"""A run's context: what every stage of a run works with, built once (kd.run.pipeline) and handed
to each stage in place of a dozen separate arguments.

It holds the resolved config, the Accelerator, the reporter, the token cache, the run folder and
whether the run resumes, and it owns the models the run keeps in memory: a stage `keep`s the model
it made, a later stage reads it with `model`, and `release` lets it go from the context, from the
Accelerator (every object `prepare` registered) and, on a GPU, from device memory. So a model that
later stages no longer need (the teacher, once its soft targets are cached) is gone before the next
stage trains.

A stage that finished `record`s what it made under state/ in the run folder; a resumed run finds
it with `finished` and skips the stage (state/ goes once the run has finished).
"""

from __future__ import annotations

import dataclasses
import gc
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from kd.config.settings import Config
from kd.data.tokens import TokenCache
from kd.files import write_atomically
from kd.models.hub import load_tokenizer
from kd.models.saved import load_classifier
from kd.runtime.report import Reporter


@dataclass
class Loaded:
    """A model a run holds, its tokenizer and the folder it was saved in (None: never saved)."""
    model: torch.nn.Module
    tokenizer: object
    folder: Path | None


@dataclass
class RunContext:
    cfg: Config
    accelerator: Accelerator
    reporter: Reporter
    tokens: TokenCache
    run_dir: Path
    resume: bool = False
    command: str = "distill"  # the kd command that resumes the run (`kd <command> --resume <run_dir>`)
    loaded: dict[str, Loaded] = field(default_factory=dict)  # shared by with_config's copies

    @classmethod
    def build(cls, cfg: Config, run_dir: Path, accelerator: Accelerator | None = None,
              reporter: Reporter | None = None) -> RunContext:
        """A context outside `kd distill` (users' own loops, benchmarks, tests): on `accelerator`
        (default: the CPU, in fp32), printing through `reporter` (default: the main process's), the
        token cache in cfg.cache_dir."""
        accelerator = accelerator or Accelerator(cpu=True, mixed_precision="no")
        reporter = reporter or Reporter(accelerator.is_main_process)
        tokens = TokenCache(reporter, Path(cfg.cache_dir) / "tokens", cfg.data.num_proc, accelerator.main_process_first)
        return cls(cfg, accelerator, reporter, tokens, Path(run_dir))

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.cache_dir)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def with_config(self, cfg: Config) -> RunContext:
        """This context for a stage that runs with other settings (kd-pretrain's seed, say)."""
        return dataclasses.replace(self, cfg=cfg)

    def truncating(self, tokenizer):
        """`tokenizer`, truncating at data.max_length: every tokenizer a run uses passes here, and
        the token cache and the saved folders read the length from it (model_max_length)."""
        tokenizer.model_max_length = self.cfg.data.max_length
        return tokenizer

    def tokenizer(self, name: str):
        return self.truncating(load_tokenizer(name))

    def state_file(self, stage: str) -> Path:
        """Where a stage's resumable training state is saved (kd.training.checkpoint)."""
        return self.run_dir / "state" / f"{stage}.safetensors"

    def finished(self, stage: str) -> dict | None:
        """The record of a stage that this run finished before it stopped; None: not finished."""
        path = self.run_dir / "state" / f"{stage}.json"
        return json.loads(path.read_text(encoding="utf-8")) if self.resume and path.is_file() else None

    def record(self, stage: str, result: dict) -> dict:
        """Note that `stage` finished with `result` (a JSON-able summary), for a resumed run to skip it."""
        if self.is_main:
            path = self.run_dir / "state" / f"{stage}.json"
            write_atomically(path, lambda partial: partial.write_text(json.dumps(result), encoding="utf-8"))
        return result

    def keep(self, role: str, model, tokenizer, folder: Path | None) -> Loaded:
        """Hold `model` for later stages under `role` (teacher, student)."""
        self.loaded[role] = Loaded(model, self.truncating(tokenizer), folder)
        return self.loaded[role]

    def model(self, role: str, folder: Path | None = None) -> Loaded:
        """The model held under `role`; if none is, the one saved in `folder` (a stage that a
        resumed run skipped), loaded and held."""
        if role not in self.loaded:
            model, tokenizer, _ = load_classifier(folder)
            self.keep(role, model, tokenizer, folder)
        return self.loaded[role]

    def release(self, *roles: str) -> None:
        """Let the models of `roles` go, and everything the Accelerator prepared so far (models,
        optimizers, loaders); collected at once, and a GPU's cached blocks returned."""
        for role in roles:
            self.loaded.pop(role, None)
        self.accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
