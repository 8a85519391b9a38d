"""`/probe?target=...&module=...&debug=true`: the probe's trace as text, phase by phase, then its metrics;
never the PIN, never a file or peer name."""

from __future__ import annotations

import json
import logging
import re
import unicodedata

import pytest

from exporter.emulator.faults import Fault
from exporter.emulator.scenario import load_scenario
from exporter.fleet.reload import ConfigHolder
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.methods import OUTGOING_METHOD
from exporter.room import parse_target
from exporter.room.trace import shape
from exporter.web.app import ExporterApp
from exporter.web.settings import ExporterSettings
from tests.processes import http_get

ROOM_PIN = "97531864"
HOSTILE = "\x1b[2J\x07\r\n    999.9 ms  forged     trace line\u202eevil"
"""A Room's words meant for a terminal: clear the screen, ring, forge a trace line, turn the text around."""
HOSTILE_SHOWN = "\\x1b[2J\\x07\\r\\n    999.9 ms  forged     trace line\\u202eevil"
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def unsafe_in(text: str, allowed: str = "\n") -> list[str]:
    return [char for char in text if char not in allowed and unicodedata.category(char) in UNSAFE]


@pytest.fixture
def fleet(tmp_path, serve_app) -> str:
    (tmp_path / "pin").write_text(ROOM_PIN)
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n  default:\n    pin_file: pin\n  discover:\n    pin_file: pin\n    discovery: true\n"
        "allowed_targets: ['127.0.0.1']\n"
    )
    settings = ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 5.0)
    return serve_app(ExporterApp(settings, ConfigHolder(config, 2.0)))


def debug_probe(url: str, target: str, module: str = "default") -> str:
    status, headers, body = http_get(f"{url}/probe?target={target}&module={module}&debug=true")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return body.decode()


def phases(trace: str) -> list[str]:
    return re.findall(r"^\s+[\d.]+ ms  (\S+)", trace, re.M)


def test_a_healthy_room_shows_every_phase_the_reply_shape_and_the_metrics(fleet, room):
    emulator = room("doc-example", pin=ROOM_PIN)
    trace = debug_probe(fleet, f"127.0.0.1:{emulator.ports.websocket}")
    first_line = f"Probe of ws://127.0.0.1:{emulator.ports.websocket} with module default (PIN from pin_file)"
    assert trace.startswith(first_line)
    assert phases(trace) == [
        "lookup",
        "connect",
        "upgrade",
        "auth",
        "getOutgoingFilesRequests",
        "getIncomingFilesRequests",
        "getFileTransferAvailability",
        "getAppState",
        "getSystemInfo",
        "parse",
    ]
    assert "reply {" in trace and "outgoingFilesRequests: list[" in trace
    assert "trueconf_up 1.0" in trace.split("Metrics:")[1]
    for secret_or_personal in (ROOM_PIN, "2.jpg", "some.server", "820_1"):
        assert secret_or_personal not in trace


def test_discovery_shows_as_its_own_phase(fleet, room):
    emulator = room("doc-example", pin=ROOM_PIN)
    trace = debug_probe(fleet, f"127.0.0.1:{emulator.ports.web}", module="discover")
    assert phases(trace)[:3] == ["lookup", "discovery", "connect"]
    assert f"names WebSocket port {emulator.ports.websocket}" in trace


@pytest.mark.parametrize(
    ("fault", "last_phase", "reason"),
    [
        (Fault.OLD_ROOM, "getOutgoingFilesRequests", "api"),  # the reply came, and it said no
        (Fault.SILENT, "upgrade", "timeout"),
        (Fault.NOT_JSON, "auth", "protocol"),
    ],
)
def test_a_failing_room_shows_where_it_stopped_and_why(fleet, room, fault, last_phase, reason):
    emulator = room("doc-example", pin=ROOM_PIN, fault=fault)
    trace = debug_probe(fleet, f"127.0.0.1:{emulator.ports.websocket}")
    assert phases(trace)[-1] == "failed"
    assert last_phase in phases(trace), "the trace shows how far the conversation got"
    assert f"failed                     reason {reason}: " in trace
    assert "trueconf_up 0.0" in trace


def test_a_refused_target_is_refused_with_debug_too(fleet):
    assert http_get(f"{fleet}/probe?target=10.9.9.9&debug=true")[0] == 403


@pytest.mark.parametrize("value", ["yes", "2"])
def test_debug_takes_true_or_false(fleet, value):
    status, _, body = http_get(f"{fleet}/probe?target=127.0.0.1:1&debug={value}")
    assert status == 400 and body == b"'debug' takes true or false\n"


def test_shape_keeps_keys_and_lengths_never_values():
    reply = {
        "result": True,
        "list": [{"name": "secret.pdf", "size": 3}, {"name": "b", "peer": "x@y"}],
        "n": None,
    }
    assert shape(reply) == "{result: bool, list: list[2] of {name, peer, size}, n: null}"


@pytest.fixture
def hostile_room(room) -> int:
    """A Room that refuses getOutgoingFilesRequests in words meant for a terminal, under a key of the same
    kind: its WebSocket port."""
    scenario = load_scenario("doc-example")
    scenario.reply_fields = {OUTGOING_METHOD: {"result": False, "error": HOSTILE, f"key{HOSTILE}": 1}}
    return room(scenario, pin=ROOM_PIN).ports.websocket


def test_a_rooms_keys_and_words_reach_the_trace_escaped(fleet, hostile_room):
    """ESC, BEL, CR/LF and U+202E never reach the debug probe raw."""
    trace = debug_probe(fleet, f"127.0.0.1:{hostile_room}")
    assert unsafe_in(trace) == []
    assert f"key{HOSTILE_SHOWN}: number" in trace, "the key, escaped"
    assert f"refused getOutgoingFilesRequests: {HOSTILE_SHOWN}" in trace, "the error text, escaped"
    assert not any(
        "forged" in line and "key" not in line and "refused" not in line for line in trace.split("\n")
    )
    assert phases(trace)[-1] == "failed"


def test_a_rooms_words_reach_the_status_pages_escaped(fleet, hostile_room):
    http_get(f"{fleet}/probe?target=127.0.0.1:{hostile_room}")
    page = http_get(f"{fleet}/")[2].decode()
    assert unsafe_in(page) == []
    assert f"refused getOutgoingFilesRequests: {HOSTILE_SHOWN}" in page
    [link] = re.findall(r'href="(room\?[^"]+)"', page)
    room = http_get(f"{fleet}/{link.replace('&amp;', '&')}")[2].decode()
    assert unsafe_in(room) == []
    assert f"refused getOutgoingFilesRequests: {HOSTILE_SHOWN}" in room


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_a_rooms_words_reach_the_log_escaped(fleet, hostile_room, caplog, formatter):
    with caplog.at_level(logging.WARNING, logger="exporter.collect.collection"):
        http_get(f"{fleet}/probe?target=127.0.0.1:{hostile_room}")
    [record] = [r for r in caplog.records if r.getMessage() == "collection failed"]
    line = formatter.format(record)
    assert unsafe_in(line, allowed="") == []
    assert "\\u202e" in line and "\\u001b[2J\\u0007\\r\\n" in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["detail"].endswith(HOSTILE), "JSON still reads back the Room's words"
