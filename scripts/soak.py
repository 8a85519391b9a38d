#!/usr/bin/env python3
"""Soak test: thousands of scrapes of one exporter process while its Room is healthy, faulty, gone and back.

Not part of `make test` (it takes a few minutes); run it with `make soak` or
`.venv/bin/python scripts/soak.py [--scrapes N] [--concurrency N]`.

The Room is an emulator inside this script whose behaviour is switched between phases (every fault mode,
a wrong PIN, the Room stopped and restarted on the same port). The exporter is a real `trueconf-exporter
serve` process. Every answer is checked (HTTP 200, `trueconf_up` and the failure reason). After a warm-up
cycle through every phase, the exporter's open file descriptors, threads and resident memory are measured;
they are measured again at the end, and the script exits 1 if any grew beyond a small tolerance (or if any
answer was wrong), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# After the path set-up, so the checkout's code is used.
from exporter.emulator.faults import Fault  # noqa: E402
from exporter.emulator.scenario import load_scenario  # noqa: E402
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, RunningEmulator  # noqa: E402
from exporter.room import Reason  # noqa: E402
from tests.exposition import samples  # noqa: E402
from tests.processes import Process, http_get, start_exporter  # noqa: E402

PIN = "2468"
MiB = 1024 * 1024

TIMEOUT_FAULTS = (
    Fault.NO_HANDSHAKE,
    Fault.SILENT,
    Fault.NO_AUTH_REPLY,
    Fault.SLOW_REPLY,
    Fault.ENDLESS_NOTIFICATIONS,
)
PROTOCOL_FAULTS = (
    Fault.NOT_JSON,
    Fault.NOT_OBJECT,
    Fault.BINARY_FRAME,
    Fault.DEEP_JSON,
    Fault.MISSING_LIST,
    Fault.CLOSE_MID_REPLY,
    Fault.CLOSE_BEFORE_REPLY,
    Fault.HUGE_REPLY,
    Fault.HUGE_FRAGMENTED_REPLY,
)


@dataclass
class Phase:
    """A state of the Room and what every scrape must say while it lasts (None: up)."""

    name: str
    enter: Callable[[], None]
    reason: Reason | None
    weight: float = 1.0


@dataclass
class Figures:
    fds: int
    threads: int
    rss_bytes: int

    def __str__(self) -> str:
        return f"fds={self.fds} threads={self.threads} rss={self.rss_bytes / MiB:.1f}MiB"


def figures(pid: int) -> Figures:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return Figures(
        fds=len(list(Path(f"/proc/{pid}/fd").iterdir())),
        threads=int(status["Threads"]),
        rss_bytes=int(status["VmRSS"].split()[0]) * 1024,
    )


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.settings = EmulatorSettings(
            websocket_port=0, web_port=0, pin=PIN, slow_reply_seconds=2.0, huge_reply_bytes=16 * MiB
        )
        self.emulator = self._start_room()
        assert self.emulator.ports is not None
        self.settings.websocket_port = self.emulator.ports.websocket
        self.settings.web_port = self.emulator.ports.web
        self.exporter: Process = start_exporter(
            workdir,
            "--target",
            f"ws://127.0.0.1:{self.settings.websocket_port}",
            "--timeout",
            "10",
            env={"TRUECONF_EXPORTER_PIN": PIN},
        )
        self.url = f"http://127.0.0.1:{self.exporter.ports['http']}/metrics"
        self.wrong: list[str] = []
        self.scrapes = 0

    def _start_room(self) -> RunningEmulator:
        emulator = RunningEmulator(EmulatedRoom(self.settings, scenario=load_scenario("doc-example")))
        emulator.start()
        return emulator

    def phases(self) -> list[Phase]:
        def fault(which: Fault) -> Callable[[], None]:
            def enter() -> None:
                self.settings.fault = which

            return enter

        def wrong_pin() -> None:
            self.settings.pin = "0000"

        def room_gone() -> None:
            self.emulator.stop()

        phases = [Phase("healthy", fault(Fault.NONE), None, weight=3)]
        phases += [Phase(f.value, fault(f), Reason.TIMEOUT) for f in TIMEOUT_FAULTS]
        phases += [
            Phase(f.value, fault(f), Reason.PROTOCOL, weight=0.5 if "huge" in f.value else 1)
            for f in PROTOCOL_FAULTS
        ]
        phases += [
            Phase(
                Fault.HTTP_INSTEAD_OF_WEBSOCKET.value, fault(Fault.HTTP_INSTEAD_OF_WEBSOCKET), Reason.CONNECT
            ),
            Phase(Fault.OLD_ROOM.value, fault(Fault.OLD_ROOM), Reason.API),
            Phase(Fault.NOTIFICATION_FLOOD.value, fault(Fault.NOTIFICATION_FLOOD), None, weight=0.2),
            Phase("wrong-pin", wrong_pin, Reason.AUTH),
            Phase("room-stopped", room_gone, Reason.CONNECT),
        ]
        return phases

    def leave(self, phase: Phase) -> None:
        self.settings.fault = Fault.NONE
        self.settings.pin = PIN
        if phase.name == "room-stopped":
            self.emulator = self._start_room()

    def scrape(self, phase: Phase) -> None:
        headers = {} if phase.reason is None else {"X-Prometheus-Scrape-Timeout-Seconds": "1.0"}
        try:
            status, _, body = http_get(self.url, headers, timeout=30)
        except OSError as error:
            self.wrong.append(f"{phase.name}: no answer ({error})")
            return
        if status != 200:
            self.wrong.append(f"{phase.name}: HTTP {status}")
            return
        found = samples(body.decode())
        up = found[("trueconf_up", frozenset())]
        failed = [
            r for r in Reason if found[("trueconf_scrape_error", frozenset({("reason", r.value)}))] == 1
        ]
        expected_up = phase.reason is None
        if up != int(expected_up) or failed != ([] if expected_up else [phase.reason]):
            self.wrong.append(f"{phase.name}: up={up} reasons={[r.value for r in failed]}")

    def run_phase(self, phase: Phase, scrapes: int) -> None:
        phase.enter()
        try:
            with ThreadPoolExecutor(self.args.concurrency) as pool:
                list(pool.map(lambda _: self.scrape(phase), range(scrapes)))
            self.scrapes += scrapes
        finally:
            self.leave(phase)

    def cycle(self, total: int, verbose: bool) -> None:
        phases = self.phases()
        unit = total / sum(p.weight for p in phases)
        for phase in phases:
            count = max(1, round(unit * phase.weight))
            started = time.monotonic()
            self.run_phase(phase, count)
            if verbose:
                print(
                    f"  {phase.name:<24} {count:>5} scrapes {time.monotonic() - started:6.1f}s "
                    f"exporter {figures(self.exporter.popen.pid)}",
                    flush=True,
                )

    def settled(self, baseline: Figures) -> Figures:
        """Figures once the last scrape's threads have ended (bounded poll, not a fixed sleep)."""
        deadline = time.monotonic() + 10
        now = figures(self.exporter.popen.pid)
        while now.threads > baseline.threads and time.monotonic() < deadline:
            time.sleep(0.1)
            now = figures(self.exporter.popen.pid)
        return now

    def close(self) -> None:
        self.exporter.stop()
        self.emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scrapes", type=int, default=3000, help="scrapes in the measured run (default 3000)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="scrapes in flight at once (default 8)")
    parser.add_argument("--max-fd-growth", type=int, default=4)
    parser.add_argument("--max-thread-growth", type=int, default=2)
    parser.add_argument("--max-rss-growth-mib", type=float, default=16.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trueconf-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            print(f"exporter pid {soak.exporter.popen.pid} at {soak.url}; warm-up cycle", flush=True)
            soak.cycle(max(100, args.scrapes // 10), verbose=False)
            start = soak.settled(figures(soak.exporter.popen.pid))
            print(f"start: {start}", flush=True)
            started = time.monotonic()
            soak.cycle(args.scrapes, verbose=True)
            end = soak.settled(start)
            elapsed = time.monotonic() - started
            alive = soak.exporter.alive()
        finally:
            soak.close()

    print(f"end:   {end}")
    print(
        f"{soak.scrapes} scrapes in all, measured run {elapsed:.0f}s; exporter alive until stopped: {alive}"
    )
    problems = []
    if end.fds - start.fds > args.max_fd_growth:
        problems.append(f"open file descriptors grew by {end.fds - start.fds}")
    if end.threads - start.threads > args.max_thread_growth:
        problems.append(f"threads grew by {end.threads - start.threads}")
    if (end.rss_bytes - start.rss_bytes) / MiB > args.max_rss_growth_mib:
        problems.append(f"resident memory grew by {(end.rss_bytes - start.rss_bytes) / MiB:.1f} MiB")
    if soak.wrong:
        problems.append(f"{len(soak.wrong)} wrong answers, first: {soak.wrong[:5]}")
    if not alive:
        problems.append("the exporter process died")
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print("OK: no growth beyond tolerance, every answer right")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
