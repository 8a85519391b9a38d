"""The status page at `/`: the latest results of each Room, newest first, bounded in memory, never a PIN."""

from __future__ import annotations

import re
import time

import pytest

from exporter.collect.collection import Collection
from exporter.collect.history import RecentResults
from exporter.fleet.reload import ConfigHolder
from exporter.room import CollectionError, Reason, parse_target
from exporter.room.file_requests import Snapshot
from exporter.web.app import ExporterApp
from exporter.web.settings import ExporterSettings
from tests.processes import http_get

ROOM_PIN = "86420975"


def collection(target: str, up: bool, at: float, reason: Reason = Reason.CONNECT) -> Collection:
    error = None if up else CollectionError(reason, f"{reason} failed")
    snapshot = Snapshot() if up else None
    return Collection(parse_target(target), 0.01, at, snapshot=snapshot, error=error)


def test_each_room_keeps_only_its_latest_results():
    history = RecentResults(per_room=3)
    now = time.time()
    for i in range(5):
        history.record(collection("10.0.0.1:8765", up=i % 2 == 0, at=now + i))
    [room] = history.rooms()
    assert [r.at for r in room.results] == [now + 2, now + 3, now + 4]


def test_rooms_not_collected_for_a_while_drop_off_and_the_count_is_bounded():
    history = RecentResults(forget_after_seconds=60, max_rooms=2)
    now = time.time()
    history.record(collection("10.0.0.1", up=True, at=now - 120))
    history.record(collection("10.0.0.2", up=True, at=now))
    assert [room.target for room in history.rooms()] == ["ws://10.0.0.2:8765"]
    history.record(collection("10.0.0.3", up=True, at=now))
    history.record(collection("10.0.0.4", up=False, at=now))
    assert [room.target for room in history.rooms()] == ["ws://10.0.0.4:8765", "ws://10.0.0.3:8765"]


def test_the_same_target_with_two_modules_is_two_rooms():
    history = RecentResults()
    history.record(collection("10.0.0.1", up=True, at=time.time()), module="a")
    history.record(collection("10.0.0.1", up=False, at=time.time()), module="b")
    assert [(room.target, room.module) for room in history.rooms()] == [
        ("ws://10.0.0.1:8765", "b"),
        ("ws://10.0.0.1:8765", "a"),
    ]


@pytest.fixture
def fleet(tmp_path, room, serve_app) -> tuple[str, int]:
    """A multi-target exporter here and a Room with a PIN: (base URL, the Room's WebSocket port)."""
    (tmp_path / "pin").write_text(ROOM_PIN)
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  default:\n    pin_file: pin\n  open: {}\nallowed_targets: ['127.0.0.1']\n")
    secured = room("doc-example", pin=ROOM_PIN)
    settings = ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 5.0)
    return serve_app(ExporterApp(settings, ConfigHolder(config, 5.0))), secured.ports.websocket


def test_the_page_shows_each_probed_room_newest_first_with_its_reason(fleet):
    url, websocket_port = fleet
    http_get(f"{url}/probe?target=127.0.0.1:{websocket_port}&module=open")  # no PIN: refused, reason auth
    http_get(f"{url}/probe?target=127.0.0.1:{websocket_port}&module=default")
    http_get(f"{url}/probe?target=127.0.0.1:1&module=default")  # nothing listens: connect
    status, headers, body = http_get(f"{url}/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    titles = re.findall(r"<h3><code>([^<]+)</code>, module <code>([^<]+)</code>: <span class=\"(\w+)\"", page)
    assert titles == [
        ("ws://127.0.0.1:1", "default", "down"),
        (f"ws://127.0.0.1:{websocket_port}", "default", "up"),
        (f"ws://127.0.0.1:{websocket_port}", "open", "down"),
    ]
    assert "<td>auth</td>" in page and "<td>connect</td>" in page
    link = f"probe?target=ws%3A%2F%2F127.0.0.1%3A{websocket_port}&amp;module=default&amp;debug=true"
    assert link in page
    status, _, trace = http_get(f"{url}/{link.replace('&amp;', '&')}")
    assert status == 200 and "getOutgoingFilesRequests " in trace.decode(), "the link gives the probe's trace"
    assert ROOM_PIN not in page


def test_before_any_scrape_the_page_says_so(fleet):
    url, _ = fleet
    assert "No Room collected yet" in http_get(f"{url}/")[2].decode()
