"""The Room client against real sockets: the emulator for the Room, raw servers for what no Room would do."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from exporter.collect.collection import collect_room
from exporter.emulator.faults import Fault
from exporter.emulator.scenario import Scenario, load_scenario
from exporter.room import Deadline, Reason, parse_target
from exporter.room.client import fetch_room
from exporter.room.errors import CollectionError
from exporter.room.request import RoomRequest
from tests import raw_servers
from tests.fault_reasons import FAULTS, SLOW_OR_HUGE, TOLERATED
from tests.processes import wait_until

pytestmark = pytest.mark.loopback  # the Room client over real sockets: raw servers, closed ports, lookups

DEADLINE_SLACK_SECONDS = 1.0
"""How far past its deadline a collection may return on a loaded CI machine (scheduling, not waiting)."""


def ws(emulator) -> str:
    return f"ws://127.0.0.1:{emulator.ports.websocket}"


def collect(target: str, pin: str | None = None, timeout: float = 5.0):
    started = time.monotonic()
    collection = collect_room(RoomRequest(parse_target(target), pin), timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + DEADLINE_SLACK_SECONDS, (
        f"collection took {elapsed:.2f}s with a {timeout}s deadline"
    )
    return collection


def reason_of(collection) -> Reason:
    assert not collection.up, "expected the collection to fail"
    return collection.error.reason


def test_documented_example_through_the_real_protocol(room):
    collection = collect(ws(room("doc-example")))
    assert collection.up
    snapshot = collection.snapshot
    assert snapshot.counts[("downloading", "peer")] == 1
    assert snapshot.counts[("downloading", "conference")] == 1
    assert snapshot.total == 2
    assert snapshot.oldest_pending_created_at["downloading"] == 1659251271


def test_discovery_through_config_json(room):
    emulator = room("doc-example")
    collection = collect(f"http://127.0.0.1:{emulator.ports.web}")
    assert collection.up
    assert collection.snapshot.total == 2


def test_many_notifications_before_the_reply_are_skipped(room):
    scenario = load_scenario("doc-example")
    scenario.notifications_before_reply = 2000
    collection = collect(ws(room(scenario)))
    assert collection.up
    assert collection.snapshot.total == 2


def test_reply_with_empty_request_id_is_matched_by_method(room):
    scenario = load_scenario("doc-example")
    scenario.empty_request_id = True
    scenario.notifications_before_reply = 3
    collection = collect(ws(room(scenario)))
    assert collection.up
    assert collection.snapshot.total == 2


def test_milliseconds_and_a_room_clock_ahead(room):
    now = time.time()
    scenario = Scenario(
        entries=[
            {"status": 1, "size": 10, "_ageMilliseconds": 90_000, "peerId": "a"},
            {
                "status": 2,
                "size": 20,
                "timestamp": int(now + 3600),
                "confId": "c",
            },  # the Room's clock is an hour ahead
        ]
    )
    collection = collect(ws(room(scenario)))
    snapshot = collection.snapshot
    assert snapshot.oldest_pending_age("waiting", collection.collected_at) == pytest.approx(90, abs=5)
    assert snapshot.oldest_pending_age("downloading", collection.collected_at) == 0.0


def test_right_pin_is_accepted(room):
    assert collect(ws(room("doc-example", pin="4321")), pin="4321").up


@pytest.mark.parametrize("given", ["1111", None])
def test_wrong_or_missing_pin_is_auth(room, given):
    collection = collect(ws(room("doc-example", pin="4321")), pin=given)
    assert reason_of(collection) is Reason.AUTH
    assert "Wrong credentials" in collection.error.message


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(f, r) for f, r in FAULTS if r is not Reason.TIMEOUT and f not in SLOW_OR_HUGE],
    ids=lambda item: getattr(item, "value", None),
)
def test_misbehaving_room_gives_its_reason(room, fault, reason):
    assert reason_of(collect(ws(room("doc-example", fault=fault)), timeout=3)) is reason


@pytest.mark.parametrize("fault", TOLERATED, ids=str)
def test_a_tolerated_fault_is_up_with_zero_requests(room, fault):
    collection = collect(ws(room("doc-example", fault=fault)), timeout=3)
    assert collection.up
    assert collection.snapshot.total == 0
    assert collection.snapshot.malformed == 0


@pytest.mark.parametrize("fault", [Fault.SILENT, Fault.NO_AUTH_REPLY, Fault.SLOW_REPLY])
def test_a_room_that_does_not_answer_in_time_is_timeout_within_the_deadline(room, fault):
    assert reason_of(collect(ws(room("doc-example", fault=fault)), timeout=0.6)) is Reason.TIMEOUT


def test_bad_config_json_is_protocol(room):
    emulator = room("doc-example", fault=Fault.BAD_CONFIG_JSON)
    assert reason_of(collect(f"http://127.0.0.1:{emulator.ports.web}")) is Reason.PROTOCOL


def test_connection_refused_is_connect():
    with raw_servers.tcp_server(raw_servers.silent) as port:
        pass  # the port is closed again: nothing listens there now
    assert reason_of(collect(f"127.0.0.1:{port}")) is Reason.CONNECT


def test_unknown_host_is_connect():
    assert reason_of(collect("ws://no-such-room.invalid:8765")) is Reason.CONNECT


def test_silent_listener_is_timeout_within_the_deadline():
    with raw_servers.tcp_server(raw_servers.silent) as port:
        assert reason_of(collect(f"127.0.0.1:{port}", timeout=0.5)) is Reason.TIMEOUT


def test_a_handshake_dripping_byte_by_byte_cannot_outlive_the_deadline():
    with raw_servers.tcp_server(raw_servers.dripping) as port:
        assert reason_of(collect(f"127.0.0.1:{port}", timeout=1.0)) is Reason.TIMEOUT


def test_garbage_instead_of_a_handshake_is_connect():
    with raw_servers.tcp_server(raw_servers.garbage) as port:
        assert reason_of(collect(f"127.0.0.1:{port}")) is Reason.CONNECT


def test_config_json_http_error_is_connect():
    with raw_servers.tcp_server(raw_servers.http_answer(b"HTTP/1.1 404 Not Found", b"no")) as port:
        collection = collect(f"http://127.0.0.1:{port}")
    assert reason_of(collection) is Reason.CONNECT
    assert "404" in collection.error.message


def test_config_json_not_json_is_protocol():
    with raw_servers.tcp_server(raw_servers.http_answer(b"HTTP/1.1 200 OK", b"<html>", b"text/html")) as port:
        assert reason_of(collect(f"http://127.0.0.1:{port}")) is Reason.PROTOCOL


def test_web_port_refused_is_connect():
    with raw_servers.tcp_server(raw_servers.silent) as port:
        pass
    assert reason_of(collect(f"http://127.0.0.1:{port}")) is Reason.CONNECT


def test_config_json_dripping_is_timeout_within_the_deadline():
    with raw_servers.tcp_server(raw_servers.dripping) as port:
        assert reason_of(collect(f"http://127.0.0.1:{port}", timeout=1.0)) is Reason.TIMEOUT


def test_discovery_ignores_the_hostname_in_config_json():
    """config.websocket.hostname is undocumented: the WebSocket is reached on the target's own host."""
    body = b'{"config": {"websocket": {"hostname": "no-such-room.invalid", "port": 1}, "http": {}}}'
    with raw_servers.tcp_server(raw_servers.http_answer(b"HTTP/1.1 200 OK", body)) as port:
        collection = collect(f"http://127.0.0.1:{port}")
    assert reason_of(collection) is Reason.CONNECT
    assert "127.0.0.1:1" in collection.error.message


def test_the_pin_is_redacted_from_error_messages(room):
    """Even if a Room echoed the PIN back in its error text, our message must not carry it."""
    emulator = room("doc-example", pin="987654")
    with pytest.raises(CollectionError) as raised:
        fetch_room(RoomRequest(parse_target(ws(emulator)), "123456"), Deadline(3))
    assert "123456" not in str(raised.value)


def test_a_slow_name_lookup_cannot_outlive_the_deadline(monkeypatch):
    """No DNS server runs here, so the resolver is the one part replaced: by one that takes 3 s to answer."""
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host, *args, **kwargs):
        if host == "slow-dns.example.org":
            time.sleep(3)  # the slow answer is the behaviour under test
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    collection = collect("ws://slow-dns.example.org:8765", timeout=0.5)
    assert reason_of(collection) is Reason.TIMEOUT
    assert "resolving slow-dns.example.org" in collection.error.message


def test_a_redirect_is_never_followed_and_is_connect_naming_the_status(monkeypatch):
    """The PIN goes only to the address the collection connected to: a 302 to another listener is a failure,
    and that listener (reachable, willing) hears nothing, through a proxy variable or not."""
    heard: list[bytes] = []

    def other_host(connection: socket.socket) -> None:
        heard.append(connection.recv(65536))

    with raw_servers.tcp_server(other_host) as other_port:
        location = f"ws://127.0.0.1:{other_port}/".encode()
        redirect = raw_servers.http_answer(b"HTTP/1.1 302 Found\r\nLocation: " + location, b"")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{other_port}")
        with raw_servers.tcp_server(redirect) as port:
            collection = collect(f"127.0.0.1:{port}", pin="13572468")
        # the listener accepts in order: a connection the client opened is heard before this later one
        with socket.create_connection(("127.0.0.1", other_port), timeout=5) as later:
            later.sendall(b"later")
            assert wait_until(lambda: b"later" in heard, 5)
    assert reason_of(collection) is Reason.CONNECT
    assert "302" in collection.error.message
    assert heard == [b"later"]


def test_debug_logs_each_successful_collection(room, caplog):
    """`--log.level debug` shows every collection, not only the failed ones (those are warnings)."""
    emulator = room("doc-example")
    with caplog.at_level(logging.DEBUG, logger="exporter.collect.collection"):
        collect_room(RoomRequest(parse_target(f"ws://127.0.0.1:{emulator.ports.websocket}"), None), 5.0)
    [record] = [r for r in caplog.records if r.getMessage() == "collection succeeded"]
    assert record.levelno == logging.DEBUG
    assert "outgoing requests" in record.detail  # type: ignore[attr-defined]


@pytest.mark.loopback
@pytest.mark.parametrize("refused", ["auth", "getOutgoingFilesRequests"])
def test_a_room_that_echoes_the_pin_in_its_refusal_never_shows_it(refused):
    """The Room's own words are the one place a message could carry what it was sent: a refusal quoting
    the PIN reaches the error (and so the log, the metrics and the pages) with `<pin>` in its place."""
    pin = "730519"

    def handle(connection: socket.socket) -> None:
        rest = raw_servers._accept_upgrade(connection)
        if rest is None:
            return
        if not rest and not connection.recv(65536):
            return
        echo = b'"error":"credentials ' + pin.encode() + b' refused"'
        if refused == "auth":
            connection.sendall(
                raw_servers.frame(b'{"method":"auth","requestId":"","result":false,' + echo + b"}")
            )
        else:
            ok = b'{"method":"auth","requestId":"","result":true}'
            connection.sendall(raw_servers.frame(ok))
            connection.recv(65536)
            reply = b'{"method":"getOutgoingFilesRequests","requestId":"","result":false,' + echo + b"}"
            connection.sendall(raw_servers.frame(reply))
        connection.settimeout(5)
        while connection.recv(65536):
            pass

    with raw_servers.tcp_server(handle) as port, pytest.raises(CollectionError) as caught:
        fetch_room(RoomRequest(parse_target(f"ws://127.0.0.1:{port}"), pin), Deadline(3.0))
    assert caught.value.reason is (Reason.AUTH if refused == "auth" else Reason.API)
    assert pin not in str(caught.value) and "credentials <pin> refused" in caught.value.message
