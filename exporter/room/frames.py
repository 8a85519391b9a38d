"""WebSocket frames of one Room session, fed with bytes as they arrive; whole messages out, each bounded.

The sessions' reader (room/reader.py) reads a socket only when the Room has sent something, and hands the
bytes here. websocket-client's `frame_buffer` does the framing: it is written to resume a frame whose header
and length were already read, so it is given a `recv` that serves what has arrived and raises
NeedMoreBytesError when that runs out; the frame waits, half read, for the next bytes. Before a frame's
payload is read, its announced length is checked against the limits (the message's size, RFC 6455's 125
bytes for a control frame) and the bytes past FREE_BYTES are reserved from the shared budget
(room/budget.py); a message that begins while no scrape waits for a reply may take at most
MAX_UNASKED_BYTES, unreserved: a notification is a few hundred bytes, and no Room can make an idle session
hold more.

The buffer's names (`header`, `length`, `recv_header`, `recv_length`, `recv_frame`) have been the same from
websocket-client 1.7 to 1.9; `check_websocket_client()` proves them once at start-up, so a release that
changes them fails at once with one line, never at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

import websocket
from websocket._abnf import frame_buffer

from exporter.room.budget import FREE_BYTES, MessageBudget
from exporter.room.errors import CollectionError, Reason

SUPPORTED_WEBSOCKET_CLIENT = ">=1.7,<2"
"""The range pyproject.toml declares and CI proves at both ends (`make test-min`)."""

MAX_FRAMES_PER_MESSAGE = 4096
"""Frames, control frames included, that one message may take: a 4 MiB message in 1 KiB fragments. Reading
a frame costs ~4 us of CPU however small it is: 3.5 MB in 2-byte fragments would take 6-7 s."""

_FIN_INDEX = 0
_OPCODE_INDEX = 4
"""Where frame_buffer keeps the opcode in its header tuple (fin, rsv1, rsv2, rsv3, opcode, mask, length)."""
MAX_CONTROL_PAYLOAD = 125
"""RFC 6455 §5.5; websocket-client does not check it when reading, and a 4 MiB pong was kept per session."""
MAX_UNASKED_BYTES = 8 * 1024
"""The most a message may take when it begins while no scrape waits for a reply: a notification is a few
hundred bytes; a thousand idle sessions hold at most 8 MiB of half-read notifications."""
_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)
_CONTROL_OPCODES = (websocket.ABNF.OPCODE_CLOSE, websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG)


class UnsupportedWebSocketClientError(RuntimeError):
    """The installed websocket-client lacks a hook the size limit needs; `str()` is one line."""


class NeedMoreBytesError(Exception):
    """The frame being read needs bytes the Room has not sent yet: it waits, half read, for the next ones."""


class BudgetBusyError(Exception):
    """The shared budget cannot take this message's bytes now: the session is not read until it can."""


@dataclass(frozen=True)
class Message:
    """A whole message: its opcode and payload, and the shared budget it holds until it is parsed."""

    opcode: int
    data: bytes
    reserved: int = 0


class FrameStream:
    """The frames of one connection. Not thread-safe: its connection's lock serialises every call."""

    def __init__(self, max_message_bytes: int, budget: MessageBudget) -> None:
        self.max_message_bytes = max_message_bytes
        self._budget = budget
        self._chunk = b""
        self._offset = 0
        self._buffer = frame_buffer(self._take, True)  # UTF-8 is checked once, by the decoder (C speed)
        self._opcode: int | None = None
        self._fragments: list[bytes] = []
        self._message_bytes = 0
        self._limit = 0
        self._frames = 0
        self.reserved = 0
        """Bytes of the shared budget held for the message being read."""

    def feed(self, data: bytes) -> None:
        """Bytes from the socket, after what is left of the previous ones (less than one piece)."""
        rest = self._chunk[self._offset :]
        self._chunk, self._offset = (rest + data if rest else data), 0

    def _take(self, size: int) -> bytes:
        """Exactly `size` bytes, or NeedMoreBytesError: frame_buffer sums its list of pieces at every call, so
        a frame handed over in k pieces costs O(k^2) (an 8 KiB notification dripped a byte at a time: 0.9 s
        of CPU, against 21 ms through this); it asks for at most 16 KiB at a time, so what waits here stays
        under that."""
        if len(self._chunk) - self._offset < size:
            raise NeedMoreBytesError
        start = self._offset
        self._offset = start + size
        piece = self._chunk[start : self._offset]
        if self._offset == len(self._chunk):
            self._chunk, self._offset = b"", 0
        return piece

    def next(self, replies_awaited: bool) -> websocket.ABNF | Message:
        """The next control frame (ping, pong, close) or whole data message.

        Raises NeedMoreBytesError when the bytes fed so far end inside a frame, BudgetBusyError when the
        shared budget cannot take the message now (call again later: nothing is lost), CollectionError
        (protocol) for a message over its limit or a frame that breaks RFC 6455. `replies_awaited` tells
        whether a scrape waits for replies: a message that begins while none does may take MAX_UNASKED_BYTES
        at most.
        """
        while True:
            frame = self._next_frame(replies_awaited)
            if frame.opcode in _CONTROL_OPCODES:
                return frame
            if self._opcode is None:
                self._opcode = frame.opcode
            data = frame.data
            assert isinstance(data, bytes)  # a received frame's payload; ABNF allows str for frames to send
            self._fragments.append(data)
            self._message_bytes += len(data)
            if frame.fin:
                message = Message(self._opcode, b"".join(self._fragments), self.reserved)
                self._opcode, self._fragments, self._message_bytes, self._frames = None, [], 0, 0
                self.reserved = 0
                return message

    def _next_frame(self, replies_awaited: bool) -> websocket.ABNF:
        """The next whole frame, its length checked and its bytes reserved before its payload is read."""
        fin, opcode, announced = _frame_head(self._buffer)
        if opcode in _CONTROL_OPCODES:
            if announced > MAX_CONTROL_PAYLOAD:
                raise CollectionError(
                    Reason.PROTOCOL,
                    f"the Room sent a control frame of {announced} bytes "
                    f"(RFC 6455 allows {MAX_CONTROL_PAYLOAD})",
                )
        elif opcode == websocket.ABNF.OPCODE_CONT:
            if self._opcode is None:
                raise CollectionError(Reason.PROTOCOL, "the Room sent a continuation frame with no message")
        elif self._opcode is not None:
            raise CollectionError(Reason.PROTOCOL, "the Room began a message inside another one")
        else:  # a new message: its limit depends on whether a reply is awaited
            self._limit = self.max_message_bytes if replies_awaited else MAX_UNASKED_BYTES
        fragmented = self._opcode is not None or not fin  # control frames inside a message count too
        if fragmented and self._frames >= MAX_FRAMES_PER_MESSAGE:
            raise CollectionError(
                Reason.PROTOCOL, f"the Room sent more than {MAX_FRAMES_PER_MESSAGE} frames for one message"
            )
        if opcode not in _CONTROL_OPCODES:
            total = self._message_bytes + announced
            if total > self._limit:
                raise CollectionError(Reason.PROTOCOL, self._too_large(announced))
            # The first of a fragmented message reserves its whole possible size at once, so that no
            # connection ever waits for the budget while it holds part of it (Rooms waiting on each other).
            self._reserve((total if fin and self._opcode is None else self._limit) - FREE_BYTES)
        frame: websocket.ABNF = self._buffer.recv_frame()
        if fragmented:
            self._frames += 1
        return frame

    def _too_large(self, announced: int) -> str:
        if self._limit == MAX_UNASKED_BYTES:
            return (
                f"the Room sent a message of more than {MAX_UNASKED_BYTES} bytes while no reply was awaited "
                f"(a frame announced {announced} bytes)"
            )
        return (
            f"the Room sent a message of more than {self.max_message_bytes} bytes "
            f"(a frame announced {announced} bytes); see --max-message-bytes"
        )

    def _reserve(self, size: int) -> None:
        needed = size - self.reserved
        if needed > 0:
            if not self._budget.try_reserve(needed):
                raise BudgetBusyError
            self.reserved += needed

    def release(self) -> None:
        """Give back what the message being read holds of the shared budget (the session is closing)."""
        self._budget.release(self.reserved)
        self.reserved = 0


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
    """Prove, once at start-up, that websocket-client's frame buffer has the hooks `FrameStream` uses.

    A real two-frame stream is read through a fresh frame buffer of the installed release, exactly as
    `recv_frame()` above reads it. Raises UnsupportedWebSocketClientError naming the supported versions.
    """
    stream = bytearray(b"\x01\x05hello\x80\x7e\x01\x00" + b"x" * 256)  # text "hello" (not fin), then cont 256

    def recv(size: int) -> bytes:
        chunk = bytes(stream[:size])
        del stream[:size]
        return chunk

    try:
        buffer = frame_buffer(recv, True)
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
