"""`check`'s one-line human verdict on a collection."""

from __future__ import annotations

from types import MappingProxyType

from exporter.collect.collection import Collection
from exporter.room.errors import REASON_HINTS, sentence
from exporter.room.picture import RoomPicture


def human_duration(seconds: float) -> str:
    """4m12s, 1h03m, 12s, 3d04h: short enough for one line."""
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def verdict(collection: Collection) -> str:
    """What a person reads first: did the Room answer, and what does it say (or what to try)."""
    snapshot = collection.snapshot
    if snapshot is None:
        assert collection.error is not None
        error = collection.error
        hint = sentence(REASON_HINTS[error.reason])
        return f"Room did not answer ({error.reason}): {sentence(error.message)} Try: {hint}"
    parts = [f"Room answered: {snapshot.total} outgoing requests", f"{snapshot.pending} pending"]
    for status in ("waiting", "downloading"):
        if snapshot.oldest_pending_created_at[status] is not None:
            age = snapshot.oldest_pending_age(status, collection.collected_at)
            parts.append(f"oldest {status} {human_duration(age)}")
    if snapshot.malformed:
        parts.append(f"{snapshot.malformed} malformed entries")
    if collection.picture is not None:
        parts.extend(picture_parts(collection.picture))
    return ", ".join(parts)


AVAILABILITY_WORDS = MappingProxyType(
    {
        "forbidden_by_server": "file transfer forbidden by the server",
        "forbidden_by_license": "file transfer forbidden by the licence",
        "server_login_required": "file transfer waits for a login to a server",
        "available": "file transfer available",
    }
)


def picture_parts(picture: RoomPicture) -> list[str]:
    """The optional parts of the verdict, each only when this scrape (or the session) learnt it."""
    parts = []
    if picture.incoming is not None:
        parts.append(f"{picture.incoming.total} incoming requests ({picture.incoming.pending} pending)")
    if picture.availability is not None:
        parts.append(AVAILABILITY_WORDS.get(picture.availability, "file transfer availability unknown"))
    if picture.app_state is not None:
        parts.append(f"app state {picture.app_state.replace('_', ' ')}")
    if picture.version is not None:
        parts.append(f"Room version {picture.version}")
    return parts
