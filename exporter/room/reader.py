"""One thread that reads every open Room session whenever its Room sends, between scrapes too.

The Room pushes notifications to every authorised connection, unasked (reference §8), and every vendor client
reads continuously. So a kept session is read as data arrives: its socket is registered with one selector
(epoll on Linux) that this thread waits on, and an idle session costs no CPU and no thread. The thread only
reads, frames and dispatches (room/connection.py says what a message becomes); a scrape still sends its own
requests and waits for their replies in its own thread, and a large reply is parsed there, in the budget's
lane, never here, so one Room's 10 000-entry reply never delays another Room's.

A session whose message cannot get its bytes from the shared budget now is paused (not read: the kernel
holds what the Room sends) and tried again every PAUSED_RETRY_SECONDS.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from typing import Protocol

log = logging.getLogger(__name__)

PAUSED_RETRY_SECONDS = 0.05
READ_BYTES = 64 * 1024
"""The most one read takes from a socket before the thread moves on to the next ready one: a flooding Room
gets one read per turn, like every other."""


class Readable(Protocol):
    """What the reader needs of a session (RoomConnection)."""

    def fileno(self) -> int: ...

    def on_ready(self, readable: bool, writable: bool) -> None:
        """Read and handle what the Room sent, write what waits; never raises."""

    def resume(self) -> bool:
        """Try a paused session again: True when it may be read again."""

    def wants_write(self) -> bool:
        """Bytes wait to be written (the Room did not take them at once)."""


class RoomReader:
    """The selector and its thread, owned by the session pool. Thread-safe."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._paused: set[Readable] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, session: Readable, writing: bool = False) -> None:
        """Read `session` whenever its Room sends (and write it when `writing`). Raises RuntimeError when
        the thread cannot start: no session is kept that nothing reads."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
        with self._lock:
            if self._stopping:
                raise RuntimeError("the sessions' reader has stopped")
            self._start()
            if session in self._paused:
                return
            try:
                self._selector.modify(session.fileno(), events, session)
            except KeyError:
                self._selector.register(session.fileno(), events, session)

    def pause(self, session: Readable) -> None:
        """Stop reading `session` until its `resume()` says it may go on."""
        with self._lock:
            self._unregister(session)
            self._paused.add(session)
        self._wake()

    def forget(self, session: Readable) -> None:
        """Stop reading `session` for good (it is closing); before its socket is closed."""
        with self._lock:
            self._unregister(session)
            self._paused.discard(session)

    def _unregister(self, session: Readable) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(session.fileno())

    def paused(self) -> int:
        """Sessions set aside until the shared budget can take their message (a gauge on /metrics)."""
        with self._lock:
            return len(self._paused)

    def stop(self) -> None:
        """End the thread (the pool is closed); the sessions are closed by their owners."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            thread = threading.Thread(target=self._run, name="room-reader", daemon=True)
            thread.start()  # raises when no thread can start: then nothing is watched unread
            self._thread = thread

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    break
                paused = bool(self._paused)
            for key, mask in self._selector.select(PAUSED_RETRY_SECONDS if paused else None):
                session = key.data
                if session is None:
                    with contextlib.suppress(OSError):
                        self._wake_read.recv(4096)
                    continue
                session.on_ready(bool(mask & selectors.EVENT_READ), bool(mask & selectors.EVENT_WRITE))
            if paused:
                self._resume_paused()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def _resume_paused(self) -> None:
        with self._lock:
            paused = list(self._paused)
        for session in paused:
            try:
                resumed = session.resume()
            except Exception:  # a bug must not end the reader, which every session needs
                log.exception("internal error resuming a Room session")
                self.forget(session)
                continue
            if resumed:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.wants_write() else 0)
                with self._lock:
                    if session not in self._paused:
                        continue  # forgotten meanwhile: it is closing
                    self._paused.discard(session)
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._selector.register(session.fileno(), events, session)
                session.on_ready(True, False)  # what it holds may already make a whole message
