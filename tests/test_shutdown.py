"""SIGTERM ends `serve` within its drain time, whatever the collections in flight are waiting for.

The answers in progress get SHUTDOWN_DRAIN_SECONDS; then the collections still in flight are cancelled (their
sockets shut down) and the process exits. Before, a probe of a Room that never answers, with a 60 s module
timeout, kept the process alive until its deadline: "exporter stopped" was logged at 10 s and the process
exited at 58 s, past Kubernetes' 30 s grace (then SIGKILL). The stop timeouts shipped agree with the drain.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter.cli.running import EXIT_GRACE_SECONDS
from exporter.web.server import SHUTDOWN_DRAIN_SECONDS, SHUTDOWN_GRACE_SECONDS
from tests.processes import http_get, wait_for
from tests.raw_servers import tcp_server

ROOT = Path(__file__).resolve().parent.parent
MARGIN_SECONDS = 3.0
"""Past the drain: cancelling, closing the connections and exiting take well under a second."""


class NeverAnswers:
    """A Room that accepts, reads the WebSocket upgrade and says nothing until the test ends."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.done = threading.Event()

    def __call__(self, connection: socket.socket) -> None:
        connection.recv(65536)
        self.asked.set()
        self.done.wait(120)


@pytest.fixture
def never_answers() -> Iterator[tuple[NeverAnswers, int]]:
    room = NeverAnswers()
    with tcp_server(room) as port:
        try:
            yield room, port
        finally:
            room.done.set()


def test_sigterm_during_a_probe_of_a_room_that_never_answers_exits_within_the_drain(
    processes, tmp_path, never_answers
):
    room, port = never_answers
    config = tmp_path / "fleet.yml"
    config.write_text("modules:\n  hang:\n    timeout: 60s\nallowed_targets: [127.0.0.1]\n")
    exporter = processes["exporter"]("--config.file", str(config), "--log.level", "debug")
    url = f"http://127.0.0.1:{exporter.ports['http']}/probe?target=127.0.0.1:{port}&module=hang"
    answers: list[object] = []

    def scrape() -> None:
        try:
            answers.append(http_get(url, timeout=90))
        except OSError as error:
            answers.append(error)

    threading.Thread(target=scrape, daemon=True).start()
    assert room.asked.wait(15), "the probe reached the Room"
    started = time.monotonic()
    exporter.popen.send_signal(signal.SIGTERM)
    try:
        code = exporter.popen.wait(SHUTDOWN_DRAIN_SECONDS + MARGIN_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {SHUTDOWN_DRAIN_SECONDS + MARGIN_SECONDS:g} s after SIGTERM")
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed > SHUTDOWN_DRAIN_SECONDS - 0.5, "the answer in progress had its drain time"
    stderr = exporter.stderr
    assert "Traceback" not in stderr
    assert "letting the scrapes in progress finish" in stderr
    assert "collections still waiting on a Room were cancelled" in stderr, stderr[-2000:]
    assert "exporter stopped" in stderr


def test_sigterm_with_nothing_in_flight_exits_at_once(processes):
    exporter = processes["exporter"]("--target", "127.0.0.1:1")
    assert http_get(f"http://127.0.0.1:{exporter.ports['http']}/healthz")[0] == 200
    started = time.monotonic()
    exporter.popen.send_signal(signal.SIGTERM)
    assert exporter.popen.wait(5) == 0
    assert time.monotonic() - started < 2
    wait_for(exporter, "stderr", "exporter stopped")


def test_a_thread_that_cannot_be_interrupted_does_not_hold_the_exit(tmp_path):
    """A name lookup blocked in getaddrinfo cannot be cancelled: past EXIT_GRACE_SECONDS the process leaves
    without it, with one log line, rather than wait for it (here a plain non-daemon thread stands in)."""
    script = (
        "import logging, threading, time\n"
        "from exporter.cli.running import leave_promptly\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "threading.Thread(target=time.sleep, args=(60,), name='stuck').start()\n"
        "leave_promptly()\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT, check=False
    )
    assert result.returncode == 0
    assert time.monotonic() - started < EXIT_GRACE_SECONDS + 2
    lines = [line for line in result.stderr.splitlines() if "exiting without waiting" in line]
    assert len(lines) == 1 and "stuck" in lines[0], result.stderr


def test_the_shipped_stop_timeouts_leave_room_for_the_drain():
    """systemd sends SIGKILL after TimeoutStopSec, Kubernetes after terminationGracePeriodSeconds: both must
    outlast the drain, the grace for the connections and the exit grace."""
    needed = SHUTDOWN_DRAIN_SECONDS + SHUTDOWN_GRACE_SECONDS + 2 * EXIT_GRACE_SECONDS
    unit = (ROOT / "contrib/systemd/trueconf-exporter.service").read_text()
    [stop] = re.findall(r"^TimeoutStopSec=(\d+)s$", unit, re.MULTILINE)
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert needed < int(stop) == grace <= 30  # Kubernetes' default is 30 s: never longer than that
    docs = (ROOT / "docs/deployment.md").read_text()
    assert f"TimeoutStopSec={stop}s" in docs and f"terminationGracePeriodSeconds: {grace}" in docs
