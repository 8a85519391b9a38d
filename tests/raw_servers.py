"""Small misbehaving TCP servers on loopback, for failures the emulator cannot produce as a WebSocket peer."""

from __future__ import annotations

import contextlib
import socket
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
    """Accepts and never says a word (a listener that is not a Room)."""
    connection.recv(65536)
    time.sleep(30)


def dripping(connection: socket.socket) -> None:
    """Answers the handshake one byte at a time, each just inside a short per-read timeout."""
    connection.recv(65536)
    for byte in b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" * 100:
        connection.sendall(bytes([byte]))
        time.sleep(0.3)


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
