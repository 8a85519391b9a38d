"""Clients that ask for a large answer and never read it: what the server holds for them is bounded.

Before the budget, every such client held its whole answer (the status page could be 1.7 MB) until the 30 s
write timeout, in the kernel's send buffer (grown up to 4 MiB per connection) and past that in the process:
100 clients of a 1.7 MB answer held 170 MB. Now each connection's send buffer is fixed small, answers the
kernel has not taken are counted against a server-wide budget, and past it the connections waiting longest
are closed. A real server process runs a WSGI app whose large answer stands in for a big status page.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.web.server import DEFAULT_MAX_UNSENT_BYTES
from tests.processes import wait_until

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
ANSWER_BYTES = 1_700_000
CLIENTS = 100
SERVER = """
import sys
from exporter.web.server import make_http_server

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/big":
        return [b"x" * int(sys.argv[1])]  # made afresh for every request, as the status page is
    return [b"ok\\n"]

server = make_http_server(app, "127.0.0.1", 0)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def big_answer_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ANSWER_BYTES)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert process.stdout is not None
    try:
        yield process, int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def send_queue_bytes(port: int) -> int:
    """Bytes in the kernel's send queues of the server's side of its connections (/proc/net/tcp)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            total += int(fields[4].split(":")[0], 16)
    return total


def non_reading_client(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def get(port: int, path: str) -> bytes:
    """The body of a 200 answer, read to the end (the request says Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


def healthz(port: int) -> float:
    started = time.monotonic()
    assert get(port, "/healthz") == b"ok\n"
    return time.monotonic() - started


def test_clients_that_never_read_a_large_answer_hold_a_bounded_amount(big_answer_server):
    process, port = big_answer_server
    healthz(port)
    at_rest = status_kib(process.pid, "VmRSS")
    clients = [non_reading_client(port) for _ in range(CLIENTS)]
    try:
        for sock in clients:  # every answer has begun: its head reached the client (or it was closed)
            assert select.select([sock], [], [], 20)[0]
        assert healthz(port) < 1.0, "a small answer goes out while the large ones are held"
        assert len(get(port, "/big")) == ANSWER_BYTES, "a client that reads gets the large answer whole"
        peak_mib = (status_kib(process.pid, "VmHWM") - at_rest) / 1024
        kernel_mib = send_queue_bytes(port) / 2**20
        held_mib = DEFAULT_MAX_UNSENT_BYTES / 2**20
        # 100 x 1.7 MB = 162 MiB held before; now the budget, the few answers being made, one chunk each.
        assert peak_mib < held_mib + 32, f"resident memory grew by {peak_mib:.0f} MiB"
        assert kernel_mib < 8, f"{kernel_mib:.0f} MiB waiting in the kernel's send buffers"
    finally:
        for sock in clients:
            sock.close()
    assert wait_until(lambda: send_queue_bytes(port) == 0, 10)
    assert healthz(port) < 1.0
    # and what they held is let go: the cycles asyncio leaves behind failed connections are collected
    assert wait_until(lambda: status_kib(process.pid, "VmRSS") - at_rest < 24 * 1024, 15), (
        f"resident memory still {(status_kib(process.pid, 'VmRSS') - at_rest) / 1024:.0f} MiB above rest"
    )
