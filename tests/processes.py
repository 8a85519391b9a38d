"""Real processes for tests: the `trueconf-exporter` command started as a user would start it.

Each helper waits for the process to say it is ready (a line naming its port) instead of sleeping, and
every process is terminated when its test ends.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_SECONDS = 15
LISTENING = r'exporter listening.*?address"?[=:] ?"?[^\s"]*:(\d+)'
"""The exporter's start-up log line, in logfmt or JSON; group 1 is the bound port."""


def exporter_command() -> list[str]:
    """The installed console script; `python -m exporter` when running from a bare checkout."""
    script = Path(sys.executable).with_name("trueconf-exporter")
    if script.exists():
        return [str(script)]
    found = shutil.which("trueconf-exporter")
    return [found] if found else [sys.executable, "-m", "exporter"]


@dataclass
class Process:
    """A started command whose output goes to files, so a chatty process never blocks on a full pipe."""

    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start(args: list[str], workdir: Path, env: dict[str, str] | None = None, name: str = "proc") -> Process:
    stdout_path = workdir / f"{name}.{time.monotonic_ns()}.out"
    stderr_path = workdir / f"{name}.{time.monotonic_ns()}.err"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            exporter_command() + args, stdout=out, stderr=err, env=full_env, stdin=subprocess.DEVNULL
        )
    return Process(popen, stdout_path, stderr_path)


def wait_for(process: Process, stream: str, pattern: str) -> re.Match[str]:
    """Wait until the process prints a line matching `pattern` on `stream`; fail with its output if it dies.

    Polls the output file: the process writes to a file, not a pipe, so it can never block on us."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        match = re.search(pattern, getattr(process, stream))
        if match:
            return match
        if not process.alive():
            raise AssertionError(
                f"process exited {process.popen.returncode}:\n{process.stdout}\n{process.stderr}"
            )
        time.sleep(0.02)  # the poll interval of this bounded wait
    process.stop()
    raise AssertionError(f"process never printed {pattern!r}:\n{process.stdout}\n{process.stderr}")


def start_emulator(workdir: Path, *extra: str, env: dict[str, str] | None = None) -> Process:
    """`trueconf-exporter emulate` on free ports; `ports` gets `websocket` and `web`."""
    process = start(["emulate", "--port", "0", "--web-port", "0", *extra], workdir, env, name="emulator")
    match = wait_for(process, "stdout", r"websocket ws://[^:]+:(\d+) web http://[^:]+:(\d+)")
    process.ports = {"websocket": int(match.group(1)), "web": int(match.group(2))}
    return process


def start_exporter(workdir: Path, *extra: str, env: dict[str, str] | None = None) -> Process:
    """`trueconf-exporter serve` on a free loopback port; `ports` gets `http`."""
    process = start(["serve", "--web.listen-address", "127.0.0.1:0", *extra], workdir, env, name="exporter")
    match = wait_for(process, "stderr", LISTENING)
    process.ports = {"http": int(match.group(1))}
    return process


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """A real HTTP GET; returns (status, headers, body) for error statuses too."""
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def free_port() -> int:
    """A loopback port free now (another process may take it before it is bound: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], seconds: float = 40) -> bool:
    """Poll `condition` until it holds or `seconds` pass; returns whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)  # the poll interval of this bounded wait
    return False


def start_daemon(
    workdir: Path, name: str, argv: Callable[[int, int], list[str]], ready_seconds: float = 40
) -> tuple[Process, str]:
    """A Prometheus-style server (Prometheus, Alertmanager) on a free loopback port, ready at `/-/ready`.

    `argv(port, attempt)` gives its command line; a port taken meanwhile by someone else is retried.
    """
    for attempt in range(3):
        port = free_port()
        stdout_path, stderr_path = workdir / f"{name}.{attempt}.out", workdir / f"{name}.{attempt}.err"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                argv(port, attempt), stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir
            )
        process = Process(popen, stdout_path, stderr_path)
        url = f"http://127.0.0.1:{port}"

        def ready_or_dead(url: str = url, process: Process = process) -> bool:
            return _ready(url) or not process.alive()

        if wait_until(ready_or_dead, ready_seconds) and process.alive():
            return process, url
        process.stop()
        if "address already in use" not in process.stderr:
            break
    raise AssertionError(f"{name} did not start:\n{process.stderr[-4000:]}")


def _ready(url: str) -> bool:
    try:
        status, _, _ = http_get(f"{url}/-/ready", timeout=2)
    except OSError:
        return False
    return status == 200
