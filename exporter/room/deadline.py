"""One deadline for a whole collection: every blocking step asks it how much time is left."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time

from exporter.room.errors import CollectionError, Reason


class Deadline:
    """A point on the monotonic clock; `remaining()` raises once it has passed, so no phase can outlive it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.expires = self.started + seconds

    def left(self) -> float:
        """Seconds left, possibly zero or negative; never raises."""
        return self.expires - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0

    def failure(self, reason: Reason, message: str, timeout_message: str) -> CollectionError:
        """The error for an I/O failure: past the deadline it is a timeout, whatever broke (the watchdog shut
        the socket); before that, it is `reason`."""
        if self.expired():
            return CollectionError(Reason.TIMEOUT, timeout_message)
        return CollectionError(reason, message)

    def remaining(self, phase: str) -> float:
        """Seconds left for `phase`, or a timeout error naming the phase when none are."""
        left = self.left()
        if left <= 0:
            raise CollectionError(Reason.TIMEOUT, f"deadline of {self.seconds:g}s passed during {phase}")
        return left


COMPACT_AT_LEAST = 1024
"""Heap entries (forgotten ones included) before the reaper's heap is first compacted."""


class _Watch:
    """One socket's deadline in the reaper's heap: `cancelled` once its collection is done with it, `fired`
    once the reaper took it to shut the socket down. One excludes the other (both are set under the lock)."""

    __slots__ = ("cancelled", "expires", "fired", "sequence", "sock")

    def __init__(self, expires: float, sequence: int, sock: socket.socket | None) -> None:
        self.expires, self.sequence, self.sock = expires, sequence, sock
        self.cancelled = self.fired = False

    def __lt__(self, other: _Watch) -> bool:
        return (self.expires, self.sequence) < (other.expires, other.sequence)


class _Reaper:
    """One thread for the whole process that shuts down sockets whose deadline has passed.

    A thread per collection would cost a thread start on every scrape; one shared thread waiting on the
    earliest deadline costs nothing while no deadline is due. Every exchange of every scrape passes
    through here, so both calls are cheap and wake the thread only when they must: `watch` (O(log n))
    only when the new deadline is the earliest, `forget` never (it marks the entry, which is dropped when
    it comes due, or when the heap is compacted). With 100 Rooms scraped at once, a notify per watch and
    a heap rebuilt per forget made this lock the exporter's busiest.

    Reads of a Room block until this thread shuts their socket, so it must run: it is started by the first
    `watch`, again by any `watch` that finds it gone, and a `watch` that cannot start it raises (the
    collection fails) rather than leave a read unguarded.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._due: list[_Watch] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._compact_at = COMPACT_AT_LEAST

    def watch(self, expires: float, sock: socket.socket) -> _Watch:
        entry = _Watch(expires, next(self._sequence), sock)
        with self._condition:
            if len(self._due) >= self._compact_at:  # forgotten entries of long deadlines: bounded, amortised
                self._due = [each for each in self._due if not each.cancelled]
                heapq.heapify(self._due)
                self._compact_at = max(COMPACT_AT_LEAST, 2 * len(self._due))
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name="deadline-reaper", daemon=True)
                thread.start()  # raises when no thread can start: nothing is watched unguarded
                self._thread = thread
            earliest = not self._due or entry < self._due[0]
            heapq.heappush(self._due, entry)
            if earliest:
                self._condition.notify()
        return entry

    def forget(self, entry: _Watch) -> bool:
        """Stop watching; True when the reaper had already taken the entry (its socket is, or is about to be,
        shut down), False when it never will."""
        with self._condition:  # uncontended but for a deadline falling due right now
            if not entry.fired:
                entry.cancelled = True
                entry.sock = None  # the socket is not kept alive until the entry's deadline
            return entry.fired

    def pending(self) -> int:
        """Entries in the heap, cancelled ones included until they come due (for tests)."""
        with self._condition:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._due or self._due[0].expires > time.monotonic():
                    timeout = self._due[0].expires - time.monotonic() if self._due else None
                    self._condition.wait(timeout)
                entry = heapq.heappop(self._due)
                sock = entry.sock
                entry.fired = sock is not None and not entry.cancelled
            if entry.fired and sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_reaper = _Reaper()


class SocketWatchdog:
    """Shuts a socket down when the deadline passes, so no blocking read can outlive it.

    Per-operation socket timeouts alone are not enough: a peer that drips one byte just inside each timeout
    (a slow HTTP header, a slow WebSocket handshake) would hold a collection open for ever.
    """

    def __init__(self, deadline: Deadline, sock: socket.socket) -> None:
        self._deadline = deadline
        self._sock = sock
        self._entry: _Watch | None = None
        self.fired = False
        """True when the deadline passed before the watchdog was left: the socket was shut down."""

    def __enter__(self) -> SocketWatchdog:
        self._entry = _reaper.watch(self._deadline.expires, self._sock)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._entry is not None:
            self.fired = _reaper.forget(self._entry)


def cancel_all() -> int:
    """Fire every deadline now: shut down every watched socket, so that the collections blocked on them end at
    once instead of at their deadlines (a stopping exporter whose drain time is over). Returns how many
    sockets it shut down. A watch started afterwards has its own deadline as usual."""
    with _reaper._condition:
        due, _reaper._due = _reaper._due, []
        socks = []
        for entry in due:
            if entry.sock is not None and not entry.cancelled:
                entry.fired = True  # `forget` now says the socket was shut: it is never reused
                socks.append(entry.sock)
        _reaper._condition.notify()
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return len(socks)
