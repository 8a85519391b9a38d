"""A socket whose small reads are served from one large read.

websocket-client reads each frame in three or four `recv` calls (two header bytes, the extended length, the
payload) and the HTTP upgrade answer one byte at a time. Each call is a system call that gives up the GIL
and takes it back: with a hundred Rooms scraped at once, a warm scrape's ~17 reads (four replies and a pong)
made those hand-offs a large share of the exporter's CPU. Reading ahead makes it one read per burst of
replies, and one for the upgrade answer.

Only the reads change: everything else (timeouts, `shutdown` by the deadline watchdog, `close`) is the
socket's own. What was read ahead and not yet handed out stays here between scrapes, never more than
READ_AHEAD_BYTES (what was handed out is let go at once); the rest waits in the kernel, as before. So an idle
session holds at most a few KiB here, whatever the Room sent behind its last reply.
"""

from __future__ import annotations

import socket
from typing import Any

READ_AHEAD_BYTES = 4096
"""The most one read asks the kernel for; larger reads (big payloads) go to the socket directly. A warm
scrape's four replies and pong are ~2 KiB; an idle session keeps at most this much."""


class ReadAheadSocket:
    """`sock` for websocket-client, with `recv` buffered; every other attribute is the socket's."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = b""
        self._offset = 0

    def recv(self, size: int) -> bytes:
        """At most `size` bytes: from what was read ahead, else from one read of up to READ_AHEAD_BYTES.

        Like `socket.recv`, it may return fewer bytes than asked (callers loop), and b"" at the end of the
        stream; timeouts and errors are the socket's, raised only when nothing is buffered.
        """
        if self._offset < len(self._pending):
            start, self._offset = self._offset, min(self._offset + size, len(self._pending))
            chunk = self._pending[start : self._offset]
            if self._offset == len(self._pending):
                self._pending, self._offset = b"", 0  # all handed out: nothing kept while idle
            return chunk
        if size >= READ_AHEAD_BYTES:
            return self._sock.recv(size)
        data = self._sock.recv(READ_AHEAD_BYTES)
        if len(data) <= size:
            self._pending, self._offset = b"", 0
            return data
        self._pending, self._offset = data, size
        return data[:size]

    @property
    def buffered(self) -> int:
        """Bytes read from the kernel and not yet handed out."""
        return len(self._pending) - self._offset

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
