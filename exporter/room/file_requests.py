"""The model of a file request and the pure parsing of a Room's list reply into a snapshot.

No I/O happens here, so every quirk of the Room API (reference §4 to §7) is testable in microseconds:
seconds-or-milliseconds timestamps, a missing `status` or `size` (or a size sent as `fileSize`), a conference
entry without `peerId`, entries that are not objects at all, a null or missing list on a successful reply.
Entries are independent: one bad entry never spoils the others. The same rules serve the outgoing list
(`getOutgoingFilesRequests`) and the incoming one (`getIncomingFilesRequests`, reference §5).

`aggregate` applies the rules to a whole list without building an object per entry, because on a large
reply that per-entry work is most of a scrape's cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from exporter.room.ledger import Listed

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("failed", "waiting", "downloading", "processed", "unknown")
"""Every value of the `status` label, in the Room's numeric order, `unknown` last."""

PENDING_STATUSES: tuple[str, ...] = ("waiting", "downloading")
"""Statuses in which a transfer is still open (reference §4: status 1 or 2)."""

DESTINATIONS: tuple[str, ...] = ("peer", "conference")
"""Every value of the `destination` label (outgoing requests)."""

SOURCES: tuple[str, ...] = DESTINATIONS
"""Every value of the `source` label (incoming requests): the same two sides, seen from the receiving end."""

_STATUS_BY_CODE: Final[Mapping[int, str]] = {0: "failed", 1: "waiting", 2: "downloading", 3: "processed"}

MILLISECONDS_THRESHOLD = 1e11
"""A timestamp above this is in milliseconds (reference §6); 1e11 seconds is the year 5138."""

MAX_NUMBER = 2**63
"""A number this large is no real size, status or timestamp. JSON integers are unbounded, and a value beyond
float range (or a sum of such) would make the whole exposition fail, so it counts as a defect instead."""

REPLY_LIST_KEY = "outgoingFilesRequests"
INCOMING_LIST_KEY = "incomingFilesRequests"


class ReplyShapeError(ValueError):
    """The reply's list of requests is something other than a list (an object, a string, a number).

    A null or missing list is not this error: a successful reply without one means zero requests (§7).
    """


@dataclass
class Snapshot:
    """What one reply says, aggregated by (status, side) with every label pair present; the side is `peer` or
    `conference` (the destination of an outgoing request, the source of an incoming one)."""

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
    listed: Listed | None = field(default=None, compare=False, repr=False)
    """What the ledger needs of each entry, when the list was read through `ledger.listing`; else None.
    Left out of equality: two snapshots are equal when the replies say the same."""

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


_STATUS_INDEX: Final[Mapping[str, int]] = {status: index for index, status in enumerate(STATUSES)}
_SIDES = len(DESTINATIONS)
_WAITING = _STATUS_INDEX["waiting"]
_DOWNLOADING = _STATUS_INDEX["downloading"]
# The fast path takes a status code as its index into STATUSES: code n must be STATUSES[n].
assert all(STATUSES[code] == label for code, label in _STATUS_BY_CODE.items())
assert set(_STATUS_BY_CODE) == set(range(len(_STATUS_BY_CODE)))
assert (STATUSES[_WAITING], STATUSES[_DOWNLOADING]) == PENDING_STATUSES


def aggregate(entries: Iterable[Any]) -> Snapshot:
    """The snapshot of a list of entries, each read by the parse_* rules: a `size` that is missing or null
    falls back to `fileSize` (the key of the history and of every file notification, reference §6), a
    non-empty `confId` makes the side `conference`, an entry that is not a JSON object is only malformed.
    `entries` may be an iterator: a reply's list is aggregated as it is decoded (protocol.decode), one entry
    alive at a time.

    The documented shapes (an integer status 0..3, a non-negative integer size, an integer timestamp in
    seconds or milliseconds) take a fast path of a few comparisons on local variables; anything else goes
    through the parse_* functions, so the two paths cannot disagree on an odd value. Tallies are kept in
    flat lists indexed by status * 2 + side and turned into the snapshot's dictionaries once at the end.
    """
    cells = len(STATUSES) * _SIDES
    counts = [0] * cells
    sizes = [0] * cells
    oldest_waiting = math.inf
    oldest_downloading = math.inf
    malformed = 0
    largest_code = len(_STATUS_BY_CODE) - 1
    seen = 0
    for seen, entry in enumerate(entries, 1):  # noqa: B007 - the count is used after the loop
        if type(entry) is not dict and not isinstance(entry, dict):
            malformed += 1
            continue
        get = entry.get
        status = get("status")
        if type(status) is int and 0 <= status <= largest_code:
            defect = False
        else:
            label, defect = parse_status(status)
            status = _STATUS_INDEX[label]
        size = get("size")
        if size is None:
            size = get("fileSize")
        if type(size) is not int or not 0 <= size < MAX_NUMBER:
            size, bad = parse_size(size)
            defect = defect or bad
            size = size or 0
        timestamp = get("timestamp")
        if type(timestamp) is int and 0 < timestamp < MAX_NUMBER:
            created: float | None = timestamp / 1000.0 if timestamp > MILLISECONDS_THRESHOLD else timestamp
        else:
            created, bad = parse_timestamp(timestamp)
            defect = defect or bad
        conference = get("confId")
        cell = status * _SIDES + (conference is not None and conference != "")
        counts[cell] += 1
        sizes[cell] += size
        if defect:
            malformed += 1
        if created is not None:
            if status == _WAITING and created < oldest_waiting:
                oldest_waiting = created
            elif status == _DOWNLOADING and created < oldest_downloading:
                oldest_downloading = created
    keys = [(status, side) for status in STATUSES for side in DESTINATIONS]
    return Snapshot(
        counts=dict(zip(keys, counts, strict=True)),
        size_bytes=dict(zip(keys, sizes, strict=True)),
        oldest_pending_created_at={
            STATUSES[_WAITING]: None if oldest_waiting == math.inf else float(oldest_waiting),
            STATUSES[_DOWNLOADING]: None if oldest_downloading == math.inf else float(oldest_downloading),
        },
        malformed=malformed,
        entries=seen,
    )


def parse_list_reply(reply: dict[str, Any], key: str) -> Snapshot:
    """Aggregate the list under `key` of a successful reply (the caller has checked `result`).

    A null or missing list is zero entries (reference §7: an idle Room may send an empty list so), logged at
    debug. Raises ReplyShapeError when the list is there but is not a list: that is a protocol fault, not
    zero requests.
    """
    entries = reply.get(key)
    if isinstance(entries, Snapshot):  # aggregated as it was read (room/client.py), the entries dropped
        return entries
    if entries is None:
        log.debug(
            "a successful reply without a list: zero entries",
            extra={"detail": f"{reply.get('method')}: {key!r} is {'null' if key in reply else 'missing'}"},
        )
        return Snapshot()
    if not isinstance(entries, list):
        raise ReplyShapeError(f"reply's {key!r} is a JSON {_json_type(entries)}, not a list")
    return aggregate(entries)


def _json_type(value: Any) -> str:
    names = {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def parse_outgoing_reply(reply: dict[str, Any]) -> Snapshot:
    """Aggregate a successful `getOutgoingFilesRequests` reply (see parse_list_reply)."""
    return parse_list_reply(reply, REPLY_LIST_KEY)


def parse_incoming_reply(reply: dict[str, Any]) -> Snapshot:
    """Aggregate a successful `getIncomingFilesRequests` reply (see parse_list_reply); timestamps there are
    milliseconds in the reference's example, which the seconds-or-milliseconds rule already handles."""
    return parse_list_reply(reply, INCOMING_LIST_KEY)
