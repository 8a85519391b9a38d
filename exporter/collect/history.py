"""The most recent results of each Room collected, for the status page: what an operator reads before curl.

Memory is bounded three ways: a short ring of results per Room, Rooms not collected for a while are dropped,
and at most `max_rooms` Rooms are kept (the least recently collected go first). Nothing here holds a PIN: a
result keeps the target, the module name, the timing and the failure's reason and message (which never
contains the PIN).
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


@dataclass(frozen=True)
class Result:
    """One collection as the status page shows it."""

    at: float
    """Wall-clock time the collection finished."""
    duration_seconds: float
    up: bool
    reason: str
    """Empty when up."""
    detail: str
    """One line: the failure's message, or a summary of what the Room answered."""


@dataclass
class RoomHistory:
    """The recent results of one Room (one target read with one module), newest last."""

    target: str
    module: str | None
    results: deque[Result]

    @property
    def last_seen(self) -> float:
        return self.results[-1].at


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
        collection.collected_at, collection.duration_seconds, False, str(error.reason), error.message
    )


class RecentResults:
    """Thread-safe: concurrent scrapes record into it while the status page reads it."""

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

    def _forget(self, now: float) -> None:
        while self._rooms:
            oldest = next(iter(self._rooms.values()))
            if len(self._rooms) <= self.max_rooms and now - oldest.last_seen <= self.forget_after_seconds:
                return
            self._rooms.popitem(last=False)
