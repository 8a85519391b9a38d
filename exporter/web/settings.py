"""What `serve` was told about the one Room it collects: shared by the routes and the landing page."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.room import RoomTarget
from exporter.room.frames import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class ExporterSettings:
    """What `serve` was told: the Room to collect and how."""

    target: RoomTarget
    pin: str | None
    timeout_seconds: float
    process_metrics: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
