"""The demo fleet: a few emulated Rooms with different lives, on fixed loopback ports, so that one exporter in
multi-target mode, prometheus/prometheus.yml and the alerts all have something real to show within minutes.

Each Room says which alert of prometheus/alerts.yml it raises and after how long, and reports its name
(`getSystemInfo`'s `authInfo`) where it can. prometheus/prometheus.yml lists exactly these Rooms, and
tests/test_demo_alerts.py checks the alerts against a real Prometheus (both kept in step by tests).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from exporter.emulator.faults import Fault
from exporter.emulator.living import ON_SERVER_LIFE, LivingRoom
from exporter.emulator.scenario import Scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings

FIRST_PORT = 18801
PEER_DOMAIN = "demo.trueconf"


@dataclass(frozen=True)
class DemoRoom:
    name: str
    offset: int
    """Its WebSocket port is FIRST_PORT + offset."""
    site: str
    display_name: str
    """The name it reports as `authInfo.peerDn` (its `peerId` is NAME@demo.trueconf)."""
    life: str
    """What an operator sees on the dashboard and the status page."""
    alert: str | None
    """The one alert of prometheus/alerts.yml it raises in Prometheus (`make demo-stack`), or None."""
    fires_after: str = ""
    """When that alert fires, counted from Prometheus's first scrape: the rule's `for:` ("10m"), or "" for a
    rule without one (it fires at the first evaluation that finds it true)."""
    expected: str = ""
    """For an alert without `for:`: when its condition first holds."""
    listening: bool = True
    reports_name: bool = True
    """False for a Room that cannot say its name: offline, or without `getSystemInfo`."""

    def port(self, first_port: int = FIRST_PORT) -> int:
        return first_port + self.offset

    @property
    def peer_id(self) -> str:
        return f"{self.name}@{PEER_DOMAIN}"

    @property
    def auth_info(self) -> dict[str, Any]:
        """`getSystemInfo`'s `authInfo`, sent while it is logged in to its server: its name."""
        return {"peerId": self.peer_id, "peerDn": self.display_name}

    @property
    def alert_text(self) -> str:
        """One line for the banners: which alert and when, or that it raises none."""
        if self.alert is None:
            return "none"
        if self.fires_after:
            return f"{self.alert}: pending at once, firing after {self.fires_after}"
        return f"{self.alert}: firing {self.expected}"


ROOMS = (
    DemoRoom(
        "reception", 0, "floor-1", "Reception",
        "healthy: files both ways, calls and conferences; every transfer arrives",
        alert=None,
    ),
    DemoRoom(
        "board-room", 1, "floor-1", "Board room", "a transfer stuck waiting for over an hour",
        alert="TrueconfFileRequestWaitingTooLong", fires_after="1m",
    ),
    DemoRoom(
        "training", 2, "floor-1", "Training", "most transfers fail (7 in 10), a new request every ~8 s",
        alert="TrueconfFileRequestsFailed",
        expected="at the first new failure scraped: usually within 1m, at most about 3m",
    ),
    DemoRoom(
        "lobby", 3, "floor-2", "Lobby", "offline, nothing listens: reason connect",
        alert="TrueconfRoomDown", fires_after="10m", listening=False, reports_name=False,
    ),
    DemoRoom(
        "old-room", 4, "floor-2", "Old room",
        "healthy, but without the optional methods: up, no name, version, app state or availability",
        alert=None, reports_name=False,
    ),
    DemoRoom(
        "forbidden", 5, "floor-2", "Forbidden",
        "file transfer forbidden by the server: up, no requests, availability 0",
        alert="TrueconfFileTransferUnavailable", fires_after="15m",
    ),
)  # fmt: skip

STUCK_ENTRIES = (
    MappingProxyType({"fileRequestId": "demo-stuck-1", "fileName": "handout.pdf", "status": 1,
     "size": 481_000, "_ageSeconds": 4000, "peerId": "905@demo.trueconf", "peerDn": "Guest",
     "fileId": 100000001}),
    MappingProxyType({"fileRequestId": "demo-done-1", "fileName": "agenda.pdf", "status": 3, "size": 52_000,
     "_ageSeconds": 300, "confId": "000001703e81e38e@demo.trueconf#vcs", "fileId": 100000002}),
)  # fmt: skip
"""The board room's list: one request waiting for over an hour, one delivered."""
FORBIDDEN_AVAILABILITY = 0
"""A Room whose server forbids file transfer: no requests either way, availability 0 (reference §5)."""
ARRIVES = (("delivered", 1.0),)
"""The healthy Rooms' requests: every one is accepted within a minute and arrives within two more, so none
waits or downloads long enough, or fails, to raise an alert."""
MOSTLY_FAILS = (("failed", 0.7), ("delivered", 0.3))
TRAINING_SECONDS_BETWEEN_REQUESTS = 8.0
"""Often enough that a new failure usually comes within seconds, and always within about two minutes; the
alert fires at the rule evaluation after the scrape that sees it (up to 30 s more with a 15 s rhythm)."""


def emulated_room(room: DemoRoom, first_port: int = FIRST_PORT) -> EmulatedRoom:
    """The emulated Room that lives `room`'s life on its port (not for a Room that is offline)."""
    settings = EmulatorSettings(websocket_port=room.port(first_port), web_port=0)
    if room.name == "board-room":
        return EmulatedRoom(
            settings, scenario=Scenario(entries=[dict(e) for e in STUCK_ENTRIES], auth_info=room.auth_info)
        )
    if room.name == "forbidden":
        scenario = Scenario(availability=FORBIDDEN_AVAILABILITY, auth_info=room.auth_info)
        return EmulatedRoom(settings, scenario=scenario)
    if room.name == "old-room":
        settings.fault = Fault.OPTIONAL_UNKNOWN  # getSystemInfo too: its name is never sent
    training = room.name == "training"
    living = LivingRoom(
        rng=random.Random(room.offset + 1),
        mean_seconds_between_requests=TRAINING_SECONDS_BETWEEN_REQUESTS if training else 12.0,
        fates=MOSTLY_FAILS if training else ARRIVES,
        incoming_rng=random.Random(room.offset + 101),
        state_rng=random.Random(room.offset + 201),
        app_state_life=dict(ON_SERVER_LIFE),  # brief outages would show as pending availability alerts
        auth_info=room.auth_info,
    )
    living.start(time.time())
    return EmulatedRoom(settings, living=living)


def alert_schedule() -> list[str]:
    """What Prometheus raises for the demo with prometheus/alerts.yml, soonest first: demo-stack prints it."""
    alerting = sorted((r for r in ROOMS if r.alert is not None), key=lambda r: _minutes(r.fires_after))
    quiet = ", ".join(r.name for r in ROOMS if r.alert is None)
    return [f"{room.name:<11} {room.alert_text}" for room in alerting] + [f"{quiet}: no alert"]


def _minutes(duration: str) -> float:
    return float(duration.removesuffix("m")) if duration else 0.0
