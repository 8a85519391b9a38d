"""A WebSocket that refuses an oversized message unread: no Room can make the exporter eat memory.

websocket-client reads a whole frame payload in one call, so a limit checked after `recv()` comes too late:
the memory is already spent. `BoundedWebSocket` checks earlier, and this is the one place the exporter
reaches below websocket-client's public API. Every frame goes through `WebSocket.recv_frame()`, which
hands over to its `frame_buffer`. That buffer is written to resume a frame whose header and length were
already read (its non-blocking mode): it only reads them while its `header` / `length` are None. The
override reads them first with the buffer's own `recv_header()` / `recv_length()`, checks the announced
length (and the running total of a fragmented message) against the limit, and only then lets the buffer
read the payload. A refusal leaves the buffer holding the refused header, so any later read on this
connection (the closing handshake included) is refused too; the connection is then dropped.

Those four names have been the same from websocket-client 1.7 to 1.9; `check_websocket_client()` proves
them once at start-up, so a release that changes them fails at once with one line, never at scrape time.

Messages are put together here from `recv_frame()` (public) rather than by websocket-client's
`recv_data()`, whose reassembly copies everything so far at every fragment (16 fragments of a 4 MiB message
churned ~34 MiB) and is private code to subclass.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import websocket

from exporter.room.budget import FREE_BYTES, MessageBudget
from exporter.room.deadline import Deadline
from exporter.room.errors import CollectionError, Reason

if TYPE_CHECKING:
    from websocket._abnf import frame_buffer

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""A real `getOutgoingFilesRequests` reply takes ~250 bytes per request: 4 MiB is ~16 000 requests."""
SUPPORTED_WEBSOCKET_CLIENT = ">=1.7,<2"
"""The range pyproject.toml declares and CI proves at both ends (`make test-min`)."""

MAX_FRAMES_PER_MESSAGE = 4096
"""Frames, control frames included, that one message may take: a 4 MiB message in 1 KiB fragments. Reading
a frame costs ~5 us of CPU however small it is: 3.5 MB in 2-byte fragments took 9.6 s."""

_FIN_INDEX = 0
_OPCODE_INDEX = 4
MAX_CONTROL_PAYLOAD = 125
"""RFC 6455 §5.5; websocket-client does not check it when reading, and a 4 MiB pong was kept per session."""
"""Where frame_buffer keeps the opcode in its header tuple (fin, rsv1, rsv2, rsv3, opcode, mask, length)."""
_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)
_CONTROL_OPCODES = (websocket.ABNF.OPCODE_CLOSE, websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG)


class UnsupportedWebSocketClientError(RuntimeError):
    """The installed websocket-client lacks a hook the size limit needs; `str()` is one line."""


class BoundedWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket with a limit on a message's size, checked before its payload is read."""

    def __init__(
        self,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        budget: MessageBudget | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_message_bytes = max_message_bytes
        self.budget = budget
        """The process's budget for large messages: bytes past FREE_BYTES are reserved there before they are
        read (none when None, as in the start-up check)."""
        self.deadline: Deadline | None = None
        """The deadline of what is being read now: a reservation waits no longer, and no frame is read past
        it (a stream of tiny frames, served from what was read ahead, never reaches the socket's watchdog)."""
        self._message_bytes = 0
        """Payload bytes of the message being received so far (its first frame and its continuations)."""
        self._reserved = 0
        """Bytes of the shared budget this connection holds for the message being received."""
        self.last_pong: bytes | None = None
        """The payload of the last pong received: the Room's WebSocket layer is alive, however slow its
        application. Payloads tell one ping's pong from a late pong to an earlier ping."""

    def recv_frame(self) -> websocket.ABNF:
        if self.deadline is not None and self.deadline.expired():
            raise CollectionError(
                Reason.TIMEOUT, f"deadline of {self.deadline.seconds:g}s passed inside a message"
            )
        fin, opcode, announced = _frame_head(self.frame_buffer)
        if opcode in _CONTROL_OPCODES and announced > MAX_CONTROL_PAYLOAD:
            raise CollectionError(
                Reason.PROTOCOL,
                f"the Room sent a control frame of {announced} bytes (RFC 6455 allows {MAX_CONTROL_PAYLOAD})",
            )
        # A continuation adds to its message; a first frame or a control frame (never in one) stands alone.
        total = self._message_bytes + announced if opcode == websocket.ABNF.OPCODE_CONT else announced
        if total > self.max_message_bytes:
            raise CollectionError(
                Reason.PROTOCOL,
                f"the Room sent a message of more than {self.max_message_bytes} bytes "
                f"(a frame announced {announced} bytes); see --max-message-bytes",
            )
        if self.budget is not None and opcode in _DATA_OPCODES and not fin:
            # The first of a fragmented message: its whole possible size at once, so that no connection
            # ever waits for the budget while it holds part of it (rooms waiting on each other's halves).
            self._reserve(self.max_message_bytes - FREE_BYTES)
        elif self.budget is not None and opcode not in _CONTROL_OPCODES:
            self._reserve(total - FREE_BYTES)
        # websocket-client leaves WebSocket.recv_frame unannotated
        frame: websocket.ABNF = super().recv_frame()  # type: ignore[no-untyped-call]
        if opcode in _DATA_OPCODES or opcode == websocket.ABNF.OPCODE_CONT:
            self._message_bytes = 0 if frame.fin else total
        return frame

    def _reserve(self, size: int) -> None:
        """Hold at least `size` bytes of the shared budget for the message being read."""
        needed = size - self._reserved
        if needed > 0:
            assert self.budget is not None and self.deadline is not None  # reads happen within a deadline
            self.budget.reserve(needed, self.deadline)
            self._reserved += needed

    def release_message(self) -> None:
        """Give back what the last message reserved of the shared budget (once it is parsed, or dropped)."""
        if self.budget is not None:
            self.budget.release(self._reserved)
        self._reserved = 0

    def recv_message(self) -> tuple[int, bytes]:
        """The next whole message as (opcode, payload): fragments joined once, pings answered, pongs skipped.

        A close frame is returned as it is (its opcode and payload); the caller decides what it means. Frames
        (pings included) past MAX_FRAMES_PER_MESSAGE are a protocol error: each costs CPU, whatever its size.
        """
        opcode: int | None = None
        fragments: list[bytes] = []
        for _ in range(MAX_FRAMES_PER_MESSAGE):
            frame = self.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                self.pong(frame.data)
                continue
            if frame.opcode == websocket.ABNF.OPCODE_PONG:
                self.last_pong = frame.data if isinstance(frame.data, bytes) else None
                continue
            data = frame.data
            assert isinstance(data, bytes)  # a received frame's payload; ABNF allows str for frames to send
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                return frame.opcode, data
            if frame.opcode == websocket.ABNF.OPCODE_CONT:
                if opcode is None:
                    raise CollectionError(
                        Reason.PROTOCOL, "the Room sent a continuation frame with no message"
                    )
            elif opcode is not None:
                raise CollectionError(Reason.PROTOCOL, "the Room began a message inside another one")
            else:
                opcode = frame.opcode
            fragments.append(data)
            if frame.fin:
                return opcode, b"".join(fragments)
        raise CollectionError(
            Reason.PROTOCOL, f"the Room sent more than {MAX_FRAMES_PER_MESSAGE} frames for one message"
        )


def _frame_head(buffer: frame_buffer) -> tuple[bool, int, int]:
    """(fin, opcode, payload length) of the frame `buffer` reads next, reading its header and length if
    not yet."""
    if buffer.header is None:
        buffer.recv_header()
    if buffer.length is None:
        buffer.recv_length()
    assert buffer.header is not None and buffer.length is not None  # recv_header / recv_length set them
    return bool(buffer.header[_FIN_INDEX]), buffer.header[_OPCODE_INDEX], buffer.length


def check_websocket_client() -> None:
    """Prove, once at start-up, that websocket-client's frame buffer has the hooks `BoundedWebSocket` uses.

    A real two-frame stream is read through a fresh frame buffer of the installed release, exactly as
    `recv_frame()` above reads it. Raises UnsupportedWebSocketClientError naming the supported versions.
    """
    stream = bytearray(b"\x01\x05hello\x80\x7e\x01\x00" + b"x" * 256)  # text "hello" (not fin), then cont 256

    def recv(size: int) -> bytes:
        chunk = bytes(stream[:size])
        del stream[:size]
        return chunk

    try:
        buffer = type(BoundedWebSocket().frame_buffer)(recv, True)
        seen = []
        for _ in range(2):
            seen.append(_frame_head(buffer))
            buffer.recv_frame()
        works = seen == [(False, websocket.ABNF.OPCODE_TEXT, 5), (True, websocket.ABNF.OPCODE_CONT, 256)]
    except (AttributeError, TypeError, IndexError, ValueError, websocket.WebSocketException):
        works = False
    if not works:
        raise UnsupportedWebSocketClientError(
            f"websocket-client {version('websocket-client')} is not supported: its frame buffer changed; "
            f"install websocket-client{SUPPORTED_WEBSOCKET_CLIENT}"
        )
