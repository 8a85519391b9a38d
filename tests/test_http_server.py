"""The HTTP server under hostile clients, over raw loopback sockets: every bound it promises, tried.

Slow and silent clients are cut at the read-header timeout, with TLS too; header floods get 431; past the
connection and collection caps the answer is 503; malformed requests get 400; an unfinished request never
reaches the app; HEAD answers like GET without a body; every answer says nosniff; keep-alive works.
In-process servers with small limits keep these fast; `test_deployment_limits.py` runs real processes.
"""

from __future__ import annotations

import email.utils
import gc
import logging
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from exporter.emulator.faults import Fault
from exporter.room import parse_target
from exporter.web import app as app_module
from exporter.web import server as server_module
from exporter.web.app import ExporterApp
from exporter.web.config import WebConfigWatcher
from exporter.web.server import HTTPServer, ServerLimits, make_http_server
from exporter.web.settings import ExporterSettings
from tests.processes import wait_until

pytestmark = pytest.mark.loopback  # emulated Rooms or the server on loopback sockets

FAST = ServerLimits(read_header_timeout=1.0, idle_timeout=1.0)
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    """Start an in-process server: `serve(app=..., limits=..., web_config=...)`; returns its port."""
    servers: list[HTTPServer] = []

    def start(
        app: Any = None,
        limits: ServerLimits = FAST,
        web_config: WebConfigWatcher | None = None,
        target: str = "ws://127.0.0.1:1",
    ) -> int:
        if app is None:
            app = ExporterApp(ExporterSettings(parse_target(target), None, 5.0))
        server = make_http_server(app, "127.0.0.1", 0, web_config, limits)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Recorder:
    """A WSGI app that counts the requests it was given."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"executed\n"]


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket | ssl.SSLSocket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes (or `timeout` passes: then what came so far)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError, ssl.SSLError):
        pass
    return data


def exchange(port: int, request: bytes, half_close: bool = False, timeout: float = 5.0) -> bytes:
    """Send `request`; the first whole response (by its Content-Length), or all until the server closed."""
    with connect(port) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if complete(data):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return data


def complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


_UNREAD: dict[int, bytes] = {}
"""Bytes read past one response, by socket: pipelined answers can arrive in one read."""


def read_response(sock: socket.socket | ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One response read by its Content-Length, leaving the connection open (and any later bytes kept)."""
    data = _UNREAD.pop(id(sock), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    status, headers, rest = parse(data)
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a body"
        rest += chunk
    if rest[length:]:
        _UNREAD[id(sock)] = rest[length:]
    return status, headers, rest[:length]


def drip(sock: socket.socket | ssl.SSLSocket, data: bytes, interval: float, limit: float) -> float:
    """Send `data` a byte at a time; the seconds until the server cut the connection (or `limit`)."""
    started = time.monotonic()
    sock.settimeout(interval)
    for byte in data:
        if time.monotonic() - started > limit:
            break
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (OSError, ssl.SSLError):
            return time.monotonic() - started
    return time.monotonic() - started


# ---- slow and silent clients ----


def test_a_client_dripping_its_headers_is_cut_at_the_read_header_timeout(serve):
    port = serve()
    with connect(port) as sock:
        elapsed = drip(sock, GET_HEALTHZ[:-2] + b"X-Slow: " + b"a" * 200, interval=0.1, limit=6)
    assert 0.9 < elapsed < 2.5, "the whole head has one deadline: a byte every 0.1 s does not extend it"


def test_a_silent_connection_is_closed_at_the_read_header_timeout_and_scrapes_go_on(serve):
    port = serve()
    started = time.monotonic()
    silent = [connect(port) for _ in range(20)]
    assert parse(exchange(port, GET_HEALTHZ))[0] == 200  # answered while 20 connections say nothing
    for sock in silent:
        assert read_all(sock, timeout=4) == b""
        sock.close()
    assert time.monotonic() - started < 3


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(serve):
    port = serve()
    with connect(port) as sock:
        sock.sendall(GET_HEALTHZ)
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert read_all(sock, timeout=5) == b""
        assert 0.8 < time.monotonic() - started < 3


# ---- malformed and oversized requests ----


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /metrics\r\n\r\n", id="http-0.9"),
        pytest.param(b"GET /metrics HTTP/1.1\r\n\r\n", id="http-1.1-without-host"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", id="space-in-name"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", id="tls-to-plain-port"),
        pytest.param(b"GET /healthz HTTP/1.1\nHost: x\n\n", id="bare-lf-lines"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", id="one-bare-lf"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\n", id="bare-lf-blank-line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", id="obs-fold-space"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", id="obs-fold-tab"),
    ],
)
def test_malformed_requests_are_400_and_never_reach_the_app(serve, request_bytes):
    recorder = Recorder()
    status, headers, body = parse(exchange(serve(app=recorder), request_bytes))
    assert status == 400
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "close"
    assert body == b"bad request\n", "the answer never quotes the request"
    assert recorder.calls == []


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"http://[/", id="absolute-unclosed-bracket"),
        pytest.param(b"http://[::1/healthz", id="absolute-bad-ipv6"),
        pytest.param(b"http://x:port/healthz", id="absolute-bad-port"),
        pytest.param(b"ftp://x/healthz", id="absolute-not-http"),
        pytest.param(b"http:///healthz", id="absolute-without-host"),
        pytest.param(b"healthz", id="no-leading-slash"),
        pytest.param(b"*", id="asterisk"),
        pytest.param(b"x:80", id="authority-form"),
    ],
)
def test_a_malformed_request_target_is_400_with_one_debug_line_at_most(serve, caplog, target):
    """A target urlsplit cannot parse used to escape as an exception: no answer, a traceback per request."""
    recorder = Recorder()
    port = serve(app=recorder)
    with caplog.at_level(logging.DEBUG, logger="exporter.web.server"):
        raw = exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse(exchange(port, GET_HEALTHZ))[0] == 200  # the server goes on
    status, headers, body = parse(raw)
    assert (status, body, headers["connection"]) == (400, b"bad request\n", "close")
    assert recorder.calls == ["GET /healthz"]
    records = [
        r for r in caplog.records if r.name == "exporter.web.server" and "healthz" not in r.getMessage()
    ]
    assert len(records) <= 1, [r.getMessage() for r in records]
    assert all(r.levelno == logging.DEBUG and not hasattr(r, "traceback") for r in records)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/healthz?a=1", "/healthz", "a=1"),
        (b"http://x/healthz?a=1", "/healthz", "a=1"),
        (b"https://x:8080/healthz", "/healthz", ""),
        (b"http://x", "/", ""),
        (b"http://[::1]:80/a%20b", "/a b", ""),
    ],
)
def test_well_formed_targets_reach_the_app_as_path_and_query(serve, target, path, query):
    seen: list[tuple[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((environ["PATH_INFO"], environ["QUERY_STRING"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    assert parse(exchange(serve(app=app), b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200
    assert seen == [(path, query)]


def test_transfer_encoding_with_content_length_is_400_and_nothing_is_smuggled(serve):
    """RFC 9112 6.3: a front proxy framing by Content-Length would pass the chunked "body" on as data; the
    exporter framed by Transfer-Encoding and ran what followed the chunks as a second request."""
    recorder = Recorder()
    port = serve(app=recorder)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    request = (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
    )
    with connect(port) as sock:
        sock.sendall(request)
        raw = read_all(sock, timeout=5)  # the server answers once, then closes
    status, headers, rest = parse(raw)
    assert (status, headers["connection"]) == (400, "close")
    assert rest == b"bad request\n", "one answer, nothing after it"
    assert recorder.calls == []


def test_a_chunked_body_alone_is_read(serve):
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    request = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert parse(exchange(serve(app=app), request))[0] == 200
    assert seen == [b"abc"]


def test_http_1_0_without_host_is_served(serve):
    status, _, body = parse(exchange(serve(), b"GET /healthz HTTP/1.0\r\n\r\n"))
    assert (status, body) == (200, b"ok\n")


def test_an_unknown_http_version_is_505(serve):
    assert parse(exchange(serve(), b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n"))[0] == 505


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"X-Big: " + b"a" * 20000 + b"\r\n", id="one-long-line"),
        pytest.param(b"X-Many: b\r\n" * 2000, id="many-lines"),
        pytest.param(b"X-Just-Over: " + b"c" * (8 * 1024 - 40) + b"\r\n", id="just-over-in-one-read"),
    ],
)
def test_headers_past_the_cap_are_431(serve, headers):
    recorder = Recorder()
    raw = exchange(serve(app=recorder), b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, answer_headers, _ = parse(raw)
    assert status == 431 and answer_headers["x-content-type-options"] == "nosniff"
    assert recorder.calls == []


def test_headers_just_under_the_cap_are_served(serve):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fits: " + b"d" * (8 * 1024 - 200) + b"\r\n\r\n"
    assert parse(exchange(serve(), request))[0] == 200


def test_every_answer_carries_the_current_date_in_gmt(serve):
    """RFC 9110 §6.6.1: an origin server with a clock sends Date, in IMF-fixdate."""
    before = int(time.time())
    status, headers, _ = parse(exchange(serve(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
    after = time.time()
    assert status == 200 and headers["date"].endswith(" GMT"), headers
    assert before <= email.utils.parsedate_to_datetime(headers["date"]).timestamp() <= after


def test_a_body_past_the_cap_is_413(serve):
    request = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    assert parse(exchange(serve(), request))[0] == 413


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", id="head-unfinished"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x", id="line-unfinished"),
        pytest.param(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", id="body-short"),
    ],
)
def test_a_request_left_unfinished_by_a_half_close_is_never_executed(serve, partial):
    recorder = Recorder()
    raw = exchange(serve(app=recorder), partial, half_close=True)
    assert recorder.calls == []
    assert raw == b"" or parse(raw)[0] == 400


# ---- caps ----


def test_past_the_connection_cap_the_answer_is_503_then_service_resumes(serve):
    port = serve(limits=ServerLimits(read_header_timeout=3.0, max_connections=3))
    held = [connect(port) for _ in range(3)]  # accepted in order: the next one is the fourth
    status, headers, body = parse(exchange(port, GET_HEALTHZ))
    assert status == 503 and b"too many connections" in body
    assert headers["x-content-type-options"] == "nosniff" and headers["retry-after"] == "1"
    for sock in held:
        sock.close()
    assert wait_until(lambda: parse(exchange(port, GET_HEALTHZ))[0] == 200, 3), "service resumed"


def test_past_the_collection_cap_scrapes_are_503_and_healthz_still_answers(serve, room):
    slow = room("doc-example", fault=Fault.SLOW_REPLY, slow_reply_seconds=1.0)
    port = serve(limits=ServerLimits(max_collections=2), target=f"ws://127.0.0.1:{slow.ports.websocket}")
    scrapes = [connect(port) for _ in range(2)]
    for sock in scrapes:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    answers: list[tuple[int, dict[str, str], bytes]] = []

    def refused() -> bool:  # once both scrapes hold their slots (a third is not refused before)
        answers.append(parse(exchange(port, b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n", timeout=1)))
        return answers[-1][0] == 503

    assert wait_until(refused, 0.9), answers  # within the Room's 1 s, while both scrapes wait for it
    assert b"too many scrapes in flight" in answers[-1][2]
    assert parse(exchange(port, GET_HEALTHZ, timeout=1))[0] == 200
    for sock in scrapes:
        assert read_response(sock)[0] == 200
        sock.close()
    assert parse(exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200


# ---- HTTP semantics ----


def test_keep_alive_serves_two_requests_on_one_connection_and_pipelining(serve):
    recorder = Recorder()
    port = serve(app=recorder)
    with connect(port) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert read_all(sock, timeout=2) == b""
    assert recorder.calls == ["GET /one", "GET /two", "GET /three", "GET /four"]


@pytest.mark.parametrize("path", ["/", "/healthz", "/metrics", "/probe", "/nope", "/-/reload"])
def test_head_answers_every_get_route_with_its_headers_and_no_body(serve, room, path):
    port = serve(target=f"ws://127.0.0.1:{room('doc-example').ports.websocket}")
    get_status, get_headers, get_body = parse(exchange(port, f"GET {path} HTTP/1.0\r\n\r\n".encode()))
    head_status, head_headers, head_body = parse(exchange(port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode()))
    assert head_status == get_status
    assert get_status != 405 or path == "/-/reload"
    assert head_body == b"" and len(get_body) == int(get_headers["content-length"])
    assert set(head_headers) == set(get_headers)
    if path != "/metrics":  # a collection's durations differ from one scrape to the next
        assert head_headers["content-length"] == get_headers["content-length"]
    assert head_headers["content-type"] == get_headers["content-type"]


def test_every_answer_says_nosniff(serve, monkeypatch):
    def explode(*_args: object) -> None:
        raise RuntimeError("injected")

    port = serve()
    for request in (
        GET_HEALTHZ,
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /-/reload HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics\r\n\r\n",
    ):
        headers = parse(exchange(port, request))[1]
        assert headers["x-content-type-options"] == "nosniff", request
    monkeypatch.setattr(app_module, "landing_page", explode)
    status, headers, _ = parse(exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 500 and headers["x-content-type-options"] == "nosniff"


def test_a_failing_app_is_one_error_line_and_a_500(serve, caplog):
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("injected into the app")

    with caplog.at_level(logging.ERROR):
        status, _, body = parse(exchange(serve(app=broken), GET_HEALTHZ))
    assert status == 500 and b"injected" not in body
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "injected into the app" in record.traceback  # type: ignore[attr-defined]


# ---- TLS ----


class TLSFiles:
    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(folder / "server.crt")
        cert.private_key_pem.write_to_path(folder / "server.key")
        self.config = folder / "web.yml"
        self.config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")

    def client(self, port: int) -> ssl.SSLSocket:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context.wrap_socket(connect(port), server_hostname="127.0.0.1")


@pytest.fixture
def tls_files(tmp_path) -> TLSFiles:
    return TLSFiles(tmp_path)


def test_tls_silent_after_the_handshake_is_cut_and_tls_keep_alive_works(serve, tls_files):
    port = serve(web_config=WebConfigWatcher(tls_files.config))
    with tls_files.client(port) as sock:  # the handshake is done; now say nothing
        started = time.monotonic()
        assert read_all(sock, timeout=5) == b""
        assert 0.8 < time.monotonic() - started < 3
    with tls_files.client(port) as sock:
        sock.sendall(GET_HEALTHZ)
        assert read_response(sock)[:1] == (200,)
        sock.sendall(GET_HEALTHZ)
        status, headers, body = read_response(sock)
        assert (status, body, headers["x-content-type-options"]) == (200, b"ok\n", "nosniff")


def test_tls_silent_before_the_handshake_and_dripping_after_it_are_cut(serve, tls_files):
    port = serve(web_config=WebConfigWatcher(tls_files.config))
    with connect(port) as silent:
        started = time.monotonic()
        assert read_all(silent, timeout=5) == b""
        assert time.monotonic() - started < 3
    with tls_files.client(port) as sock:
        elapsed = drip(sock, GET_HEALTHZ[:-2] + b"X-Slow: " + b"a" * 200, interval=0.1, limit=6)
    assert 0.9 < elapsed < 2.5


def test_plain_http_to_the_tls_port_is_told_so(serve, tls_files):
    port = serve(web_config=WebConfigWatcher(tls_files.config))
    status, headers, body = parse(exchange(port, GET_HEALTHZ))
    assert status == 400 and body == b"Client sent an HTTP request to an HTTPS server.\n"
    assert headers["x-content-type-options"] == "nosniff"


def test_switching_tls_off_in_a_running_process_is_refused_and_tls_keeps_serving(serve, tls_files, caplog):
    port = serve(web_config=WebConfigWatcher(tls_files.config))
    tls_files.config.write_text("basic_auth_users: {}\n")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            with tls_files.client(port) as sock:
                sock.sendall(GET_HEALTHZ)
                assert read_response(sock)[0] == 200
    assert parse(exchange(port, GET_HEALTHZ))[0] == 400  # plain HTTP is still refused
    [record] = [r for r in caplog.records if "switches TLS" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "switches TLS off, which needs a restart" in record.getMessage()
    assert not [r for r in caplog.records if "web config reloaded" in r.getMessage()]


def test_switching_tls_on_in_a_running_process_is_refused_and_plain_http_keeps_serving(
    serve, tls_files, caplog
):
    tls_text = tls_files.config.read_text()
    tls_files.config.write_text("basic_auth_users: {}\n")
    port = serve(web_config=WebConfigWatcher(tls_files.config))
    tls_files.config.write_text(tls_text)
    with caplog.at_level(logging.INFO):
        assert parse(exchange(port, GET_HEALTHZ))[0] == 200
        assert parse(exchange(port, GET_HEALTHZ))[0] == 200
    [record] = [r for r in caplog.records if "switches TLS" in r.getMessage()]
    assert record.levelno == logging.ERROR and "switches TLS on, which needs a restart" in record.getMessage()


def test_connections_that_failed_are_freed_though_the_garbage_collector_would_not_run(serve, monkeypatch):
    """asyncio keeps a failed connection's exception, whose traceback reaches back to the connection and
    its answer: a cycle. The collector, driven by counts of new objects, may not run for a long time in a
    quiet process (disabled here): the server runs it once a burst of connections has closed."""
    monkeypatch.setattr(server_module, "GC_INTERVAL_SECONDS", 0.1)
    monkeypatch.setattr(server_module, "GC_AFTER_CLOSED_CONNECTIONS", 10)

    def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x" * 126_000]  # a status page's size: more than a small receive window takes

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        port = serve(app=page)
        before = tracemalloc.get_traced_memory()[0]
        clients = []
        for _ in range(30):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            clients.append(sock)
        held = 30 * 100_000  # most of each answer is still waiting to be written
        assert wait_until(lambda: tracemalloc.get_traced_memory()[0] - before > held, 5)
        for sock in clients:  # a reset while the answer is being written: the connection fails
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            sock.close()
        freed = wait_until(lambda: tracemalloc.get_traced_memory()[0] - before < held // 10, 5)
        assert freed, f"{(tracemalloc.get_traced_memory()[0] - before) / 1e6:.1f} MB still held"
    finally:
        tracemalloc.stop()
        gc.enable()
