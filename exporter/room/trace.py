"""A record of one collection's phases, for `/probe?...&debug=true`: what happened when, and the shape of
each reply, so an operator can see why a Room is down without a packet capture.

Nothing recorded here is a secret or a person's data: phases, addresses, timings, statuses, and replies
reduced to their keys and list lengths (never a value, so no file name, peer name or PIN). A key or an error
message is the Room's own text, so every line shows its control and bidi characters escaped (text.visible):
a Room cannot clear the operator's terminal or forge a line of the trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from exporter.text import visible

MAX_SHAPE_DEPTH = 3


@dataclass(frozen=True)
class Step:
    seconds: float
    """Since the collection started."""
    phase: str
    outcome: str


@dataclass
class Trace:
    """Steps in the order they happened; `step()` is cheap enough to call on every collection."""

    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    detailed: bool = True
    """Describe each reply's shape: for a debug probe; off for scrapes (10 000 entries cost ~6 ms)."""

    def step(self, phase: str, outcome: str) -> None:
        self.steps.append(Step(time.monotonic() - self.started, phase, outcome))

    def lines(self) -> list[str]:
        """A header, then one line per step: milliseconds since the start, phase, outcome."""
        return [f"{'time':>12}  {'phase':<26} outcome"] + [
            f"{s.seconds * 1000:9.1f} ms  {visible(s.phase):<26} {visible(s.outcome)}" for s in self.steps
        ]


def shape(value: Any, depth: int = 0) -> str:
    """A JSON value's structure: a mapping's keys (with their shapes), a list's length and the union of its
    entries' keys, and the type of anything else; never a value itself."""
    if isinstance(value, dict):
        if depth >= MAX_SHAPE_DEPTH:
            return f"{{{len(value)} keys}}"
        return (
            "{"
            + ", ".join(f"{visible(str(key))}: {shape(item, depth + 1)}" for key, item in value.items())
            + "}"
        )
    if isinstance(value, list):
        mappings = [item for item in value if isinstance(item, dict)]
        if not mappings or depth >= MAX_SHAPE_DEPTH:
            return f"list[{len(value)}]"
        keys = sorted({visible(str(key)) for item in mappings for key in item})
        return f"list[{len(value)}] of {{{', '.join(keys)}}}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
