"""What `serve` was told about the one Room it collects: shared by the routes and the landing page."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.room import RoomTarget
from exporter.room.budget import DEFAULT_MAX_MESSAGE_BYTES
from exporter.room.sessions import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_SESSIONS


@dataclass(frozen=True)
class ExporterSettings:
    """What `serve` was told: the Room to collect and how."""

    target: RoomTarget
    pin: str | None
    timeout_seconds: float
    process_metrics: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    sessions: bool = True
    """Keep one authorised session per Room between scrapes (a module's `sessions` overrides it)."""
    session_idle_seconds: float = DEFAULT_IDLE_SECONDS
    max_sessions: int = DEFAULT_MAX_SESSIONS
    collectors: tuple[tuple[str, bool], ...] = ()
    """Optional methods switched off (or on) by --collector.NAME; a module's `collectors` override these."""
