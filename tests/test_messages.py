"""What a person reads: every failure message, `check`'s verdict, the hints, command-line errors and the
pages, produced for real and scanned for double punctuation and Python exception representations."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from exporter.cli import main
from exporter.collect.collection import Collection, collect_room
from exporter.collect.verdict import verdict
from exporter.emulator.faults import Fault
from exporter.room import parse_target
from exporter.room.errors import REASON_HINTS
from exporter.room.request import RoomRequest
from exporter.web.pages import landing_page
from exporter.web.settings import ExporterSettings
from tests import raw_servers
from tests.fault_reasons import FAULTS, SLOW_OR_HUGE

DOUBLE_PUNCTUATION = re.compile(r"[.?!,;:]{2}")
"""Two marks in a row ("?.", "..", ".:"); an ellipsis and an IPv6 address's "::" are taken out first."""
EXCEPTION_REPR = re.compile(r"\b\w*(Error|Exception|Exit|Interrupt)\(|<class '|Traceback \(most recent")


def assert_readable(text: str) -> None:
    scrubbed = text.replace("...", "\u2026").replace("::", "")
    assert not DOUBLE_PUNCTUATION.search(scrubbed), f"double punctuation in: {text}"
    assert not EXCEPTION_REPR.search(text), f"a Python exception representation in: {text}"


def collect(target: str) -> Collection:
    return collect_room(RoomRequest(parse_target(target), None), 1.0)


@pytest.mark.parametrize("fault", [fault for fault, _ in FAULTS if fault not in SLOW_OR_HUGE])
def test_every_fault_gives_a_readable_message_and_verdict(room, fault):
    emulator = room("doc-example", fault=fault, slow_reply_seconds=3)
    collection = collect(f"ws://127.0.0.1:{emulator.ports.websocket}")
    assert collection.error is not None
    assert_readable(collection.error.message)
    assert_readable(verdict(collection))


def test_discovery_failures_read_well(room):
    emulator = room("doc-example", fault=Fault.BAD_CONFIG_JSON)
    for target in (f"http://127.0.0.1:{emulator.ports.web}", "http://127.0.0.1:1"):
        assert_readable(verdict(collect(target)))
    with raw_servers.tcp_server(raw_servers.http_answer(b"HTTP/1.1 200 OK", b"{not json")) as port:
        assert_readable(verdict(collect(f"http://127.0.0.1:{port}")))
    with raw_servers.tcp_server(raw_servers.http_answer(b"HTTP/1.1 200 OK", b'{"config": []}')) as port:
        assert_readable(verdict(collect(f"http://127.0.0.1:{port}")))


@pytest.mark.parametrize(
    "server",
    [
        raw_servers.silent,
        raw_servers.garbage,
        raw_servers.http_answer(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:1/", b""),
        raw_servers.http_answer(b"HTTP/1.1 404 Not Found", b"no"),
    ],
    ids=["silent", "garbage", "redirect", "http-404"],
)
@pytest.mark.loopback  # raw servers on loopback
def test_peers_that_are_no_room_give_readable_verdicts(server):
    with raw_servers.tcp_server(server) as port:
        assert_readable(verdict(collect(f"127.0.0.1:{port}")))


@pytest.mark.loopback  # a real connection refused by a closed loopback port
def test_a_refused_connection_reads_well():
    assert_readable(verdict(collect("127.0.0.1:1")))


def test_every_hint_reads_well():
    for hint in REASON_HINTS.values():
        assert_readable(hint)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--target", "::1"],
        ["check", "--target", "[::1"],
        ["check", "--target", "ftp://room"],
        ["check", "--target", "ws://room:8765/api"],
        ["check", "--pin", " "],
        ["check", "--pin-file", "/nonexistent/pin"],
        ["serve", "--config.file", "/nonexistent/config.yml"],
        ["serve", "--web.config.file", "/nonexistent/web.yml"],
        ["serve", "--web.listen-address", "nowhere"],
        ["emulate", "--scenario", "/nonexistent/scenario.json"],
    ],
)
def test_command_line_errors_read_well(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert_readable(error)


def test_the_pages_read_well():
    settings = ExporterSettings(parse_target("ws://127.0.0.1:8765"), None, 5.0)
    page = landing_page(settings).decode()
    assert_readable(re.sub(r"<[^>]+>", " ", page))


def test_the_scan_catches_what_it_is_for():
    for bad in ("is it a Room?.", "lost.. Try", "shape (KeyError('config'))", "x: <class 'int'>"):
        with pytest.raises(AssertionError):
            assert_readable(bad)
    assert_readable("cut to 100 characters...")
    assert_readable(f"at {time.strftime('%H:%M:%S')}")
