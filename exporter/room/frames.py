"""A WebSocket that refuses an oversized message unread: no Room can make the exporter eat memory.

websocket-client reads a whole frame payload in one `recv_strict(length)` call, and joins continuation frames
into one buffer, so a limit checked after `recv()` comes too late: the memory is already spent.
`BoundedWebSocket` checks earlier. Every frame goes through `WebSocket.recv_frame()`, which hands over to
`frame_buffer.recv_frame()`. That buffer is written to resume a frame whose header and length were already
read (its non-blocking mode): it only calls `recv_header()` / `recv_length()` when `needs_header()` /
`needs_length()` say so. The override reads the header and the length through those same public methods,
checks the announced length (and the running total of a fragmented message) against the limit, and only
then lets the buffer read the payload. A refusal leaves the buffer holding the refused header, so any later
read on this connection (the closing handshake included) is refused too, instead of parsing payload bytes
as frame headers; the connection is then dropped.

websocket-client also joins the fragments of a message with `+=`, copying everything so far at every
fragment: 16 fragments of a 4 MiB message churn through ~34 MiB, and with several scrapes at once malloc keeps
that (the soak saw 100+ MiB of resident memory). `_LinearReassembly` keeps the fragments in a list and
joins them once.
"""

from __future__ import annotations

from typing import Any

import websocket
from websocket._abnf import continuous_frame

from exporter.room.errors import CollectionError, Reason

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""A real `getOutgoingFilesRequests` reply takes ~250 bytes per request: 4 MiB is ~16 000 requests."""

_OPCODE_INDEX = 4
"""Where frame_buffer keeps the opcode in its header tuple (fin, rsv1, rsv2, rsv3, opcode, mask, length)."""
_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)


class _LinearReassembly(continuous_frame):
    """websocket-client's reassembly of a fragmented message, with a list of fragments joined once."""

    def add(self, frame: websocket.ABNF) -> None:
        if self.cont_data is None:
            if frame.opcode in _DATA_OPCODES:
                self.recving_frames = frame.opcode
            self.cont_data = [frame.opcode, [frame.data]]
        else:
            self.cont_data[1].append(frame.data)
        if frame.fin:
            self.recving_frames = None

    def extract(self, frame: websocket.ABNF) -> tuple[int, websocket.ABNF]:
        if self.cont_data is not None:
            self.cont_data[1] = b"".join(self.cont_data[1])
        return super().extract(frame)


class BoundedWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket with a limit on a message's size, checked before its payload is read."""

    def __init__(self, *args: Any, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_message_bytes = max_message_bytes
        self.cont_frame = _LinearReassembly(
            self.cont_frame.fire_cont_frame, self.cont_frame.skip_utf8_validation
        )
        self._message_bytes = 0
        """Payload bytes of the message being received so far (its first frame and its continuations)."""

    def recv_frame(self) -> websocket.ABNF:
        buffer = self.frame_buffer
        if buffer.needs_header():
            buffer.recv_header()
        if buffer.needs_length():
            buffer.recv_length()
        assert buffer.header is not None and buffer.length is not None
        opcode = buffer.header[_OPCODE_INDEX]
        announced = buffer.length
        if opcode in _DATA_OPCODES:
            total = announced
        elif opcode == websocket.ABNF.OPCODE_CONT:
            total = self._message_bytes + announced
        else:  # a control frame (close, ping, pong): on its own, never part of a message
            total = announced
        if total > self.max_message_bytes:
            raise CollectionError(
                Reason.PROTOCOL,
                f"the Room sent a message of more than {self.max_message_bytes} bytes "
                f"(a frame announced {announced} bytes); see --max-message-bytes",
            )
        frame = super().recv_frame()
        if opcode in _DATA_OPCODES or opcode == websocket.ABNF.OPCODE_CONT:
            self._message_bytes = 0 if frame.fin else total
        return frame
