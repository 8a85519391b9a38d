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


class _Reaper:
    """One thread for the whole process that shuts down sockets whose deadline has passed.

    A thread per collection would cost a thread start on every scrape; one shared thread waiting on the
    earliest deadline costs nothing while no deadline is due.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._due: list[tuple[float, int, socket.socket]] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, expires: float, sock: socket.socket) -> tuple[float, int, socket.socket]:
        entry = (expires, next(self._sequence), sock)
        with self._condition:
            heapq.heappush(self._due, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-reaper", daemon=True)
                self._thread.start()
            self._condition.notify()
        return entry

    def forget(self, entry: tuple[float, int, socket.socket]) -> None:
        with self._condition, contextlib.suppress(ValueError):
            self._due.remove(entry)
            heapq.heapify(self._due)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._condition.wait(timeout)
                _, _, sock = heapq.heappop(self._due)
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
        self._entry: tuple[float, int, socket.socket] | None = None

    def __enter__(self) -> SocketWatchdog:
        self._entry = _reaper.watch(self._deadline.expires, self._sock)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._entry is not None:
            _reaper.forget(self._entry)
