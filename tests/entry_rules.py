"""The rules for one entry of a request list (reference §4 to §7), applied one entry at a time: the oracle
that file_requests.aggregate (and ledger.listing) must always equal. Built from the same parse_* functions
as aggregate's general path, so it checks aggregate's fast path for documented shapes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.room.file_requests import PENDING_STATUSES, Snapshot, parse_size, parse_status, parse_timestamp


@dataclass(frozen=True)
class Entry:
    """One entry reduced to what the metrics need; None fields mean the Room sent no usable value."""

    status: str
    destination: str
    size_bytes: int | None
    created_at: float | None
    malformed: bool


def classify(entry: Any) -> Entry | None:
    """One list entry, or None when it is not a JSON object. A `size` that is missing or null falls back to
    `fileSize` (reference §6)."""
    if not isinstance(entry, dict):
        return None
    status, bad_status = parse_status(entry.get("status"))
    size = entry.get("size")
    size_bytes, bad_size = parse_size(entry.get("fileSize") if size is None else size)
    created_at, bad_timestamp = parse_timestamp(entry.get("timestamp"))
    destination = "conference" if entry.get("confId") not in (None, "") else "peer"
    return Entry(status, destination, size_bytes, created_at, bad_status or bad_size or bad_timestamp)


def reference(entries: Iterable[Any]) -> Snapshot:
    """The snapshot of `entries`, one entry at a time."""
    snapshot = Snapshot()
    for entry in entries:
        snapshot.entries += 1
        request = classify(entry)
        if request is None:
            snapshot.malformed += 1
            continue
        key = (request.status, request.destination)
        snapshot.counts[key] += 1
        snapshot.size_bytes[key] += request.size_bytes or 0
        snapshot.malformed += request.malformed
        oldest = snapshot.oldest_pending_created_at
        if request.status in PENDING_STATUSES and request.created_at is not None:
            current = oldest[request.status]
            if current is None or request.created_at < current:
                oldest[request.status] = request.created_at
    return snapshot
