"""The demo fleet: a few emulated Rooms with different lives, on fixed loopback ports, so that one exporter in
multi-target mode, prometheus/prometheus.yml and the alerts all have something real to show within minutes.

prometheus/prometheus.yml lists exactly these Rooms (a test keeps the two in step).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from exporter.emulator.faults import Fault
from exporter.emulator.living import LivingRoom
from exporter.emulator.scenario import Scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings

FIRST_PORT = 18801


@dataclass(frozen=True)
class DemoRoom:
    name: str
    offset: int
    """Its WebSocket port is FIRST_PORT + offset."""
    site: str
    life: str
    """What an operator sees on the dashboard and the status page."""
    listening: bool = True

    def port(self, first_port: int = FIRST_PORT) -> int:
        return first_port + self.offset


ROOMS = (
    DemoRoom(
        "reception", 0, "floor-1", "healthy: files both ways, calls, briefly off its server now and then"
    ),
    DemoRoom("board-room", 1, "floor-1", "a transfer stuck waiting for over an hour"),
    DemoRoom("training", 2, "floor-1", "most transfers fail"),
    DemoRoom("lobby", 3, "floor-2", "offline, nothing listens: reason connect", listening=False),
    DemoRoom("old-room", 4, "floor-2", "without the optional methods: up, no availability or version"),
    DemoRoom("forbidden", 5, "floor-2", "file transfer forbidden by the server: up, availability 0"),
)

STUCK = Scenario(
    entries=[
        {"fileRequestId": "demo-stuck-1", "fileName": "handout.pdf", "status": 1, "size": 481_000,
         "_ageSeconds": 4000, "peerId": "905@demo.trueconf", "peerDn": "Guest", "fileId": 100000001},
        {"fileRequestId": "demo-done-1", "fileName": "agenda.pdf", "status": 3, "size": 52_000,
         "_ageSeconds": 300, "confId": "000001703e81e38e@demo.trueconf#vcs", "fileId": 100000002},
    ]
)  # fmt: skip
FORBIDDEN = Scenario(availability=0)
"""A Room whose server forbids file transfer: no requests either way, availability 0 (reference §5)."""


def emulated_room(room: DemoRoom, first_port: int = FIRST_PORT) -> EmulatedRoom:
    """The emulated Room that lives `room`'s life on its port (not for a Room that is offline)."""
    settings = EmulatorSettings(websocket_port=room.port(first_port), web_port=0)
    if room.name == "board-room":
        return EmulatedRoom(settings, scenario=STUCK)
    if room.name == "forbidden":
        return EmulatedRoom(settings, scenario=FORBIDDEN)
    if room.name == "old-room":
        settings.fault = Fault.OPTIONAL_UNKNOWN
    living = LivingRoom(
        rng=random.Random(room.offset + 1),
        mean_seconds_between_requests=12.0,
        incoming_rng=random.Random(room.offset + 101),
        state_rng=random.Random(room.offset + 201),
    )
    if room.name == "training":
        living.fates = (("failed", 0.7), ("delivered", 0.3))
    living.start(time.time())
    return EmulatedRoom(settings, living=living)
