"""The most recent results of each Room collected, for the status pages: what an operator reads before curl.

Memory is bounded four ways: a short ring of results per Room (each a few numbers, never the Room's
picture), a message kept to its first `MAX_DETAIL_CHARS` characters, Rooms not collected for a while are
dropped, and at most `max_rooms` Rooms are kept (the least recently collected go first). Beyond its results
a Room keeps its name and version once seen (each at most 64 characters) and three numbers that tell new
failures: its failed counter as last read, when, and when it last rose. Nothing here holds a PIN: a result
keeps the target, the module name, the timing and the failure's reason and message (which never contains
the PIN).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace

from exporter.collect.collection import Collection
from exporter.collect.verdicts import Verdict, failures_rose, judge
from exporter.lru import LruCache
from exporter.room.file_requests import DESTINATIONS, Snapshot
from exporter.room.ledger import RoomTransfers
from exporter.room.picture import RoomIdentity

RESULTS_PER_ROOM = 10
FORGET_AFTER_SECONDS = 3600.0
MAX_ROOMS = 1000
MAX_DETAIL_CHARS = 500
"""A failure's message is kept to this many characters (it may carry the Room's own words): 1 000 Rooms of
10 results hold at most 5 million of them, about 20 MiB at the very worst (Python's four bytes a character
for text beyond Latin-1). Every page shows less of it."""


@dataclass(frozen=True, slots=True)
class Result:
    """One collection as the status pages show it: a few numbers and words, never the Room's picture."""

    at: float
    """Wall-clock time the collection finished."""
    duration_seconds: float
    up: bool
    reason: str
    """Empty when up."""
    detail: str
    """The failure's message, or a summary of what the Room answered; raw (the pages make it safe to show)."""
    failed: int | None = None
    """The Room's failed counter (`failed_transfers`): transfers seen failing, outgoing and incoming, since
    the exporter began watching the Room; None when down, and when the collection carried no counters. The
    ages, the malformed count, the availability and the app state below are None when down too, and also
    when the Room did not say."""
    waiting_age: float | None = None
    """Seconds the oldest outgoing request had been waiting when collected; None when none was waiting."""
    downloading_age: float | None = None
    malformed: int | None = None
    availability: str | None = None
    """One of picture.AVAILABILITY_STATES (the same string objects: nothing kept per result)."""
    app_state: str | None = None


@dataclass
class RoomHistory:
    """The recent results of one Room (one target read with one module), newest last, and what is remembered
    of it beyond them: its name and version once seen, and what tells new failures."""

    target: str
    module: str | None
    results: deque[Result]
    identity: RoomIdentity | None = None
    """Who the Room is logged in as, from the last getSystemInfo that said (asked once per session)."""
    version: str | None = None
    failed_seen: int | None = None
    """The Room's failed counter as its latest collection that carried counters (up or down) read it, at
    `failed_seen_at`."""
    failed_seen_at: float | None = None
    failures_rose_at: float | None = None
    """When the failed counter was last seen to rise (verdicts.failures_rose); None when never."""

    @property
    def last_seen(self) -> float:
        return self.results[-1].at

    def copy(self) -> RoomHistory:
        return replace(self, results=deque(self.results))


@dataclass(frozen=True)
class Latest:
    """One Room's latest result and verdict: one row of the status page."""

    target: str
    module: str | None
    result: Result
    identity: RoomIdentity | None
    version: str | None
    verdict: Verdict


def failed_transfers(transfers: RoomTransfers | None) -> int | None:
    """The Room's failed counter as TrueconfFileRequestsFailed reads it: `finished_total{status="failed"}`
    of both directions and every side, summed; None without counters. The ledger counts both directions
    from the same start and forgets both together, so the sum only rises, but for a reset to 0."""
    if transfers is None:
        return None
    return sum(
        totals.finished[("failed", side)]
        for totals in (transfers.outgoing, transfers.incoming)
        for side in DESTINATIONS
    )


def result_of(collection: Collection) -> Result:
    snapshot = collection.snapshot
    if snapshot is not None:
        detail = f"{snapshot.total} outgoing requests, {snapshot.pending} pending"
        if snapshot.malformed:
            detail += f", {snapshot.malformed} malformed"
        at, picture = collection.collected_at, collection.picture
        return Result(
            at,
            collection.duration_seconds,
            True,
            "",
            detail,
            failed=failed_transfers(collection.transfers),
            waiting_age=_age(snapshot, "waiting", at),
            downloading_age=_age(snapshot, "downloading", at),
            malformed=snapshot.malformed,
            availability=None if picture is None else picture.availability,
            app_state=None if picture is None else picture.app_state,
        )
    assert collection.error is not None
    error = collection.error
    return Result(
        collection.collected_at,
        collection.duration_seconds,
        False,
        str(error.reason),
        error.message[:MAX_DETAIL_CHARS],
    )


def _age(snapshot: Snapshot, status: str, at: float) -> float | None:
    """The age the metric shows (never negative), or None when no request is in `status`."""
    if snapshot.oldest_pending_created_at[status] is None:
        return None
    return snapshot.oldest_pending_age(status, at)


def verdict_of(room: RoomHistory, now: float) -> Verdict:
    """A Room's verdict now, from its latest result and when its failed counter last rose."""
    result = room.results[-1]
    return judge(
        up=result.up,
        reason=result.reason,
        waiting_age=result.waiting_age,
        downloading_age=result.downloading_age,
        failures_rose_at=room.failures_rose_at,
        availability=result.availability,
        malformed=result.malformed,
        now=now,
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
        self._rooms: LruCache[tuple[str, str | None], RoomHistory] = LruCache(max_rooms)
        """In order of collection: the least recently collected Room leaves first."""
        self._lock = threading.Lock()

    def record(self, collection: Collection, module: str | None = None) -> None:
        key = (str(collection.target), module)
        result = result_of(collection)
        picture = collection.picture
        failed = failed_transfers(collection.transfers)  # read up or down: the counters are exposed both ways
        with self._lock:
            room = self._rooms.get(key)  # now the most recently collected
            if room is None:
                room = RoomHistory(key[0], module, deque(maxlen=self.per_room))
                self._rooms.put(key, room)
            room.results.append(result)
            if picture is not None and picture.identity is not None:
                room.identity = picture.identity
            if picture is not None and picture.version is not None:
                room.version = picture.version
            if failed is not None:
                if failures_rose(room.failed_seen, room.failed_seen_at, failed, result.at):
                    room.failures_rose_at = result.at
                room.failed_seen, room.failed_seen_at = failed, result.at
            self._forget(time.time())

    def rooms(self) -> list[RoomHistory]:
        """Every Room still remembered, the most recently collected first, each with its results copied."""
        with self._lock:
            self._forget(time.time())
            return [room.copy() for room in self._rooms.values()][::-1]

    def board(self, now: float | None = None) -> list[Latest]:
        """Every Room still remembered by its latest result and its verdict at `now` (the clock by default):
        the Rooms that are down first, then those that need attention for another reason, then the rest, the
        most recently collected first within each (what needs attention at the top)."""
        now = time.time() if now is None else now
        with self._lock:
            self._forget(time.time())
            latest = [
                Latest(
                    room.target,
                    room.module,
                    room.results[-1],
                    room.identity,
                    room.version,
                    verdict_of(room, now),
                )
                for room in self._rooms.values()
            ]
        latest.sort(key=lambda row: (row.verdict.group, -row.result.at))
        return latest

    def room(self, target: str, module: str | None) -> RoomHistory | None:
        """One Room's results (copied), or None when it is not remembered."""
        with self._lock:
            self._forget(time.time())
            room = self._rooms.peek((target, module))
            return None if room is None else room.copy()

    def _forget(self, now: float) -> None:
        """Drop the Rooms not collected for `forget_after_seconds`, from the least recently collected."""
        while (oldest := self._rooms.oldest()) is not None:
            key, room = oldest
            if now - room.last_seen <= self.forget_after_seconds:
                return
            self._rooms.pop(key)
