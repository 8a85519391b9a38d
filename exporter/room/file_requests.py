"""The model of an outgoing file request and the pure parsing of a Room's reply into a snapshot.

No I/O happens here, so every quirk of the Room API (reference §4 and §6) is testable in microseconds:
seconds-or-milliseconds timestamps, a missing `status` or `size`, a conference entry without `peerId`,
entries that are not objects at all. Entries are independent: one bad entry never spoils the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

STATUSES: tuple[str, ...] = ("failed", "waiting", "downloading", "processed", "unknown")
"""Every value of the `status` label, in the Room's numeric order, `unknown` last."""

PENDING_STATUSES: tuple[str, ...] = ("waiting", "downloading")
"""Statuses in which a transfer is still open (reference §4: status 1 or 2)."""

DESTINATIONS: tuple[str, ...] = ("peer", "conference")
"""Every value of the `destination` label."""

_STATUS_BY_CODE: dict[int, str] = {0: "failed", 1: "waiting", 2: "downloading", 3: "processed"}

MILLISECONDS_THRESHOLD = 1e11
"""A timestamp above this is in milliseconds (reference §6); 1e11 seconds is the year 5138."""

MAX_NUMBER = 2**63
"""A number this large is no real size, status or timestamp. JSON integers are unbounded, and a value beyond
float range (or a sum of such) would make the whole exposition fail, so it counts as a defect instead."""

REPLY_LIST_KEY = "outgoingFilesRequests"


class ReplyShapeError(ValueError):
    """The reply has no list of requests where the reference says one must be."""


@dataclass(frozen=True)
class FileRequest:
    """One entry of `getOutgoingFilesRequests`, reduced to what the metrics need.

    `size_bytes` and `created_at` are None when the Room sent no usable value; `malformed` records that an
    entry had a defect, so the exporter can count defects without dropping the entry.
    """

    status: str
    destination: str
    size_bytes: int | None
    created_at: float | None
    malformed: bool


@dataclass
class Snapshot:
    """What one reply says, aggregated by (status, destination) with every label pair present."""

    counts: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(s, d): 0 for s in STATUSES for d in DESTINATIONS}
    )
    size_bytes: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(s, d): 0 for s in STATUSES for d in DESTINATIONS}
    )
    oldest_pending_created_at: dict[str, float | None] = field(
        default_factory=lambda: dict.fromkeys(PENDING_STATUSES)
    )
    malformed: int = 0
    entries: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        return sum(n for (status, _), n in self.counts.items() if status in PENDING_STATUSES)

    def oldest_pending_age(self, status: str, now: float) -> float:
        """Age in seconds at `now` of the oldest request in `status`; 0 when there is none or the Room's
        clock is ahead of ours (reference §6: never a negative age)."""
        created_at = self.oldest_pending_created_at[status]
        if created_at is None:
            return 0.0
        return max(0.0, now - created_at)

    def add(self, request: FileRequest | None) -> None:
        """Account for one entry; None stands for an entry that was not a JSON object at all."""
        self.entries += 1
        if request is None:
            self.malformed += 1
            return
        key = (request.status, request.destination)
        self.counts[key] += 1
        if request.size_bytes is not None:
            self.size_bytes[key] += request.size_bytes
        if request.malformed:
            self.malformed += 1
        if request.status in PENDING_STATUSES and request.created_at is not None:
            oldest = self.oldest_pending_created_at[request.status]
            if oldest is None or request.created_at < oldest:
                self.oldest_pending_created_at[request.status] = request.created_at


def _number(value: Any) -> float | None:
    """A finite JSON number below MAX_NUMBER, or None. Booleans are not numbers here although Python says
    they are."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if abs(value) >= MAX_NUMBER:
        return None
    return value


def parse_status(value: Any) -> tuple[str, bool]:
    """Map the Room's status code to a label value; returns (status, defective).

    A valid integer outside 0..3 is a status this exporter does not know yet (`unknown`), not a defect.
    """
    number = _number(value)
    if number is None or number != int(number):
        return "unknown", True
    return _STATUS_BY_CODE.get(int(number), "unknown"), False


def parse_size(value: Any) -> tuple[int | None, bool]:
    """Bytes of a request; returns (bytes or None, defective). A negative size contributes nothing."""
    number = _number(value)
    if number is None:
        return None, True
    if number < 0:
        return None, False
    return int(number), False


def parse_timestamp(value: Any) -> tuple[float | None, bool]:
    """Unix seconds from a Room timestamp in seconds or milliseconds; returns (seconds or None, defective).

    A number that cannot be a creation time (zero or negative) is left out of ages without being a defect.
    """
    number = _number(value)
    if number is None:
        return None, True
    if number <= 0:
        return None, False
    if number > MILLISECONDS_THRESHOLD:
        return number / 1000.0, False
    return float(number), False


def parse_entry(entry: Any) -> FileRequest | None:
    """One list entry, or None when it is not a JSON object."""
    if not isinstance(entry, dict):
        return None
    status, bad_status = parse_status(entry.get("status"))
    size_bytes, bad_size = parse_size(entry.get("size"))
    created_at, bad_timestamp = parse_timestamp(entry.get("timestamp"))
    destination = "conference" if entry.get("confId") not in (None, "") else "peer"
    return FileRequest(
        status=status,
        destination=destination,
        size_bytes=size_bytes,
        created_at=created_at,
        malformed=bad_status or bad_size or bad_timestamp,
    )


def parse_outgoing_reply(reply: dict[str, Any]) -> Snapshot:
    """Aggregate a successful `getOutgoingFilesRequests` reply.

    Raises ReplyShapeError when the list is missing or is not a list: that is a protocol fault, not zero
    requests.
    """
    entries = reply.get(REPLY_LIST_KEY)
    if not isinstance(entries, list):
        raise ReplyShapeError(f"reply has no {REPLY_LIST_KEY!r} list")
    snapshot = Snapshot()
    for entry in entries:
        snapshot.add(parse_entry(entry))
    return snapshot
