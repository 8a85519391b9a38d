"""A fleet of emulated Rooms across sites behind one multi-target exporter, scraped by a real Prometheus.

Shared by tests/test_dashboard_sites.py (a dozen Rooms) and scripts/dashboard_fleet.py (200 Rooms). The
Rooms are in-process emulators (a thread and an event loop each, so hundreds are cheap); the exporter is a
real `trueconf-exporter serve --config.file` process; Prometheus is Debian's binary with
prometheus/prometheus.yml's /probe job (its relabelling as shipped), the Rooms grouped by `site` as that file
shows. Once Prometheus has read every Room, `run_transfers` has each answering Room send and receive a few
files that then arrive or fail, so the transfer counters have something to count.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.emulator.scenario import AVAILABLE, READY, Scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, RunningEmulator
from tests import dashboard_queries as dq
from tests.processes import Process, free_port, start_exporter, wait_until
from tests.test_prometheus_e2e import instant_vector, prometheus_api, start_prometheus

PROBE_JOB = "trueconf-probe"
"""The /probe job of prometheus/prometheus.yml."""
EXPORTER_JOB = "trueconf"
"""Its /metrics job: the exporter's own metrics (no site)."""
SERVER_LOGIN_REQUIRED = 2
"""`getFileTransferAvailability` and `getAppState` both use 2 for "not logged in to its server"."""
FAILED, WAITING, PROCESSED = 0, 1, 3
"""Request statuses (reference §4)."""
TRANSFER_BYTES = 2_000_000
LIST_METHODS = ("getOutgoingFilesRequests", "getIncomingFilesRequests")


@dataclass(frozen=True)
class FleetRoom:
    """One Room of the fleet: which site, whether anything listens, whether it is logged in to its server
    (then it reports its name). Its requests follow its index, so ages and failures differ between Rooms."""

    index: int
    site: str
    listening: bool = True
    logged_in: bool = True

    @property
    def name(self) -> str:
        return f"Room {self.index:03d}"

    @property
    def waiting_age(self) -> int:
        return 80 * (1 + self.index % 16)

    @property
    def downloading_age(self) -> int:
        return 55 * (1 + self.index % 16)

    @property
    def failed(self) -> int:
        return self.index % 4

    @property
    def malformed(self) -> int:
        return 1 if self.index % 7 == 3 else 0

    def scenario(self) -> Scenario:
        peer = {"peerId": "820_1@sites.test", "peerDn": "820_1"}
        entries: list[Any] = [
            {"fileRequestId": f"r{self.index}-waiting", "fileName": "agenda.pdf", "status": 1,
             "size": 120_000, "_ageSeconds": self.waiting_age, "fileId": 1, **peer},
            {"fileRequestId": f"r{self.index}-downloading", "fileName": "slides.pptx", "status": 2,
             "size": 4_500_000, "_ageSeconds": self.downloading_age, "fileId": 2, **peer},
        ]  # fmt: skip
        entries += [
            {"fileRequestId": f"r{self.index}-failed-{n}", "fileName": "photo.jpg", "status": 0, "size": 1000,
             "_ageSeconds": 30 + n, "fileId": 10 + n, **peer}
            for n in range(self.failed)
        ]  # fmt: skip
        entries += [
            {"fileRequestId": f"r{self.index}-malformed", "status": 1, "size": "large",
             "fileName": "notes.txt", "_ageSeconds": 20, "fileId": 30, **peer}
        ] * self.malformed  # fmt: skip
        incoming = [
            {"fileRequestId": f"r{self.index}-in", "fileName": "handout.pdf", "status": 1, "size": 481_000,
             "_ageMilliseconds": 1000 * (20 + self.index), **peer}
        ]  # fmt: skip
        return Scenario(
            entries=entries,
            incoming=incoming,
            notifications_before_reply=0,
            availability=AVAILABLE if self.logged_in else SERVER_LOGIN_REQUIRED,
            app_state=READY if self.logged_in else SERVER_LOGIN_REQUIRED,
            auth_info={"peerId": f"room-{self.index:03d}@sites.test", "peerDn": self.name},
        )

    @property
    def transfers_out(self) -> tuple[int, int]:
        """(processed, failed): the outgoing transfers it makes while Prometheus watches (`run_transfers`):
        the processed ones to a peer, the failed ones to a conference."""
        return (1 + self.index % 2, self.index % 3) if self.listening else (0, 0)

    @property
    def transfers_in(self) -> tuple[int, int]:
        """(processed, failed): the incoming transfers it receives while Prometheus watches, from a peer."""
        return (self.index % 3, (self.index + 1) % 2) if self.listening else (0, 0)

    @property
    def listed_failed(self) -> int:
        """The failed outgoing requests it lists once its transfers are done (it keeps finished requests)."""
        return self.failed + self.transfers_out[1]

    def transfer_entries(self, finished: bool) -> tuple[list[Any], list[Any]]:
        """Its transfers as list entries, outgoing and incoming: waiting for the recipient, or finished."""
        peer = {"peerId": "820_1@sites.test", "peerDn": "820_1"}
        conference = {"confId": "000001703e81e38e@sites.test#vcs"}

        def entries(prefix: str, counts: tuple[int, int], age: dict[str, int]) -> list[Any]:
            processed, failed = counts
            made = []
            for n in range(processed + failed):
                ends_processed = n < processed
                status = (PROCESSED if ends_processed else FAILED) if finished else WAITING
                side = peer if ends_processed or prefix == "in" else conference
                made.append({"fileRequestId": f"r{self.index}-{prefix}-new-{n}", "fileName": "report.pdf",
                             "status": status, "size": TRANSFER_BYTES, **age, **side})  # fmt: skip
            return made

        return (
            entries("out", self.transfers_out, {"_ageSeconds": 5}),
            entries("in", self.transfers_in, {"_ageMilliseconds": 5000}),
        )

    def needs_attention(self, waiting_limit: float, downloading_limit: float) -> bool:
        """The dashboard's (and the alerts') verdict: down, a transfer past a threshold, not available, or
        malformed entries."""
        return (
            not self.listening
            or self.waiting_age > waiting_limit
            or self.downloading_age > downloading_limit
            or not self.logged_in
            or self.malformed > 0
        )


def plan(sites: dict[str, int], down: int = 1, logged_out: int = 1) -> list[FleetRoom]:
    """`sites` Rooms per site, in order; the last `down` Rooms listen to nothing, the `logged_out` before
    them are not logged in to their server (no name, file transfer not available)."""
    rooms = []
    index = 0
    for site, count in sites.items():
        for _ in range(count):
            rooms.append(FleetRoom(index, site))
            index += 1
    for position in range(len(rooms) - down, len(rooms)):
        rooms[position] = FleetRoom(position, rooms[position].site, listening=False)
    for position in range(len(rooms) - down - logged_out, len(rooms) - down):
        rooms[position] = FleetRoom(position, rooms[position].site, logged_in=False)
    return rooms


@dataclass
class Fleet:
    """The running fleet: Prometheus's URL, the exporter's, each Room's `instance` label, and the emulators of
    the Rooms that answer."""

    prometheus_url: str
    exporter_url: str
    instances: dict[str, FleetRoom] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    emulators: dict[str, RunningEmulator] = field(default_factory=dict)

    def api(self, path: str, **params: str) -> Any:
        return prometheus_api(self.prometheus_url, path, **params)

    def query(self, expr: str) -> list[dict[str, Any]]:
        return instant_vector(self.prometheus_url, expr)

    def query_range(self, expr: str, seconds: float, step: float) -> list[dict[str, Any]]:
        end = float(self.api("/api/v1/query", query="time()")["result"][0])
        data = self.api(
            "/api/v1/query_range", query=expr, start=str(end - seconds), end=str(end), step=str(step)
        )
        assert data["resultType"] == "matrix", (expr, data["resultType"])
        return list(data["result"])

    def scraped(self, samples: int) -> bool:
        """Whether Prometheus holds `samples` scrapes of every Room."""
        return self.fewest_scrapes() >= samples

    def fewest_scrapes(self) -> int:
        """The scrapes Prometheus holds of the Room it scraped least (0 until it holds every Room)."""
        counts = self.query(f'count_over_time(trueconf_up{{job="{PROBE_JOB}"}}[10m])')
        if len(counts) != len(self.instances):
            return 0
        return min(int(float(s["value"][1])) for s in counts)


def prometheus_config(rooms: dict[str, FleetRoom], exporter: str, interval: str) -> dict[str, Any]:
    """prometheus/prometheus.yml's /probe job as shipped (relabelling included) with the Rooms grouped by
    site, aimed at `exporter`; its /metrics job reads the exporter itself."""
    example = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in example["scrape_configs"]}
    probe, own = jobs[PROBE_JOB], jobs[EXPORTER_JOB]
    by_site: dict[str, list[str]] = {}
    for instance, room in rooms.items():
        by_site.setdefault(room.site, []).append(instance)
    probe["static_configs"] = [
        {"targets": targets, "labels": {"site": site}} for site, targets in by_site.items()
    ]
    [address] = [rule for rule in probe["relabel_configs"] if rule["target_label"] == "__address__"]
    address["replacement"] = exporter
    own["static_configs"] = [{"targets": [exporter]}]
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [own, probe],
    }


@contextmanager
def running_fleet(
    workdir: Path, rooms: list[FleetRoom], interval: str = "1s", room_timeout: str = "800ms"
) -> Iterator[Fleet]:
    """Start the Rooms, the exporter and Prometheus; stop them all on the way out."""
    emulators: list[RunningEmulator] = []
    processes: list[Process] = []
    try:
        instances: dict[str, FleetRoom] = {}
        answering: dict[str, RunningEmulator] = {}
        for room in rooms:
            if room.listening:
                emulator = RunningEmulator(
                    EmulatedRoom(EmulatorSettings(websocket_port=0, web_port=0), room.scenario())
                )
                emulators.append(emulator)
                port = emulator.start().websocket
                answering[f"127.0.0.1:{port}"] = emulator
            else:
                port = free_port()  # bound and closed again: nothing listens there
            instances[f"127.0.0.1:{port}"] = room
        config_file = workdir / "exporter.yml"
        config_file.write_text(
            yaml.safe_dump(
                {"modules": {"default": {"timeout": room_timeout}}, "allowed_targets": ["127.0.0.1"]}
            )
        )
        exporter = start_exporter(workdir, "--config.file", str(config_file))
        processes.append(exporter)
        exporter_address = f"127.0.0.1:{exporter.ports['http']}"
        prometheus, url = start_prometheus(workdir, prometheus_config(instances, exporter_address, interval))
        processes.append(prometheus)
        yield Fleet(url, f"http://{exporter_address}", instances, processes, answering)
    finally:
        for process in reversed(processes):
            process.stop()
        for emulator in emulators:
            emulator.stop()


def wait_for_scrapes(fleet: Fleet, samples: int, seconds: float) -> None:
    prometheus = fleet.processes[-1]
    assert wait_until(lambda: fleet.scraped(samples), seconds), (
        f"Prometheus never scraped every Room {samples} times:\n{prometheus.stderr[-4000:]}"
    )


def _lists_asked(emulator: RunningEmulator) -> int:
    """How often the Room was asked for its outgoing and its incoming list, whichever fewer."""
    asked = emulator.room.requests
    return min(asked[method] for method in LIST_METHODS)


def run_transfers(fleet: Fleet, seconds: float) -> None:
    """Every answering Room lists its transfers (`FleetRoom.transfer_entries`) waiting, then finished, each
    step held until the exporter has asked the Room for both lists since; returns once Prometheus has scraped
    every Room twice more. Call it once Prometheus has read every Room: what a Room lists at the exporter's
    first reading is history, not counted."""
    for finished in (False, True):
        for instance, emulator in fleet.emulators.items():
            room = fleet.instances[instance]
            outgoing, incoming = room.transfer_entries(finished)
            base = room.scenario()
            scenario = emulator.room.scenario
            scenario.entries, scenario.incoming = base.entries + outgoing, base.incoming + incoming
        asked = {instance: _lists_asked(emulator) for instance, emulator in fleet.emulators.items()}
        assert wait_until(functools.partial(_asked_since, fleet, asked), seconds), (
            "the exporter did not read every Room's lists again"
        )
    wait_for_scrapes(fleet, fleet.fewest_scrapes() + 2, seconds)


def _asked_since(fleet: Fleet, asked: dict[str, int]) -> bool:
    return all(_lists_asked(emulator) > asked[instance] for instance, emulator in fleet.emulators.items())
