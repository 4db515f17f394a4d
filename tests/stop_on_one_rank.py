"""`kd distill` under `accelerate launch` where only rank 1 wants to stop at its STOP_STEP-th training
step: a Ctrl-C (STOP_MODE=ctrl-c) or a loss that is not finite in its checks alone (STOP_MODE=diverge).
Each rank writes how many training steps it took to AUDIT_DIR/rank-<RANK>.txt when it exits."""

import atexit
import os
import signal
import sys

import torch

from kd.cli import main
from kd.training import guard

rank, mode, at = int(os.environ["RANK"]), os.environ["STOP_MODE"], int(os.environ["STOP_STEP"])
steps = 0
real_add = guard.Divergence.add


def add(self, loss, step):
    global steps
    steps += 1
    if rank == 1 and steps == at:
        if mode == "ctrl-c":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            loss = torch.tensor(float("nan"))
    return real_add(self, loss, step)


def report() -> None:
    with open(os.path.join(os.environ["AUDIT_DIR"], f"rank-{rank}.txt"), "w", encoding="utf-8") as handle:
        handle.write(str(steps))


guard.Divergence.add = add
atexit.register(report)
sys.exit(main(["distill", *sys.argv[1:]]))
