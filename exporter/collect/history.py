"""The most recent results of each Room collected, for the status pages: what an operator reads before curl.

Memory is bounded four ways: a short ring of results per Room, a message kept to its first
`MAX_DETAIL_CHARS` characters, Rooms not collected for a while are dropped, and at most `max_rooms` Rooms are
kept (the least recently collected go first). Nothing here holds a PIN: a result keeps the target, the
module name, the timing and the failure's reason and message (which never contains the PIN).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from exporter.collect.collection import Collection

RESULTS_PER_ROOM = 10
FORGET_AFTER_SECONDS = 3600.0
MAX_ROOMS = 1000
MAX_DETAIL_CHARS = 500
"""A failure's message is kept to this many characters (it may carry the Room's own words): 1 000 Rooms of
10 results hold at most 5 million of them, about 20 MiB at the very worst (Python's four bytes a character
for text beyond Latin-1). Every page shows less of it."""


@dataclass(frozen=True)
class Result:
    """One collection as the status pages show it."""

    at: float
    """Wall-clock time the collection finished."""
    duration_seconds: float
    up: bool
    reason: str
    """Empty when up."""
    detail: str
    """The failure's message, or a summary of what the Room answered; raw (the pages make it safe to show)."""


@dataclass
class RoomHistory:
    """The recent results of one Room (one target read with one module), newest last."""

    target: str
    module: str | None
    results: deque[Result]

    @property
    def last_seen(self) -> float:
        return self.results[-1].at


@dataclass(frozen=True)
class Latest:
    """One Room's latest result: one row of the status page."""

    target: str
    module: str | None
    result: Result


def result_of(collection: Collection) -> Result:
    snapshot = collection.snapshot
    if snapshot is not None:
        detail = f"{snapshot.total} outgoing requests, {snapshot.pending} pending"
        if snapshot.malformed:
            detail += f", {snapshot.malformed} malformed"
        return Result(collection.collected_at, collection.duration_seconds, True, "", detail)
    assert collection.error is not None
    error = collection.error
    return Result(
        collection.collected_at,
        collection.duration_seconds,
        False,
        str(error.reason),
        error.message[:MAX_DETAIL_CHARS],
    )


class RecentResults:
    """Thread-safe: concurrent scrapes record into it while the status pages read it."""

    def __init__(
        self,
        per_room: int = RESULTS_PER_ROOM,
        forget_after_seconds: float = FORGET_AFTER_SECONDS,
        max_rooms: int = MAX_ROOMS,
    ) -> None:
        self.per_room = per_room
        self.forget_after_seconds = forget_after_seconds
        self.max_rooms = max_rooms
        self._rooms: OrderedDict[tuple[str, str | None], RoomHistory] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, collection: Collection, module: str | None = None) -> None:
        key = (str(collection.target), module)
        with self._lock:
            room = self._rooms.pop(key, None) or RoomHistory(key[0], module, deque(maxlen=self.per_room))
            room.results.append(result_of(collection))
            self._rooms[key] = room  # most recently collected last
            self._forget(time.time())

    def rooms(self) -> list[RoomHistory]:
        """Every Room still remembered, the most recently collected first, each with its results copied."""
        with self._lock:
            self._forget(time.time())
            return [
                RoomHistory(room.target, room.module, deque(room.results))
                for room in reversed(self._rooms.values())
            ]

    def board(self) -> list[Latest]:
        """Every Room still remembered by its latest result: the Rooms that are down first, then the rest,
        the most recently collected first within each (what needs attention at the top)."""
        with self._lock:
            self._forget(time.time())
            latest = [Latest(room.target, room.module, room.results[-1]) for room in self._rooms.values()]
        latest.sort(key=lambda row: (row.result.up, -row.result.at))
        return latest

    def room(self, target: str, module: str | None) -> RoomHistory | None:
        """One Room's results (copied), or None when it is not remembered."""
        with self._lock:
            self._forget(time.time())
            room = self._rooms.get((target, module))
            return None if room is None else RoomHistory(room.target, room.module, deque(room.results))

    def _forget(self, now: float) -> None:
        while self._rooms:
            oldest = next(iter(self._rooms.values()))
            if len(self._rooms) <= self.max_rooms and now - oldest.last_seen <= self.forget_after_seconds:
                return
            self._rooms.popitem(last=False)
