"""One deadline for a whole collection: every blocking step asks it how much time is left."""

from __future__ import annotations

import contextlib
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

    def remaining(self, phase: str) -> float:
        """Seconds left for `phase`, or a timeout error naming the phase when none are."""
        left = self.left()
        if left <= 0:
            raise CollectionError(Reason.TIMEOUT, f"deadline of {self.seconds:g}s passed during {phase}")
        return left


class SocketWatchdog:
    """Shuts a socket down when the deadline passes, so no blocking read can outlive it.

    Per-operation socket timeouts alone are not enough: a peer that drips one byte just inside each timeout
    (a slow HTTP header, a slow WebSocket handshake) would hold a collection open for ever.
    """

    def __init__(self, deadline: Deadline, sock: socket.socket) -> None:
        self._sock = sock
        self._timer = threading.Timer(max(deadline.left(), 0.0), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> SocketWatchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
