"""Timing shared by the benchmarks: repeated runs of one action after a warm-up, in seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


def measure(action: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Durations of `runs` calls of `action`, after `warmup` calls that are not counted."""
    for _ in range(warmup):
        action()
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return durations
