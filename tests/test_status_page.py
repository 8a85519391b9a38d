"""The status pages: `/`, one row per Room, the Rooms that are down first, bounded whatever was probed;
`/room?target=...&module=...`, one Room's last ten results; both never a PIN, every text escaped."""

from __future__ import annotations

import html
import re
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.collect.collection import Collection
from exporter.collect.history import RecentResults
from exporter.fleet.reload import ConfigHolder
from exporter.room import CollectionError, Reason, RoomTarget, parse_target
from exporter.room.file_requests import Snapshot
from exporter.text import is_unsafe
from exporter.web import pages
from exporter.web.app import ExporterApp
from exporter.web.pages import landing_page, room_page, shown
from exporter.web.settings import ExporterSettings
from tests.processes import http_get

ROOM_PIN = "86420975"
HOSTILE = "\x1b[2J\x07\r\n  999.9 ms  forged line\u202eevil"
"""Room text meant for a terminal or a browser: clear the screen, ring, forge a line, turn the text around."""
UNSAFE_SHOWN = ("\x1b", "\x07", "\r", "\u202e")


def collection(
    target: str | RoomTarget, up: bool, at: float, reason: Reason = Reason.CONNECT, message: str = ""
) -> Collection:
    error = None if up else CollectionError(reason, message or f"{reason} failed")
    snapshot = Snapshot() if up else None
    room = target if isinstance(target, RoomTarget) else parse_target(target)
    return Collection(room, 0.01, at, snapshot=snapshot, error=error)


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


def test_a_rooms_message_is_kept_short():
    history = RecentResults()
    history.record(collection("10.0.0.1", up=False, at=time.time(), message="x" * 100_000))
    [room] = history.rooms()
    assert len(room.results[-1].detail) == 500


ROW = re.compile(r'<tr><td><code>([^<]*)</code></td><td><code>([^<]*)</code></td><td class="(up|down)">')


def board_rows(page: str) -> list[tuple[str, str, str]]:
    return ROW.findall(page)


def fleet_settings() -> ExporterSettings:
    return ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 5.0)


def config_file(tmp_path: Path, modules: int = 1, allowed: int = 1, name_length: int = 10) -> ConfigHolder:
    """A config of `modules` PIN-less modules (each with an allowed target of its own) and `allowed`
    allowed-target entries, names as long as asked."""
    lines = ["modules:"]
    lines += [f"  {'m' * name_length}{i}: {{allowed_targets: ['10.0.0.0/8']}}" for i in range(modules)]
    lines += ["allowed_targets:"]
    lines += [f"  - 'room-{i}.{'a' * name_length}.example.org'" for i in range(allowed)]
    path = tmp_path / "config.yml"
    path.write_text("\n".join(lines) + "\n")
    return ConfigHolder(path, 5.0)


def test_the_rooms_that_are_down_come_first_then_the_rest_most_recent_first_within_each(tmp_path):
    history = RecentResults()
    now = time.time()
    for name, up, age in [
        ("a", True, 5),
        ("b", False, 50),
        ("c", True, 1),
        ("d", False, 10),
        ("e", True, 30),
    ]:
        history.record(collection(f"{name}.example.org", up=up, at=now - age), module="default")
    history.record(collection("b.example.org", up=False, at=now - 40), module="default")
    page = landing_page(fleet_settings(), config_file(tmp_path), history).decode()
    assert [(target, state) for target, _, state in board_rows(page)] == [
        ("ws://d.example.org:8765", "down"),
        ("ws://b.example.org:8765", "down"),
        ("ws://c.example.org:8765", "up"),
        ("ws://a.example.org:8765", "up"),
        ("ws://e.example.org:8765", "up"),
    ]
    assert "5 Rooms remembered: 2 down, 3 up" in page


WORST_ROOMS = 1000
"""The most Rooms remembered (history.MAX_ROOMS)."""


def worst_history(target_host: str, module: str, reason: str, message: str) -> RecentResults:
    """1 000 Rooms of 10 results each (the most remembered), every text as long as a Room or a probe can
    make it; all down, so every row carries its reason and message."""
    history = RecentResults()
    now = time.time()
    for i in range(WORST_ROOMS):
        target = RoomTarget(f"{target_host}{i:04d}", 65535, discover=False)
        for j in range(10):
            # A reason is one of ours, never this long; here it is as long as any text.
            error = CollectionError(reason, message)  # type: ignore[arg-type]
            history.record(Collection(target, 1e300, now - 60 + j, error=error), module=f"{module}{i:04d}")
    return history


def linked_at_most(field_chars: str, other_chars: str) -> tuple[str, str]:
    """A host and a module whose link query is as long as a link may be, each shown as long as it may be."""
    host, module = field_chars * 20, other_chars * 10
    query = urllib.parse.urlencode({"target": f"ws://{host}0000:65535", "module": f"{module}0000"})
    return host + "a" * (pages.LINK_QUERY_BYTES - len(query)), module


WORST_CASES = {
    # Every field at its longest once escaped, and a link as long as a link may be.
    "linked": (*linked_at_most("&", "'"), "<" * 100, '"' * 2000),
    # Characters escaped visibly: 6 to 10 bytes each.
    "bidi": ("\u202e" * 300, "\U000e0001" * 100, "\x1b" * 100, "\u2066\x07" * 1000),
    # Four bytes of UTF-8 each, no link (too long).
    "wide": ("\U0001f600" * 300, "\U0001f600" * 300, "\U0001f600" * 100, "\U0001f600" * 1000),
}


@pytest.mark.parametrize("case", WORST_CASES, ids=list(WORST_CASES))
def test_the_page_is_bounded_at_its_worst(tmp_path, case):
    """Reproduction 4 of issue 15: 10 000 probes of 1 000 targets made `/` 1.7 MB (6.5 MB with the longest
    messages), and a few hundred clients that never read it exhausted the memory limit."""
    host, module, reason, message = WORST_CASES[case]
    holder = config_file(tmp_path, modules=100, allowed=100, name_length=500)
    page = landing_page(fleet_settings(), holder, worst_history(host, module, reason, message))
    assert len(page) <= pages.MAX_PAGE_BYTES <= 256 * 1024
    text = page.decode()
    assert len(board_rows(text)) == pages.MAX_ROWS
    assert f"{WORST_ROOMS - pages.MAX_ROWS} more Rooms not shown" in text
    assert "and 80 more modules" in text and "and 80 more entries" in text
    assert not any(is_unsafe(char) for char in text if char not in "\n")
    if case == "linked":
        assert text.count('<a href="room?') == pages.MAX_ROWS, "every row links to its Room's page"


def test_a_rooms_page_is_bounded_at_its_worst():
    for host, module, reason, message in WORST_CASES.values():
        history = worst_history(host, module, reason, message)
        target, module_name = history.board()[0].target, history.board()[0].module
        query = urllib.parse.urlencode({"target": target, "module": module_name})
        status, page = room_page(history, query, fleet=True)
        assert status == "200 OK"
        assert len(page) <= pages.MAX_ROOM_PAGE_BYTES
        assert page.decode().count("<tr><td>") == pages.RESULTS_SHOWN


def test_the_page_is_built_quickly_for_a_thousand_rooms(tmp_path):
    """Loose: a scrape of `/` must never be a burden (about 10-20 ms on the development machine)."""
    history = worst_history(*WORST_CASES["linked"])
    holder = config_file(tmp_path)
    started = time.perf_counter()
    for _ in range(5):
        landing_page(fleet_settings(), holder, history)
    assert (time.perf_counter() - started) / 5 < 0.25


def test_every_text_is_escaped_for_html_and_the_terminal(tmp_path):
    history = RecentResults()
    target = RoomTarget(f"<b>{HOSTILE}", 8765, discover=False)
    history.record(
        collection(target, up=False, at=time.time(), reason=Reason.API, message=f"<script>{HOSTILE}"), "m&<"
    )
    page = landing_page(fleet_settings(), config_file(tmp_path), history).decode()
    for raw in (*UNSAFE_SHOWN, "<script>", "<b>"):
        assert raw not in page
    assert "&lt;script&gt;\\x1b[2J\\x07\\r\\n  999.9 ms  forged line\\u202eevil" in page
    assert "<code>m&amp;&lt;</code>" in page
    query = urllib.parse.urlencode({"target": str(target), "module": "m&<"})
    assert f'<a href="room?{html.escape(query)}">' in page
    status, room = room_page(history, query, fleet=True)
    assert status == "200 OK"
    for raw in (*UNSAFE_SHOWN, "<script>", "<b>"):
        assert raw not in room.decode()
    assert "&lt;b&gt;\\x1b[2J" in room.decode()


@given(st.text(), st.integers(min_value=8, max_value=300))
def test_shown_is_safe_html_within_its_bytes(text, limit):
    safe = shown(text, limit)
    assert len(safe.encode()) <= limit
    assert not any(is_unsafe(char) or char in "<>\"'" for char in safe)
    assert re.fullmatch(r"([^&]|&(amp|lt|gt|quot|#x27);)*…?", safe), "no entity cut in two"
    if len(text) * 10 <= limit and text.isprintable():
        assert html.unescape(safe) == text


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", "400 Bad Request"),
        ("target=a&target=b", "400 Bad Request"),
        ("target=a&module=x&module=y", "400 Bad Request"),
        ("&".join(f"p{i}=1" for i in range(50)), "400 Bad Request"),
        ("target=ws%3A%2F%2F10.0.0.1%3A8765&module=other", "404 Not Found"),
        ("target=ws%3A%2F%2F10.0.0.1%3A8765&module=default", "200 OK"),
        ("target=10.0.0.1&module=default", "200 OK"),
        ("target=%5B&module=default", "404 Not Found"),
    ],
)
def test_a_rooms_page_answers_a_bad_query_in_one_line(query, status):
    history = RecentResults()
    history.record(collection("10.0.0.1", up=True, at=time.time()), module="default")
    assert room_page(history, query, fleet=True)[0] == status


@pytest.fixture
def fleet(tmp_path, room, serve_app) -> tuple[str, int]:
    """A multi-target exporter here and a Room with a PIN: (base URL, the Room's WebSocket port)."""
    (tmp_path / "pin").write_text(ROOM_PIN)
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  default:\n    pin_file: pin\n  open: {}\nallowed_targets: ['127.0.0.1']\n")
    secured = room("doc-example", pin=ROOM_PIN)
    return serve_app(ExporterApp(fleet_settings(), ConfigHolder(config, 5.0))), secured.ports.websocket


def test_the_page_shows_each_probed_room_down_first_and_links_its_own_page(fleet):
    url, websocket_port = fleet
    http_get(f"{url}/probe?target=127.0.0.1:{websocket_port}&module=open")  # no PIN: refused, reason auth
    http_get(f"{url}/probe?target=127.0.0.1:{websocket_port}&module=default")
    http_get(f"{url}/probe?target=127.0.0.1:1&module=default")  # nothing listens: connect
    for _ in range(12):
        http_get(f"{url}/probe?target=127.0.0.1:{websocket_port}&module=default")
    status, headers, body = http_get(f"{url}/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert board_rows(page) == [
        ("ws://127.0.0.1:1", "default", "down"),
        (f"ws://127.0.0.1:{websocket_port}", "open", "down"),
        (f"ws://127.0.0.1:{websocket_port}", "default", "up"),
    ]
    assert "down: auth" in page and "down: connect" in page
    link = f"room?target=ws%3A%2F%2F127.0.0.1%3A{websocket_port}&amp;module=default"
    assert link in page
    status, headers, body = http_get(f"{url}/{link.replace('&amp;', '&')}")
    room = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert room.count("<tr><td>") == 10, "its last ten results"
    times = re.findall(r"<tr><td>([^<]+)</td>", room)
    assert times == sorted(times, reverse=True), "newest first"
    probe = f"probe?target=ws%3A%2F%2F127.0.0.1%3A{websocket_port}&amp;module=default&amp;debug=true"
    assert probe in room
    status, _, trace = http_get(f"{url}/{probe.replace('&amp;', '&')}")
    assert status == 200 and "getOutgoingFilesRequests " in trace.decode(), "the link gives the probe's trace"
    assert http_get(f"{url}/room?target=ws%3A%2F%2F127.0.0.1%3A9&module=default")[0] == 404
    assert http_get(f"{url}/room?target=a&target=b")[0] == 400
    assert ROOM_PIN not in page and ROOM_PIN not in room


def test_before_any_scrape_the_page_says_so(fleet):
    url, _ = fleet
    assert "No Room collected yet" in http_get(f"{url}/")[2].decode()


def test_without_a_config_file_a_room_is_named_by_its_target_alone():
    history = RecentResults()
    history.record(collection("10.0.0.1", up=False, at=time.time()))
    settings = ExporterSettings(parse_target("10.0.0.1"), None, 5.0)
    page = landing_page(settings, None, history).decode()
    assert '<a href="room?target=ws%3A%2F%2F10.0.0.1%3A8765">' in page and "<th>module</th>" not in page
    status, room = room_page(history, "target=ws%3A%2F%2F10.0.0.1%3A8765", fleet=False)
    assert status == "200 OK" and "down" in room.decode() and "probe?" not in room.decode()
