"""A benchmark's helper process: the benchmark script run again with `--child ARGS`, spoken to one line at a
time over its stdin and stdout, so that the Rooms (or a proxy, or Prometheus's part) do their work out of the
process measured. Imports nothing of the exporter: a benchmark that measures another checkout's exporter
through PYTHONPATH can use it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any


class Child:
    """`script --child ARGS`: serves on loopback, prints one JSON line (its `ports`, and what else it tells),
    then answers each line it reads with one line; stops when its stdin closes. Every wait for a line has a
    watchdog that ends a child that never answers."""

    def __init__(self, script: str, *args: str, timeout: float) -> None:
        self.name = args[0]
        self.timeout = timeout
        self.process = subprocess.Popen(
            [sys.executable, script, "--child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] = json.loads(self._line(timeout * 3, "did not start"))
        self.ports: list[int] = self.info["ports"]

    def _line(self, within: float, failure: str) -> str:
        assert self.process.stdout is not None
        watchdog = threading.Timer(within, self.process.kill)
        watchdog.start()
        line = self.process.stdout.readline()
        watchdog.cancel()
        if not line:
            raise SystemExit(f"the child {self.name} {failure}")
        return line

    def ask(self, line: str, within: float | None = None) -> str:
        """Send one line, read one line back within `within` seconds (three timeouts unless given)."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._line(self.timeout * 3 if within is None else within, "did not answer")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=self.timeout)


@contextlib.contextmanager
def children(script: str, *args: Sequence[str], timeout: float) -> Iterator[list[Child]]:
    """A child of `script` for each argument list, started in order and stopped in reverse."""
    started: list[Child] = []
    try:
        for each in args:
            started.append(Child(script, *each, timeout=timeout))
        yield started
    finally:
        for child in reversed(started):
            child.stop()
