"""How many CPU cores this process may use, on any OS (without importing torch)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS keeps one (Linux), else
    every core (macOS and Windows have no os.sched_getaffinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
