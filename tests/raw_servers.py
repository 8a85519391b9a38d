"""Small misbehaving TCP servers on loopback, for failures the emulator cannot produce as a WebSocket peer."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """Serve `handle(connection)` for every connection on a free loopback port; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    connections: list[socket.socket] = []

    def accept_loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=_run, args=(handle, connection), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()


def _run(handle: Callable[[socket.socket], None], connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        handle(connection)


def silent(connection: socket.socket) -> None:
    """Accepts and never says a word (a listener that is not a Room), until the peer leaves (30 s at most)."""
    connection.settimeout(30)
    while connection.recv(65536):
        pass


def dripping(connection: socket.socket) -> None:
    """Answers the handshake one byte at a time, each just inside a short per-read timeout."""
    connection.recv(65536)
    for byte in b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" * 100:
        connection.sendall(bytes([byte]))
        time.sleep(0.3)  # the drip is the behaviour


def http_answer(
    status_line: bytes, body: bytes, content_type: bytes = b"application/json"
) -> Callable[[socket.socket], None]:
    """Answers any request with one fixed HTTP response."""

    def handle(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(
            status_line
            + b"\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )

    return handle


def garbage(connection: socket.socket) -> None:
    """Answers a WebSocket upgrade with bytes that are not HTTP at all."""
    connection.recv(65536)
    connection.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")


# --- a WebSocket Room made by hand, for frames no Room would send ---

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_AUTH_OK = b'{"method":"auth","requestId":"","result":true,"previleges":2}'


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True, announced: int | None = None) -> bytes:
    """One unmasked server frame; `announced` lies about the payload length when given."""
    length = len(payload) if announced is None else announced
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def reply_of_size(size: int) -> bytes:
    """A valid empty-list reply padded with spaces to exactly `size` bytes (JSON allows the whitespace)."""
    body = b'{"method":"getOutgoingFilesRequests","requestId":"","result":true,"outgoingFilesRequests":[]}'
    assert size >= len(body)
    return body[:-1] + b" " * (size - len(body)) + b"}"


def websocket_room(*frames: bytes, one_write: bool = False) -> Callable[[socket.socket], None]:
    """A raw Room: completes the handshake, answers `auth`, then sends `frames` once the scrape's requests
    arrive (a Room answers what it was asked), and holds the line open; with `one_write`, the frames go out
    in one write, otherwise one write each."""

    def handle(connection: socket.socket) -> None:
        read = _read_upgrade(connection)
        if read is None:
            return
        upgrade, rest = read
        connection.sendall(upgrade)
        if not rest and not connection.recv(65536):  # the auth request
            return
        connection.sendall(frame(_AUTH_OK))
        if not connection.recv(65536):  # the scrape's requests
            return
        if one_write:
            connection.sendall(b"".join(frames))
        else:
            for each in frames:
                connection.sendall(each)
        connection.settimeout(10)
        while connection.recv(65536):
            pass

    return handle


class InOrderRoom:
    """A Room that handles its frames strictly in order, one at a time, as a synchronous server would: a
    ping behind a slow request is ponged only once that request is answered. The emulator (websockets)
    pongs at once, so it cannot show this. `delay` is spent before each reply but `auth`'s;
    `half_open()` makes every connection so far read and send nothing more, without closing."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.connections = 0
        self._silenced = 0

    def half_open(self) -> None:
        self._silenced = self.connections

    def __call__(self, connection: socket.socket) -> None:
        self.connections += 1
        number = self.connections
        buffer = _accept_upgrade(connection)
        if buffer is None:
            return
        while True:
            opcode, payload = _read_client_frame(connection, buffer)
            if number <= self._silenced:
                time.sleep(30)  # half-open (the behaviour): nothing read, nothing sent, nothing closed
                return
            if opcode == 0x8:
                connection.sendall(frame(payload[:2], opcode=0x8))
                return
            if opcode == 0x9:
                connection.sendall(frame(payload, opcode=0xA))
            elif opcode == 0x1:
                request = json.loads(payload)
                if request["method"] != "auth":
                    time.sleep(self.delay)  # a slow Room: the delay is the behaviour
                reply = {"method": request["method"], "requestId": request["requestId"], "result": True}
                if request["method"] == "getOutgoingFilesRequests":
                    reply["outgoingFilesRequests"] = []
                connection.sendall(frame(json.dumps(reply).encode()))


def _read_client_frame(connection: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    """One masked client frame from `buffer`, read further from `connection` as needed."""

    def take(size: int) -> bytes:
        while len(buffer) < size:
            chunk = connection.recv(65536)
            if not chunk:
                raise ConnectionError("the client closed")
            buffer.extend(chunk)
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    first, second = take(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", take(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", take(8))
    mask = take(4) if second & 0x80 else b"\0\0\0\0"
    return first & 0x0F, bytes(byte ^ mask[index % 4] for index, byte in enumerate(take(length)))


def _read_upgrade(connection: socket.socket) -> tuple[bytes, bytearray] | None:
    """Reads a WebSocket upgrade request: the answer that accepts it and the bytes read past its head; None
    if the client closed first."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        chunk = connection.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID.encode()).digest())
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return answer, bytearray(rest)


def _accept_upgrade(connection: socket.socket) -> bytearray | None:
    """Reads a WebSocket upgrade request and accepts it; the bytes read past its head, None if it closed."""
    read = _read_upgrade(connection)
    if read is None:
        return None
    answer, rest = read
    connection.sendall(answer)
    return rest


def answering_room(
    answer: Callable[[str], bytes], idle_seconds: float = 60.0
) -> Callable[[socket.socket], None]:
    """A raw Room that answers every request as a real one would, in order: `auth` with success, any other
    method with `answer(method)` (whole frames, sent as they are: a reply, and whatever is to come with it,
    a notification before or behind it). Pongs pings; a connection quiet for `idle_seconds` is dropped, so a
    session the exporter keeps stays open while the test lasts and no thread outlives it for long."""

    def handle(connection: socket.socket) -> None:
        buffer = _accept_upgrade(connection)
        if buffer is None:
            return
        connection.settimeout(idle_seconds)
        while True:
            opcode, payload = _read_client_frame(connection, buffer)
            if opcode == 0x8:
                connection.sendall(frame(payload[:2], opcode=0x8))
                return
            if opcode == 0x9:
                connection.sendall(frame(payload, opcode=0xA))
            elif opcode == 0x1:
                method = json.loads(payload)["method"]
                connection.sendall(frame(_AUTH_OK) if method == "auth" else answer(method))

    return handle


def ok_reply(method: str) -> bytes:
    """A successful reply of `method` with nothing else in it, as one frame."""
    return frame(json.dumps({"method": method, "requestId": "", "result": True}).encode())


def announcing_room(announced: int, drip_seconds: float, drips: int) -> Callable[[socket.socket], None]:
    """A raw Room that answers auth, then announces a text frame of `announced` bytes and sends its payload
    one byte every `drip_seconds`, `drips` bytes at most: a reader that waits for the whole frame waits for
    ever, and one that reserves memory for it up front holds it all that time."""

    def handle(connection: socket.socket) -> None:
        if _accept_upgrade(connection) is None:
            return
        connection.sendall(frame(_AUTH_OK) + frame(b"", announced=announced))
        for _ in range(drips):
            connection.sendall(b" ")
            time.sleep(drip_seconds)  # the drip is the behaviour

    return handle


def fragmenting_room(message: bytes, pause: float) -> Callable[[socket.socket], None]:
    """A raw Room that answers auth, then answers the scrape's request with `message` in two fragments
    `pause` seconds apart."""

    def handle(connection: socket.socket) -> None:
        rest = _accept_upgrade(connection)
        if rest is None:
            return
        if not rest and not connection.recv(65536):  # the auth request
            return
        connection.sendall(frame(_AUTH_OK))
        if not connection.recv(65536):  # the scrape's request
            return
        half = len(message) // 2
        connection.sendall(frame(message[:half], fin=False))
        time.sleep(pause)  # the pause between the fragments is the behaviour
        connection.sendall(frame(message[half:], opcode=0x0))
        connection.settimeout(10)
        with contextlib.suppress(OSError):
            while connection.recv(65536):
                pass

    return handle


# --- Rooms that act between scrapes, for the sessions' reader ---


def progress_notification(request_id: str, percent: int = 50) -> bytes:
    """One `outgoingFileRequestUploadingProgress` notification as a frame, in the reference's shape (§8):
    about 300 bytes, as a real Room sends many of during a large transfer."""
    body = {
        "method": "event",
        "event": "outgoingFileRequestUploadingProgress",
        "fileSize": 734_003_200,
        "processedPercents": percent,
        "fileRequestId": request_id,
        "fileName": "quarterly-review-recording-2024-12-04.mp4",
        "timestamp": 1733300000,
        "fileId": 4242,
        "peerId": "alexandra.konstantinopolskaya@video.example.org",
        "peerDisplayName": "Alexandra Konstantinopolskaya (Board Room)",
        "confId": "",
    }
    return frame(json.dumps(body).encode())


class RoomLine:
    """One connection of a ScriptedRoom, as its `between` step sees it."""

    def __init__(self, connection: socket.socket, buffer: bytearray) -> None:
        self.connection = connection
        self.buffer = buffer

    def send(self, data: bytes) -> None:
        self.connection.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame the exporter sends (opcode, unmasked payload), within the connection's timeout."""
        return _read_client_frame(self.connection, self.buffer)


class ScriptedRoom:
    """A raw Room that answers `auth` and every request in order, as a Room would (success, with the request's
    id; getOutgoingFilesRequests with an empty list), pongs pings, and once, right after answering its
    `after`-th request on a connection, runs `between(line)`: what the Room does between two scrapes, in the
    connection's own thread. It goes on answering after it, unless `between` ended the connection.

    `connections` counts the connections accepted; `done` is set once `between` has returned or raised (what
    it raised is `error`); a connection quiet for `idle_seconds` is dropped, so no thread outlives a test."""

    def __init__(
        self,
        between: Callable[[RoomLine], None] | None = None,
        after: int = 1,
        idle_seconds: float = 30.0,
    ) -> None:
        self.between = between
        self.after = after
        self.idle_seconds = idle_seconds
        self.connections = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._ran = False

    def __call__(self, connection: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        buffer = _accept_upgrade(connection)
        if buffer is None:
            return
        connection.settimeout(self.idle_seconds)
        line = RoomLine(connection, buffer)
        answered = 0
        while True:
            opcode, payload = line.read_frame()
            if opcode == 0x8:
                line.send(frame(payload[:2], opcode=0x8))
                return
            if opcode == 0x9:
                line.send(frame(payload, opcode=0xA))
                continue
            if opcode != 0x1:
                continue
            request = json.loads(payload)
            method = request["method"]
            reply: dict[str, object] = {"method": method, "requestId": request["requestId"], "result": True}
            if method == "getOutgoingFilesRequests":
                reply["outgoingFilesRequests"] = []
            line.send(frame(json.dumps(reply).encode()))
            if method == "auth":
                continue
            answered += 1
            if answered == self.after and self._take_turn():
                try:
                    self.between(line)  # type: ignore[misc]  # _take_turn: not None
                except BaseException as error:
                    self.error = error
                    raise
                finally:
                    self.done.set()

    def _take_turn(self) -> bool:
        with self._lock:
            if self.between is None or self._ran:
                return False
            self._ran = True
            return True


def dripping_upgrade(every: float, seconds: float) -> Callable[[socket.socket], None]:
    """Answers the upgrade request one byte every `every` seconds, for `seconds` at most, never finishing
    the answer's head: only a deadline on the whole handshake ends it before that."""

    def handle(connection: socket.socket) -> None:
        connection.recv(65536)
        head = b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Drip: " + b"d" * 4096
        ends = time.monotonic() + seconds
        for byte in head:
            if time.monotonic() >= ends:
                return
            connection.sendall(bytes([byte]))
            time.sleep(every)  # the drip is the behaviour

    return handle


def held_upgrade(requested: threading.Event, released: threading.Event) -> Callable[[socket.socket], None]:
    """Reads the upgrade request, sets `requested` and answers nothing until `released` (30 s at most)."""

    def handle(connection: socket.socket) -> None:
        connection.recv(65536)
        requested.set()
        released.wait(30)

    return handle
