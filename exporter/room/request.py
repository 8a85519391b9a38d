"""What one scrape asks of one Room, decided before it starts: the one object the collection path hands on."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.methods import OUTGOING_METHOD
from exporter.room.budget import DEFAULT_MAX_MESSAGE_BYTES
from exporter.room.target import RoomTarget


@dataclass(frozen=True)
class RoomRequest:
    """Where, as whom, what and within which limit. Hashable: scrapes of equal requests at once share one
    collection. The PIN never shows in its repr (a log line or a traceback may print one)."""

    target: RoomTarget
    pin: str | None = field(default=None, repr=False)
    methods: tuple[str, ...] = (OUTGOING_METHOD,)
    """Asked in one round trip, getOutgoingFilesRequests first (`exporter.methods.methods_for`)."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Any one message from the Room larger than this is refused (reason `protocol`) before it is read."""
    keep_session: bool = True
    """With a session pool: the Room's kept session, reused or opened; otherwise a connection of the scrape's
    own, closed after it."""
