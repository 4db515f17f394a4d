"""What pauses or ends a training loop: the resumable state saved every few steps, after each
epoch and on Ctrl-C (the batch under way finished first), and a loss that stops being finite.
With several processes the decision to stop is taken together (one all-reduce at the steps where
losses are checked or the state is due), so that every process leaves the loop at the same step."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch
from accelerate.utils import gather_object

from kd.errors import KDError
from kd.runtime.context import RunContext
from kd.training.checkpoint import Progress, rng_state, save_state


class Divergence:
    """A loss that is not finite ends training with the step where it first went so. Losses are
    checked CHECK_EVERY steps at a time (and before every save), not at every step: reading a
    value back makes a GPU wait."""
    CHECK_EVERY = 16

    def __init__(self, lr_key: str, lr: float):
        self.lr_key, self.lr = lr_key, lr
        self.losses: list[torch.Tensor] = []
        self.last_step = 0

    def add(self, loss: torch.Tensor, step: int) -> bool:
        """Keep the step's loss; whether a check is due."""
        self.losses.append(loss.detach().float())
        self.last_step = step
        return len(self.losses) == self.CHECK_EVERY

    def first_bad(self) -> tuple[int, float] | None:
        """(step, loss) of the first loss kept since the last check that is not finite; None: all are."""
        if not self.losses:
            return None
        losses, self.losses = torch.stack(self.losses).cpu(), []
        bad = (~torch.isfinite(losses)).nonzero()
        if not len(bad):
            return None
        return self.last_step - len(losses) + 1 + int(bad[0]), losses[bad[0]].item()

    def fail(self, step: int, value: float | None) -> None:
        seen = f"it became {value}" if value is not None else "on another process"
        raise KDError(f"the loss diverged at step {step} ({seen}); lower {self.lr_key} (it is {self.lr:g}) or "
                      "keep the gradient clipping on (max_grad_norm)")


class DeferredCtrlC:
    """Ctrl-C during training ends the current batch first (so the saved state is whole); a
    second Ctrl-C interrupts at once. Outside the main thread signals cannot be caught: no-op."""

    def __enter__(self):
        self.requested = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._request)
        except ValueError:
            self.previous = None
        return self

    def _request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class Checkpoints:
    """The state file, written every `every` steps, after each epoch and on Ctrl-C (`state_file`
    None: never, as on processes other than the main one); losses checked for divergence first.

    With several processes, whether to stop (a Ctrl-C on any of them, a loss that is not finite on
    any of them) is decided together, at the steps where the losses are checked or the state is
    due: one all-reduce there, so that every process leaves the loop at the same step instead of
    one leaving while the others wait for it in the next gradient all-reduce."""

    def __init__(self, state_file: Path | None, run, every: int, stage: str, ctx: RunContext):
        """`run`: what the loop trains (its `trained` modules, `optimizer`, `scheduler` and `lr`)."""
        self.state_file, self.run, self.every, self.stage, self.ctx = state_file, run, every, stage, ctx
        self.divergence = Divergence(f"{stage}.train.lr", run.lr)

    def save(self, progress: Progress) -> None:
        """On every process at once: each one's RNG states go to the main one, which writes the file."""
        states = [rng_state()]
        if self.ctx.accelerator.num_processes > 1:
            states = gather_object(states)  # in rank order
        if self.state_file is not None:
            save_state(self.state_file, self.run.trained, self.run.optimizer, self.run.scheduler, progress, states)

    def agree(self, stop: bool = False) -> bool:
        """Check the losses kept since the last check, on every process at once; raise at the first
        step any process saw diverge. Returns whether any process asked to stop."""
        bad = self.divergence.first_bad()
        accelerator = self.ctx.accelerator
        if accelerator.num_processes > 1:  # [stop, -(first bad step)], the max over processes
            local = torch.tensor([float(stop), -bad[0] if bad else -math.inf], device=accelerator.device)
            agreed = accelerator.reduce(local, reduction="max").tolist()
            stop, step = agreed[0] > 0, -agreed[1]
            if math.isfinite(step):
                self.divergence.fail(int(step), bad[1] if bad and bad[0] == step else None)
        elif bad:
            self.divergence.fail(*bad)
        return stop

    def after_step(self, loss: torch.Tensor, step: int, progress: Progress, loss_sum: torch.Tensor,
                   started: float, stop: bool) -> None:
        """Check the loss; save mid-epoch (the loss and time so far with the state) when due or
        asked to stop, then stop."""
        check = self.divergence.add(loss, step)
        due = bool(self.every) and progress.step % self.every == 0
        alone = self.ctx.accelerator.num_processes == 1
        if not (check or due or (stop and alone)):
            return
        stop = self.agree(stop)
        if not (due or stop):
            return
        elapsed = time.perf_counter() - started
        progress.loss_sum = loss_sum.item()
        progress.train_time_s += elapsed
        self.save(progress)
        progress.train_time_s -= elapsed
        if stop:
            self.ctx.reporter.print(f"{self.stage}: interrupted; the state is saved, "
                                    f"`kd {self.ctx.command} --resume {self.ctx.run_dir}` continues")
            raise KeyboardInterrupt
