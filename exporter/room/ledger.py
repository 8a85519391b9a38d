"""The transfers a Room made while the exporter watched it, counted once each: the counters' bookkeeping.

What is counted, per direction (outgoing, incoming) and side (`peer`, or `conference` when the request has a
non-empty `confId`, the rule of file_requests.aggregate):

- created: requests first seen after the exporter began watching the Room;
- finished, per status `processed` (3) or `failed` (0): requests seen reaching that status;
- processed bytes: the size (`size`, else `fileSize`; 0 when neither is usable) of the requests counted
  processed.

Two sources feed it: the Room's notifications (`notify`, applied as they arrive: reference §8), and the
request lists every scrape reads (`observe_list`), compared with what was seen before, so a Room whose
notifications are missed, or that sends none, still counts. Each request counts once per status however many
notifications and lists report it: every id carries three flags (creation, failure, processing accounted
for). The first list of a direction is history: its ids and statuses are recorded and nothing is counted.
Notifications of a direction whose first list has not come are held (at most PENDING_NOTIFICATIONS of them,
the oldest dropped first: the next list still shows their requests) and applied when it comes, those that came
before the list's reply (by their place in the session's stream, `sequence`) as history.

Bounds: at most `max_ids` request ids per direction (MAX_TRACKED_IDS, 2048, by default). An id is 21 bytes
(its key, size, second of last sight and flags, in arrays sorted by key: `_IdTable`; tests/test_ledger.py
measures about 22 with tracemalloc), so a Room at the bound holds about 90 KiB for both directions; a Room
listing a few dozen requests, about 5 KiB (3 KiB of it the empty ledger). An id neither listed nor notified
for `forget_after_seconds` (FORGET_AFTER_SECONDS, one hour, by default) is forgotten: were it to come back it
would count again. Its place is given back at the next list or `totals`, when its direction is full and a new
id comes, and otherwise within FORGET_SLACK_SECONDS (so notifications alone rebuild a table at most once a
minute, or once a second while its direction is full and new ids keep coming). When a direction holds
`max_ids` ids, a new id is neither tracked nor counted: the entries of the latest lists left out so are
`RoomTransfers.untracked` (above 0, the counters miss those requests, but never count an id twice), and the
notifications refused so or dropped from the pending buffer are `Ledger.dropped`. A list records at most
MAX_TRACKED_IDS entries (`listing`); the rest count as untracked too.

Reset semantics: the ledger belongs to the Room (its target and module), not to a session. A replaced
session or a restarted Room counts nothing twice (`new_session`: the known ids and their flags are kept).
The session pool forgets a Room not probed for the session idle timeout; its ledger goes with it, and when
the Room comes back its counters start again at 0, its first list is history again. Prometheus's `rate()`
and `increase()` read that drop as a counter reset, as after an exporter restart.
"""

from __future__ import annotations

import array
import enum
import itertools
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from exporter.room.file_requests import (
    DESTINATIONS,
    MAX_NUMBER,
    STATUSES,
    Snapshot,
    aggregate,
    parse_size,
    parse_status,
)

FINISHED_STATUSES: tuple[str, ...] = ("processed", "failed")
"""Every value of the counters' `status` label."""

MAX_TRACKED_IDS = 2048
"""Request ids a ledger tracks per direction, and entries a list records for it (`listing`)."""

FORGET_AFTER_SECONDS = 3600.0
"""An id neither listed nor notified for this long is forgotten."""

FORGET_SLACK_SECONDS = 60
"""How long past its forget time an id may keep its place when only notifications come."""

PENDING_NOTIFICATIONS = 256
"""Notifications held per direction until its first list (the oldest dropped past it)."""

FAILED = 0
PROCESSED = 3
"""The Room's status codes that finish a request (reference §4)."""

_CODE_BY_LABEL: Final[Mapping[str, int]] = {
    label: code for code, label in enumerate(STATUSES) if label != "unknown"
}
_NO_CODE = 4
"""A recorded entry's status when the Room sent none usable (file_requests' `unknown`)."""
_CONFERENCE_BIT = 8
"""Set in a recorded entry's code byte when the request's side is `conference`."""
_LARGEST_CODE = len(_CODE_BY_LABEL) - 1
assert _CODE_BY_LABEL == {"failed": FAILED, "waiting": 1, "downloading": 2, "processed": PROCESSED}
assert DESTINATIONS == ("peer", "conference")  # side index 0 and 1 below


class Direction(enum.StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


@dataclass(frozen=True)
class TransferTotals:
    """The counters of one direction of one Room, every label value present (at 0 until counted).

    The side is `peer` or `conference` (file_requests.DESTINATIONS): the `destination` label of outgoing
    requests, the `source` label of incoming ones."""

    created: dict[str, int]
    """side -> requests first seen after the exporter began watching the Room."""
    finished: dict[tuple[str, str], int]
    """(status in FINISHED_STATUSES, side) -> requests seen reaching that status."""
    processed_bytes: dict[str, int]
    """side -> the sizes of the requests counted processed."""

    @staticmethod
    def zero() -> TransferTotals:
        return TransferTotals(
            created=dict.fromkeys(DESTINATIONS, 0),
            finished={(status, side): 0 for status in FINISHED_STATUSES for side in DESTINATIONS},
            processed_bytes=dict.fromkeys(DESTINATIONS, 0),
        )


@dataclass(frozen=True)
class RoomTransfers:
    """What the ledger of one Room has counted, both directions."""

    outgoing: TransferTotals
    incoming: TransferTotals
    tracked: int
    """Request ids the ledger remembers now (both directions)."""
    untracked: int = 0
    """Entries of the latest list of each direction that the ledger could not track (it held `max_ids` ids
    of that direction, or the list passed MAX_TRACKED_IDS entries). Above 0, the counters miss the requests
    among them that are new; 0 again once forgotten ids make room."""


Report = tuple[int, int | None, bool, int | None]
"""One sighting of a request: (id key, status code 0..3 or None, conference side, size in bytes or None)."""


@dataclass(slots=True)
class Listed:
    """What the ledger needs of each entry of a list that has a usable `fileRequestId`, in list order, in
    about 17 bytes an entry: the id's `hash()` (stable within the process, the only place ids are compared),
    the size (0 when unusable) and one byte holding the status code (4 for none) and the side."""

    ids: array.array[int] = field(default_factory=lambda: array.array("q"))
    sizes: array.array[int] = field(default_factory=lambda: array.array("q"))
    codes: bytearray = field(default_factory=bytearray)
    overflow: int = 0
    """Entries with a usable id past the MAX_TRACKED_IDS recorded."""

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Report]:
        for key, size, byte in zip(self.ids, self.sizes, self.codes, strict=True):
            code = byte & 7
            yield key, None if code == _NO_CODE else code, bool(byte & _CONFERENCE_BIT), size


def listing(entries: Iterable[Any]) -> Snapshot:
    """A request list read entry by entry: its aggregate, carrying what the ledger needs of each entry.

    The snapshot is exactly `file_requests.aggregate(entries)`'s, with `listed` set: the entries pass
    through a recorder on their way to `aggregate`, one alive at a time as before."""
    listed = Listed()
    snapshot = aggregate(_recorded(entries, listed))
    snapshot.listed = listed
    return snapshot


def _recorded(entries: Iterable[Any], listed: Listed) -> Iterator[Any]:
    """`entries`, each recorded in `listed` on its way (the same rules as aggregate's, on the same fields)."""
    add_id, add_size, add_code = listed.ids.append, listed.sizes.append, listed.codes.append
    room = MAX_TRACKED_IDS
    for entry in entries:
        if isinstance(entry, dict):
            get = entry.get
            request_id = get("fileRequestId")
            if isinstance(request_id, str) and request_id:
                if room:
                    room -= 1
                    status = get("status")
                    if not (type(status) is int and 0 <= status <= _LARGEST_CODE):
                        status = _CODE_BY_LABEL.get(parse_status(status)[0], _NO_CODE)
                    size = get("size")
                    if size is None:
                        size = get("fileSize")
                    if type(size) is not int or not 0 <= size < MAX_NUMBER:
                        size = parse_size(size)[0] or 0
                    conference = get("confId")
                    if conference is not None and conference != "":
                        status |= _CONFERENCE_BIT
                    add_id(hash(request_id))
                    add_size(size)
                    add_code(status)
                else:
                    listed.overflow += 1
        yield entry


_ACCOUNTED = 1
"""Flag: the request's creation is accounted for (counted, or seen in history)."""
_FAILED_COUNTED = 2
_PROCESSED_COUNTED = 4
_CONFERENCE = 8
_LAST_SECOND = 2**32 - 1
"""The ledger's clock stops here (136 years): a second of last sight is an unsigned 32-bit number."""


class _IdTable:
    """The request ids of one direction: four arrays sorted by key, one item per id, 21 bytes an id.

    A key is the id's `hash()`, a signed 64-bit number (Py_hash_t; `Listed.ids` holds the same). A lookup is a
    bisection (O(log n), in C); a new id is inserted in place (moves of at most 42 KiB at 2048 ids). Ids are
    forgotten by rebuilding the arrays without them (`forget`, O(n)), not one by one."""

    __slots__ = ("flags", "keys", "oldest", "seen", "sizes")

    def __init__(self) -> None:
        self.keys = array.array("q")
        self.sizes = array.array("q")
        """Bytes (0 until a sighting gives a usable size; sizes are below 2**63, file_requests.MAX_NUMBER)."""
        self.seen = array.array("I")
        """The ledger's second of the id's last sight."""
        self.flags = bytearray()
        """_ACCOUNTED, _FAILED_COUNTED, _PROCESSED_COUNTED, _CONFERENCE."""
        self.oldest = 0
        """No id here was last seen before this second: exact after `forget`, then only ever lower."""

    def __len__(self) -> int:
        return len(self.keys)

    def forget(self, now: int, after: float) -> None:
        """Drop the ids not seen for more than `after` seconds at `now`."""
        keep = [now - second <= after for second in self.seen]
        if not all(keep):
            compress = itertools.compress
            self.keys = array.array("q", compress(self.keys, keep))
            self.sizes = array.array("q", compress(self.sizes, keep))
            self.seen = array.array("I", compress(self.seen, keep))
            self.flags = bytearray(compress(self.flags, keep))
        self.oldest = min(self.seen, default=now)


class _Tracks:
    """One direction of one Room: its ids, its counters, its pending notifications."""

    __slots__ = ("created", "failed", "ids", "pending", "primed", "processed", "processed_bytes", "untracked")

    def __init__(self) -> None:
        self.ids = _IdTable()
        """Not the shared LRU (exporter/lru.py): a full direction refuses a new id instead of evicting a known
        one, which would count again when it came back."""
        self.primed = False
        self.pending: deque[tuple[int, Report]] = deque()
        self.created = [0, 0]
        self.failed = [0, 0]
        self.processed = [0, 0]
        self.processed_bytes = [0, 0]
        """Each indexed by side: 0 peer, 1 conference."""
        self.untracked = 0

    def totals(self) -> TransferTotals:
        peer, conference = DESTINATIONS
        return TransferTotals(
            created={peer: self.created[0], conference: self.created[1]},
            finished={
                ("processed", peer): self.processed[0],
                ("processed", conference): self.processed[1],
                ("failed", peer): self.failed[0],
                ("failed", conference): self.failed[1],
            },
            processed_bytes={peer: self.processed_bytes[0], conference: self.processed_bytes[1]},
        )


class Ledger:
    """One Room's bookkeeping (a Room is a target read with one set of credentials). Thread-safe: one lock;
    `notify` comes from the session's reader thread, `observe_list` and `totals` from scrapes.

    `sequence` is a message's place in its session's stream (replies and notifications alike): a reply is
    applied by the scrape after the reader may have applied later notifications, and the sequence tells what
    came before a direction's first list. Sequences restart with every session: call `new_session` then."""

    def __init__(
        self,
        max_ids: int = MAX_TRACKED_IDS,
        forget_after_seconds: float = FORGET_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_ids < 1:
            raise ValueError(f"max_ids must be at least 1, not {max_ids}")
        if not forget_after_seconds > 0:
            raise ValueError(f"forget_after_seconds must be above 0, not {forget_after_seconds}")
        self.max_ids = max_ids
        self.forget_after_seconds = forget_after_seconds
        self._clock = clock
        self._epoch = clock()
        self._now = 0
        self._lock = threading.Lock()
        self._tracks = {direction: _Tracks() for direction in Direction}
        self.dropped = 0
        """Notifications not applied: past the pending buffer of a direction not yet listed, or about a new
        id while its direction held `max_ids` ids."""

    def observe_list(self, direction: Direction, snapshot: Snapshot, sequence: int) -> None:
        """Compare a list the Room sent (read through `listing`) with what was seen; the first list of a
        direction is history. A snapshot without `listed` changes nothing."""
        listed = snapshot.listed
        if listed is None:
            return
        with self._lock:
            now = self._tick(0)
            tracks = self._tracks[direction]
            history = not tracks.primed
            untracked = listed.overflow
            for report in listed:
                if not self._apply(tracks, report, now, count=not history):
                    untracked += 1
            tracks.untracked = untracked
            if history:
                tracks.primed = True
                pending, tracks.pending = tracks.pending, deque()
                for place, report in pending:
                    if place > sequence and not self._apply(tracks, report, now, count=True):
                        self.dropped += 1

    def prime(self, direction: Direction, sequence: int) -> None:
        """Start counting a direction without a list (a Room that cannot give it): as an empty first list."""
        self.observe_list(direction, listing(()), sequence)

    def notify(self, message: dict[str, Any], sequence: int) -> None:
        """Apply one notification (`{"method": "event", "event": NAME, ...}`). Those that do not concern
        file requests, or whose id or direction is unusable, are ignored; nothing a Room sends raises."""
        parsed = _parse_notification(message)
        if parsed is None:
            return
        direction, report = parsed
        with self._lock:
            now = self._tick(FORGET_SLACK_SECONDS)
            tracks = self._tracks[direction]
            if tracks.primed:
                if not self._apply(tracks, report, now, count=True):
                    self.dropped += 1
                return
            if len(tracks.pending) >= PENDING_NOTIFICATIONS:
                tracks.pending.popleft()
                self.dropped += 1
            tracks.pending.append((sequence, report))

    def new_session(self) -> None:
        """A new session to this Room begins (its sequences start again): notifications held from the old
        one are dropped. Known ids, their flags and the counters stay, so nothing counts twice."""
        with self._lock:
            for tracks in self._tracks.values():
                tracks.pending.clear()

    def totals(self) -> RoomTransfers:
        with self._lock:
            self._tick(0)
            outgoing, incoming = self._tracks[Direction.OUTGOING], self._tracks[Direction.INCOMING]
            return RoomTransfers(
                outgoing=outgoing.totals(),
                incoming=incoming.totals(),
                tracked=len(outgoing.ids) + len(incoming.ids),
                untracked=outgoing.untracked + incoming.untracked,
            )

    def _tick(self, slack: float) -> int:
        """The ledger's second now (never going back), after forgetting the ids of a direction that may hold
        some not seen for `forget_after_seconds` + `slack`. After a table's rebuild its oldest sight is at
        most `forget_after_seconds` old, so with a slack of s it is rebuilt at most once every s seconds."""
        now = self._now = min(max(self._now, int(self._clock() - self._epoch)), _LAST_SECOND)
        after = self.forget_after_seconds
        for tracks in self._tracks.values():
            table = tracks.ids
            if now - table.oldest > after + slack:
                table.forget(now, after)
        return now

    def _apply(self, tracks: _Tracks, report: Report, now: int, count: bool) -> bool:
        """One sighting of a request; False when it is new and its direction is full (not tracked). An id past
        its forget time that still has its place is new again, as if forgotten."""
        key, code, conference, size = report
        table = tracks.ids
        keys = table.keys
        index = bisect_left(keys, key)
        known = index < len(keys) and keys[index] == key
        if known and now - table.seen[index] <= self.forget_after_seconds:
            flags = table.flags[index] | (_CONFERENCE if conference else 0)
            known_size = table.sizes[index]
        else:
            if not known and len(keys) >= self.max_ids:
                if now - table.oldest <= self.forget_after_seconds:
                    return False
                table.forget(now, self.forget_after_seconds)  # once a second at most: `oldest` is exact now
                keys = table.keys
                if len(keys) >= self.max_ids:
                    return False
                index = bisect_left(keys, key)
            flags = _ACCOUNTED | (_CONFERENCE if conference else 0)
            known_size = 0
            if count:
                tracks.created[conference] += 1
        if size:
            known_size = size
        side = 1 if flags & _CONFERENCE else 0
        if code == FAILED and not flags & _FAILED_COUNTED:
            flags |= _FAILED_COUNTED
            if count:
                tracks.failed[side] += 1
        elif code == PROCESSED and not flags & _PROCESSED_COUNTED:
            flags |= _PROCESSED_COUNTED
            if count:
                tracks.processed[side] += 1
                tracks.processed_bytes[side] += known_size
        if known:
            table.sizes[index] = known_size
            table.seen[index] = now
            table.flags[index] = flags
        else:
            keys.insert(index, key)
            table.sizes.insert(index, known_size)
            table.seen.insert(index, now)
            table.flags.insert(index, flags)
        return True


_STATUS_EVENTS = frozenset({"fileRequestStatusChanged", "fileStatus"})
"""Notifications that carry a status and a `directionType` (0 incoming, 1 outgoing)."""
_EVENT_DIRECTIONS: Final[Mapping[str, Direction]] = {
    "outgoingFileRequestSent": Direction.OUTGOING,
    "outgoingFileRequestSentToConference": Direction.OUTGOING,
    "receivedFileRequest": Direction.INCOMING,
    "outgoingFileRequestUploadingProgress": Direction.OUTGOING,
    "incomingFileRequestDownloadingProgress": Direction.INCOMING,
    "fileUploadingProgress": Direction.OUTGOING,
    "fileDownloadingProgress": Direction.INCOMING,
}
"""Notifications whose name says their direction; they prove the request exists, without a final status."""
_PROGRESS_EVENTS = frozenset(
    {
        "outgoingFileRequestUploadingProgress",
        "incomingFileRequestDownloadingProgress",
        "fileUploadingProgress",
        "fileDownloadingProgress",
    }
)
"""Notifications that may come without saying the request's side (no `confId`, no `peerId`): then ignored."""
_OLDER_ID = frozenset(
    {"receivedFileRequest", "fileStatus", "fileUploadingProgress", "fileDownloadingProgress"}
)
"""Notifications whose id may be under `id` (older Rooms, reference §8)."""
_OLDER_SIZE = frozenset({"fileUploadingProgress", "fileDownloadingProgress"})
"""Notifications whose size may be under `totalSize` (older Rooms)."""


def _parse_notification(message: Any) -> tuple[Direction, Report] | None:
    """The direction and sighting a notification reports, or None when it reports no usable request."""
    if not isinstance(message, dict) or message.get("method") != "event":
        return None
    event = message.get("event")
    if not isinstance(event, str):
        return None
    get = message.get
    code: int | None = None
    if event in _STATUS_EVENTS:
        direction_type = get("directionType")
        if type(direction_type) is not int or direction_type not in (0, 1):
            return None
        direction = Direction.OUTGOING if direction_type == 1 else Direction.INCOMING
        code = _CODE_BY_LABEL.get(parse_status(get("status"))[0])
    elif event in _EVENT_DIRECTIONS:
        direction = _EVENT_DIRECTIONS[event]
    else:
        return None
    request_id = get("fileRequestId")
    if request_id is None and event in _OLDER_ID:
        request_id = get("id")
    if not isinstance(request_id, str) or not request_id:
        return None
    size = get("size")
    if size is None:
        size = get("fileSize")
    if size is None and event in _OLDER_SIZE:
        size = get("totalSize")
    conference = get("confId")
    on_conference = event == "outgoingFileRequestSentToConference" or (
        conference is not None and conference != ""
    )
    if event in _PROGRESS_EVENTS and not on_conference and get("peerId") in (None, ""):
        return None  # no side: it must not create a request that a list then shows on the other side
    return direction, (hash(request_id), code, on_conference, parse_size(size)[0])
