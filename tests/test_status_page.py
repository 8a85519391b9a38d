"""The status pages: `/`, one row per Room, the Rooms that are down first, bounded whatever was probed;
`/room?target=...&module=...`, one Room's last ten results; both never a PIN, every text escaped."""

from __future__ import annotations

import gc
import html
import re
import time
import urllib.parse
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.collect import verdicts
from exporter.collect.collection import Collection
from exporter.collect.history import RecentResults
from exporter.emulator.faults import Fault
from exporter.emulator.living import fast_living_room
from exporter.fleet.reload import ConfigHolder
from exporter.room import CollectionError, Reason, RoomTarget, parse_target, picture
from exporter.room.file_requests import Snapshot
from exporter.room.ledger import RoomTransfers, TransferTotals
from exporter.room.picture import RoomIdentity, RoomPicture
from exporter.text import is_unsafe
from exporter.web import pages
from exporter.web.app import ExporterApp
from exporter.web.pages import landing_page, room_page, shown
from exporter.web.settings import ExporterSettings
from tests.exposition import samples
from tests.processes import http_get, wait_until

ROOM_PIN = "86420975"
HOSTILE = "\x1b[2J\x07\r\n  999.9 ms  forged line\u202eevil"
"""Room text meant for a terminal or a browser: clear the screen, ring, forge a line, turn the text around."""
UNSAFE_SHOWN = ("\x1b", "\x07", "\r", "\u202e")


def counters(failed: int = 0, failed_incoming: int = 0) -> RoomTransfers:
    """A Room's transfer counters, `failed` outgoing (to a conference) and `failed_incoming` failures
    counted."""
    outgoing, incoming = TransferTotals.zero(), TransferTotals.zero()
    outgoing.finished[("failed", "conference")] = failed
    incoming.finished[("failed", "peer")] = failed_incoming
    outgoing.finished[("processed", "peer")] = 1000  # never counted as failures
    return RoomTransfers(outgoing, incoming, tracked=0)


def collection(
    target: str | RoomTarget,
    up: bool,
    at: float,
    reason: Reason = Reason.CONNECT,
    message: str = "",
    transfers: RoomTransfers | None = None,
) -> Collection:
    error = None if up else CollectionError(reason, message or f"{reason} failed")
    snapshot = Snapshot() if up else None
    room = target if isinstance(target, RoomTarget) else parse_target(target)
    return Collection(room, 0.01, at, snapshot=snapshot, error=error, transfers=transfers)


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


def test_the_least_recently_collected_room_leaves_first_and_reading_one_changes_nothing():
    history = RecentResults(max_rooms=2)
    now = time.time()
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3"):
        history.record(collection(address, up=True, at=now))
    assert [room.target for room in history.rooms()] == ["ws://10.0.0.3:8765", "ws://10.0.0.1:8765"]
    assert history.room("ws://10.0.0.1:8765", None) is not None  # a page read: not a collection
    history.record(collection("10.0.0.4", up=True, at=now))
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


ROW = re.compile(
    r'<tr class="(?P<group>down|warn|ok)"><td>(?:<a href="room\?[^"]*">)?'
    r"(?:<b>(?P<name>[^<]*)</b><br><small>)?(?P<target>[^<]*)(?:</small>)?(?:</a>)?[^<]*</td>"
    r"(?:<td>(?P<module>[^<]*)</td>)?<td>(?:<b>)?(?P<verdict>[^<]*)"
)


def board_rows(page: str) -> list[tuple[str, str, str]]:
    """Each row's target, module and verdict, in the page's order."""
    return [(row["target"], row["module"], row["verdict"]) for row in ROW.finditer(page)]


def board_names(page: str) -> list[tuple[str, str]]:
    """Each row's name (empty when not known) and target."""
    return [(row["name"] or "", row["target"]) for row in ROW.finditer(page)]


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


def answered(
    target: str,
    at: float,
    failed: int = 0,
    waiting_age: float | None = None,
    availability: str | None = None,
    identity: RoomIdentity | None = None,
    version: str | None = None,
    failed_incoming: int = 0,
    listed_failed: int = 0,
) -> Collection:
    """A Room that answered, with the facts the page shows: `failed` and `failed_incoming` its failed
    counters, `listed_failed` the failed requests its list shows (no fact of the page's)."""
    snapshot = Snapshot()
    snapshot.counts[("failed", "conference")] = listed_failed
    if waiting_age is not None:
        snapshot.counts[("waiting", "peer")] = 1
        snapshot.oldest_pending_created_at["waiting"] = at - waiting_age
    room_picture = RoomPicture(
        outgoing=snapshot, collected_at=at, availability=availability, identity=identity, version=version
    )
    return Collection(
        parse_target(target),
        0.01,
        at,
        snapshot=snapshot,
        picture=room_picture,
        transfers=counters(failed, failed_incoming),
    )


def test_the_rooms_that_are_down_come_first_then_those_with_a_problem_newest_first_within_each(tmp_path):
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
    history.record(answered("f.example.org", now - 20, waiting_age=901), module="default")
    history.record(answered("g.example.org", now - 3, availability="forbidden_by_server"), module="default")
    page = landing_page(fleet_settings(), config_file(tmp_path), history).decode()
    assert [(target, verdict) for target, _, verdict in board_rows(page)] == [
        ("d.example.org:8765", "down (connect)"),
        ("b.example.org:8765", "down (connect)"),
        ("g.example.org:8765", "file transfer unavailable"),
        ("f.example.org:8765", "transfer waiting too long"),
        ("c.example.org:8765", "ok"),
        ("a.example.org:8765", "ok"),
        ("e.example.org:8765", "ok"),
    ]
    assert "<b>7 Rooms</b>: <b>4 need attention</b>, 2 of them down; 3 ok." in page
    assert page.count('<tr class="down">') == 2 and page.count('<tr class="warn">') == 2
    assert "<td><b>15m01s</b></td>" in page, "the fact behind the verdict stands out"
    assert "<td><b>forbidden by server</b></td>" in page


def test_new_failures_while_the_failed_counter_rose_within_the_rules_window(tmp_path):
    history = RecentResults()
    now = time.time()
    history.record(answered("a.example.org", now - 120, failed=4), module="default")
    history.record(answered("a.example.org", now - 105, failed=4), module="default")
    assert history.board(now)[0].verdict.words == "ok", "failures counted before the page saw the Room"
    down = collection("a.example.org", up=False, at=now - 90, transfers=counters(4))
    history.record(down, module="default")
    history.record(answered("a.example.org", now - 75, failed=6), module="default")
    history.record(answered("a.example.org", now - 60, failed=6), module="default")
    [row] = history.board(now)
    assert (row.verdict.words, row.result.failed) == ("new failures", 6), "risen across a failed scrape"
    assert history.board(now - 75 + verdicts.NEW_FAILURES_WINDOW_SECONDS)[0].verdict.words == "new failures"
    assert history.board(now - 74 + verdicts.NEW_FAILURES_WINDOW_SECONDS)[0].verdict.words == "ok"
    page = landing_page(fleet_settings(), config_file(tmp_path), history).decode()
    assert "<td><b>new failures</b></td><td><b>6</b></td>" in page


def test_failures_of_both_directions_count_and_listed_failed_requests_do_not():
    history = RecentResults()
    now = time.time()
    history.record(answered("in.example.org", now - 30, failed=2, failed_incoming=1), "default")
    history.record(answered("in.example.org", now - 15, failed=2, failed_incoming=2), "default")
    history.record(answered("listed.example.org", now - 30, listed_failed=1), "default")
    history.record(answered("listed.example.org", now - 15, listed_failed=5), "default")
    rows = {row.target: row for row in history.board(now)}
    incoming = rows["ws://in.example.org:8765"]
    assert (incoming.verdict.words, incoming.result.failed) == ("new failures", 4), "an incoming failure"
    listed = rows["ws://listed.example.org:8765"]
    assert (listed.verdict.words, listed.result.failed) == ("ok", 0), "what the list shows is no count"


def test_a_counter_reset_is_no_failure_and_the_counter_rises_from_there():
    history = RecentResults()
    now = time.time()
    for age, failed in ((60, 5), (45, 0), (30, 0)):  # forgotten by the exporter: its counter starts at 0
        history.record(answered("a.example.org", now - age, failed=failed), "default")
    assert history.board(now)[0].verdict.words == "ok"
    history.record(answered("a.example.org", now - 15, failed=1), "default")
    assert history.board(now)[0].verdict.words == "new failures"


def test_failures_counted_while_a_room_is_down_are_new_failures_once_it_is_back():
    """The counters are exposed while the Room is down (a notification may have come before it went down):
    the alert sees their rise, and so does the page."""
    history = RecentResults()
    now = time.time()
    history.record(answered("a.example.org", now - 45), "default")
    history.record(collection("a.example.org", up=False, at=now - 30, transfers=counters(1)), "default")
    [row] = history.board(now)
    assert row.verdict.words == "down (connect)" and row.result.failed is None, "a down row shows no facts"
    history.record(answered("a.example.org", now - 15, failed=1), "default")
    assert history.board(now)[0].verdict.words == "new failures"


def test_without_counters_a_room_shows_no_failed_count_and_no_new_failures(tmp_path):
    history = RecentResults()
    now = time.time()
    for age in (30, 15):
        history.record(replace(answered("a.example.org", now - age, listed_failed=age), transfers=None))
    [row] = history.board(now)
    assert (row.verdict.words, row.result.failed) == ("ok", None)
    page = landing_page(ExporterSettings(parse_target("a.example.org"), None, 5.0), None, history).decode()
    assert f"<td>ok</td><td>{pages.DASH}</td>" in page


def test_a_rooms_name_is_remembered_once_seen_and_shown_beside_its_target(tmp_path):
    history = RecentResults()
    now = time.time()
    identity = RoomIdentity("Board room 3", "room3@example.org")
    history.record(answered("a.example.org", now - 60, identity=identity, version="5.0.2.17"), "default")
    history.record(answered("a.example.org", now - 45), "default")  # getSystemInfo not asked this scrape
    history.record(collection("a.example.org", up=False, at=now - 30), "default")
    history.record(answered("b.example.org", now - 20), "default")  # never said its name
    page = landing_page(fleet_settings(), config_file(tmp_path), history).decode()
    assert board_names(page) == [("Board room 3", "a.example.org:8765"), ("", "b.example.org:8765")]
    assert "<td>5.0.2.17</td>" in page
    status, room = room_page(history, "target=a.example.org&module=default", fleet=True)
    assert status == "200 OK"
    assert "<h1>Board room 3: <code>ws://a.example.org:8765</code>" in room.decode()
    assert (
        "Logged in as <b>Board room 3</b>, TrueConf ID room3@example.org. Version 5.0.2.17." in room.decode()
    )
    assert "Name not known yet" in room_page(history, "target=b.example.org&module=default", True)[1].decode()


def test_a_result_keeps_a_few_numbers_never_the_rooms_picture():
    history = RecentResults()
    now = time.time()
    kept = answered("a.example.org", now, failed=3, waiting_age=20, availability="available")
    snapshot, transfers = weakref.ref(kept.snapshot), weakref.ref(kept.transfers)
    history.record(kept, "default")
    del kept
    gc.collect()
    assert snapshot() is None, "the history holds no snapshot, picture or collection"
    assert transfers() is None, "nor the Room's counters: one number of them"
    result = history.rooms()[0].results[-1]
    assert not hasattr(result, "__dict__"), "slots: a result is its fields and nothing more"
    fields = {name: getattr(result, name) for name in result.__slots__}
    assert all(isinstance(value, int | float | str | None) for value in fields.values()), fields
    assert (result.failed, result.waiting_age, result.availability) == (3, 20, "available")


WORST_ROOMS = 1000
"""The most Rooms remembered (history.MAX_ROOMS)."""
LONGEST_VERSION = ".".join(["999999999"] * 4)
"""picture.parse_version's longest: four parts of MAX_VERSION_PART_DIGITS digits."""


def every_problem(target: RoomTarget, at: float, failed: int, name: str) -> Collection:
    """A Room that answered with every problem at once, every number at its widest and its name as long as
    the page shows: the biggest row `/` can have."""
    snapshot = Snapshot()
    snapshot.oldest_pending_created_at.update(waiting=at - 1e15, downloading=at - 1e15)
    snapshot.malformed = 10**15
    picture = RoomPicture(
        outgoing=snapshot,
        collected_at=at,
        availability="forbidden_by_license",
        app_state="ending_conference",
        version=LONGEST_VERSION,
        identity=RoomIdentity(name, name),
    )
    return Collection(target, 1e300, at, snapshot=snapshot, picture=picture, transfers=counters(failed))


def worst_history(
    target_host: str, module: str, reason: str, message: str, latest_up: bool = True
) -> RecentResults:
    """1 000 Rooms of 10 results each (the most remembered), every text as long as a Room or a probe can
    make it. Each Room first answers twice with every problem (its failed counter rising, its name and
    version remembered), then is down with its longest message (the reason as long as any text, although a
    reason is one of ours); with `latest_up` it answers once more with every problem, so its row on `/`
    is the biggest a row can be, otherwise its last ten results are all down (its own page at its biggest)."""
    history = RecentResults()
    now = time.time()
    for i in range(WORST_ROOMS):
        target = RoomTarget(f"{target_host}{i:04d}", 65535, discover=False)
        module_name = f"{module}{i:04d}"
        name = message[: 2 * picture.MAX_NAME_CHARS]
        history.record(every_problem(target, now - 60, 10**14, name), module=module_name)
        history.record(every_problem(target, now - 59, 10**15, name), module=module_name)
        for j in range(9 if latest_up else 10):
            error = CollectionError(reason, message)  # type: ignore[arg-type]
            history.record(Collection(target, 1e300, now - 50 + j, error=error), module=module_name)
        if latest_up:
            history.record(every_problem(target, now - 30, 10**15 + 1, name), module=module_name)
    return history


def linked_at_most(field_chars: str, other_chars: str) -> tuple[str, str]:
    """A host and a module whose link query is as long as a link may be (the longest the page still links,
    found by trying), each shown as long as it may be."""
    host, module = field_chars * 12, other_chars * 8

    def linked(padding: int) -> bool:
        return pages._query(f"ws://{host}{'a' * padding}0000:65535", f"{module}0000") is not None

    padding = 0
    while linked(padding + 1):
        padding += 1
    assert linked(padding), "the host and module alone are too long to link"
    return host + "a" * padding, module


WORST_CASES = {
    # Every field at its longest once escaped, and a link as long as a link may be.
    "linked": (*linked_at_most("&", "'"), "<" * 100, '"' * 2000),
    # Characters escaped visibly: 6 to 10 bytes each.
    "bidi": ("\u202e" * 300, "\U000e0001" * 100, "\x1b" * 100, "\u2066\x07" * 1000),
    # Four bytes of UTF-8 each, no link (too long).
    "wide": ("\U0001f600" * 300, "\U0001f600" * 300, "\U0001f600" * 100, "\U0001f600" * 1000),
}


@pytest.mark.parametrize("latest", ["every-problem", "down"])
@pytest.mark.parametrize("case", WORST_CASES, ids=list(WORST_CASES))
def test_the_page_is_bounded_at_its_worst(tmp_path, case, latest):
    """`/` stays bounded with 10 000 probes of 1 000 targets, so a few hundred clients that never read it
    cannot exhaust the memory limit. Every Room's row at its biggest: with every problem and every fact at
    its widest, or down with its longest message (259 974 and 254 577 bytes for the linked case)."""
    host, module, reason, message = WORST_CASES[case]
    holder = config_file(tmp_path, modules=100, allowed=100, name_length=500)
    history = worst_history(host, module, reason, message, latest_up=latest == "every-problem")
    page = landing_page(fleet_settings(), holder, history)
    assert len(page) <= pages.MAX_PAGE_BYTES <= 256 * 1024
    text = page.decode()
    assert len(board_rows(text)) == pages.MAX_ROWS
    expected = ", ".join(verdicts.PROBLEMS) if latest == "every-problem" else "down ("
    assert all(verdict.startswith(expected) for _, _, verdict in board_rows(text))
    assert len(board_names(text)) == pages.MAX_ROWS and all(name for name, _ in board_names(text))
    assert f"{WORST_ROOMS - pages.MAX_ROWS} more Rooms not shown" in text
    assert "and 80 more modules" in text and "and 80 more entries" in text
    assert not any(is_unsafe(char) for char in text if char not in "\n")
    if case == "linked":
        assert text.count('<a href="room?') == pages.MAX_ROWS, "every row links to its Room's page"


def test_a_rooms_page_is_bounded_at_its_worst():
    for host, module, reason, message in WORST_CASES.values():
        history = worst_history(host, module, reason, message, latest_up=False)
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
    now = time.time()
    target = RoomTarget(f"<b>{HOSTILE}", 8765, discover=False)
    name = RoomIdentity(f"<script>{HOSTILE}", f"<i>{HOSTILE}")
    history.record(replace(answered("10.0.0.1", now - 1, identity=name), target=target), "m&<")
    history.record(
        collection(target, up=False, at=now, reason=Reason.API, message=f"<script>{HOSTILE}"), "m&<"
    )
    page = landing_page(fleet_settings(), config_file(tmp_path), history).decode()
    for raw in (*UNSAFE_SHOWN, "<script>", "<b>\x1b", "<b>&lt;b&gt;", "<i>"):
        assert raw not in page
    assert "<b>&lt;script&gt;\\x1b[2J\\x07\\r\\n  999.9 ms  forged line\\u202eevil</b>" in page, "the name"
    assert "<small>ws://&lt;b&gt;\\x1b[2J\\x07\\r\\n" in page, "the target"
    assert "<td>m&amp;&lt;</td>" in page
    query = pages._query(str(target), "m&<")
    assert query is not None and query == urllib.parse.urlencode({"target": str(target), "module": "m&<"})
    assert f'<a href="room?{html.escape(query)}">' in page
    status, room = room_page(history, query, fleet=True)
    assert status == "200 OK"
    for raw in (*UNSAFE_SHOWN, "<script>", "<b>\x1b", "<b>&lt;b&gt;", "<i>"):
        assert raw not in room.decode()
    assert "&lt;b&gt;\\x1b[2J" in room.decode()
    assert "&lt;script&gt;\\x1b[2J\\x07\\r\\n  999.9 ms  forged line\\u202eevil" in room.decode()
    assert "TrueConf ID &lt;i&gt;\\x1b[2J" in room.decode()


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
        ("127.0.0.1:1", "default", "down (connect)"),
        (f"127.0.0.1:{websocket_port}", "open", "down (auth)"),
        (f"127.0.0.1:{websocket_port}", "default", "transfer taking too long"),  # doc-example: 2022
    ]
    assert board_names(page)[2] == ("Meeting room", f"127.0.0.1:{websocket_port}"), "getSystemInfo's authInfo"
    link = f"room?target=127.0.0.1%3A{websocket_port}&amp;module=default"
    assert link in page
    status, headers, body = http_get(f"{url}/{link.replace('&amp;', '&')}")
    room = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert room.count("<tr><td>") == 10, "its last ten results"
    times = re.findall(r"<tr><td>([^<]+)</td>", room)
    assert times == sorted(times, reverse=True), "newest first"
    probe = f"probe?target=127.0.0.1%3A{websocket_port}&amp;module=default&amp;debug=true"
    assert probe in room and probe in page
    status, _, trace = http_get(f"{url}/{probe.replace('&amp;', '&')}")
    assert status == 200 and "getOutgoingFilesRequests " in trace.decode(), "the link gives the probe's trace"
    assert http_get(f"{url}/room?target=ws%3A%2F%2F127.0.0.1%3A9&module=default")[0] == 404
    assert http_get(f"{url}/room?target=a&target=b")[0] == 400
    assert ROOM_PIN not in page and ROOM_PIN not in room


def test_failures_no_list_ever_shows_are_new_failures(tmp_path, room, serve_app):
    """A Room whose finished requests leave its lists at once: no probe ever sees a failed request listed,
    the notifications alone tell, and the page says "new failures" from the failed counter they fed."""
    living = fast_living_room(0.1)
    living.start(time.time())
    emulator = room(living=living, fault=Fault.FLEETING_REQUESTS)
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  open: {}\nallowed_targets: ['127.0.0.1']\n")
    url = serve_app(ExporterApp(fleet_settings(), ConfigHolder(config, 5.0)))
    listed_failed: list[float] = []

    def probe() -> None:
        status, _, body = http_get(f"{url}/probe?target=127.0.0.1:{emulator.ports.websocket}&module=open")
        assert status == 200
        listed_failed.extend(
            value
            for (name, labels), value in samples(body.decode()).items()
            if name in ("trueconf_outgoing_file_requests", "trueconf_incoming_file_requests")
            and ("status", "failed") in labels
        )

    def verdict() -> str:
        return board_rows(http_get(f"{url}/")[2].decode())[0][2]

    emulator.pause()
    probe()
    assert verdict() != "new failures"
    emulator.resume()
    assert wait_until(lambda: probe() is None and verdict() == "new failures", 20), "no new failures shown"
    assert listed_failed and not any(listed_failed), "no probe saw a failed request listed"
    page = http_get(f"{url}/")[2].decode()
    failed = re.search(r"<td><b>new failures</b></td><td><b>(\d+)</b></td>", page)
    assert failed and int(failed[1]) >= 1, "the failed column: the counter"


def test_before_any_scrape_the_page_says_so(fleet):
    url, _ = fleet
    assert "No Room collected yet" in http_get(f"{url}/")[2].decode()


def test_without_a_config_file_a_room_is_named_by_its_target_alone():
    history = RecentResults()
    history.record(collection("10.0.0.1", up=False, at=time.time()))
    settings = ExporterSettings(parse_target("10.0.0.1"), None, 5.0)
    page = landing_page(settings, None, history).decode()
    assert '<a href="room?target=10.0.0.1%3A8765">' in page and "<th>module</th>" not in page
    assert "probe?" not in page, "no /probe without --config.file"
    status, room = room_page(history, "target=ws%3A%2F%2F10.0.0.1%3A8765", fleet=False)
    assert status == "200 OK" and "down" in room.decode() and "probe?" not in room.decode()
