"""One deadline for a whole collection: every blocking step asks it how much time is left, and a socket
bound to it never waits longer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from typing import Any

from exporter.room.errors import CollectionError, Reason


class Deadline:
    """A point on the monotonic clock; `remaining()` raises once it has passed, so no phase can outlive it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.expires = self.started + seconds
        self._sockets: weakref.WeakSet[DeadlineSocket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def cancel(self) -> int:
        """End the deadline now: shut down the sockets it bounds, so a step blocked on one ends at once (a
        stopping exporter whose drain time is over). Returns how many it shut down."""
        with self._lock:
            self.expires = min(self.expires, time.monotonic())
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(sockets)

    def bound(self, sock: DeadlineSocket) -> None:
        with self._lock:
            self._sockets.add(sock)

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


class DeadlineSocket(socket.socket):
    """A socket whose every blocking call waits at most what is left of its deadline.

    For the steps that block in the collection's own thread (port discovery, the WebSocket upgrade): a peer
    that drips a byte just inside each timeout still cannot hold a step past the deadline, because each call's
    timeout is what is left, not a fixed figure. Once a session is open it is read by the sessions' reader
    (room/reader.py) without blocking, and `deadline` is None.
    """

    deadline: Deadline | None = None

    def bind_deadline(self, deadline: Deadline | None, phase: str = "connect") -> None:
        self.deadline = deadline
        self._phase = phase
        if deadline is not None:
            deadline.bound(self)

    def _wait_at_most(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining(self._phase))

    def recv(self, size: int, flags: int = 0) -> bytes:
        self._wait_at_most()
        return super().recv(size, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._wait_at_most()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self._wait_at_most()
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._wait_at_most()
        super().sendall(data, flags)
