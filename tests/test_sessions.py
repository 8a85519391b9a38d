"""Room sessions against the emulator over real sockets: one login per Room, a Room restart costing no failed
scrape, concurrent scrapes sharing one session, and every bound (idle time, count, pending replies)."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
import urllib.request
from typing import Any

import pytest

from exporter.emulator.faults import Fault
from exporter.emulator.scenario import load_scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, RunningEmulator
from exporter.fleet.reload import ConfigHolder
from exporter.methods import OUTGOING_METHOD
from exporter.room import CollectionError, Deadline, Reason, parse_target
from exporter.room.client import fetch_room
from exporter.room.connection import RoomConnection
from exporter.room.request import RoomRequest
from exporter.room.sessions import SessionPool
from exporter.room.trace import Trace
from exporter.web.app import ExporterApp
from exporter.web.settings import ExporterSettings
from tests import raw_servers
from tests.exposition import samples, value
from tests.processes import http_get, wait_until
from tests.raw_servers import frame, reply_of_size

PIN = "31415926"


def fetch(
    pool: SessionPool, port: int, pin: str | None = PIN, timeout: float = 3.0, trace: Trace | None = None
):
    return fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{port}"), pin), Deadline(timeout), trace=trace, pool=pool
    )


@pytest.fixture
def pool(pool_of):
    """A session pool closed before the emulated Rooms stop (they would wait for the open sessions)."""
    return pool_of()


@pytest.fixture
def pool_of(room):
    """`pool_of(**arguments)`: session pools of SessionPool's arguments, closed like `pool`."""
    made: list[SessionPool] = []

    def make(**arguments: Any) -> SessionPool:
        made.append(SessionPool(**arguments))
        return made[-1]

    yield make
    for sessions in made:
        sessions.close_all()


def test_many_scrapes_one_login(room, pool):
    emulator = room("doc-example", pin=PIN)
    for _ in range(5):
        replies = fetch(pool, emulator.ports.websocket)
        assert replies.replies[OUTGOING_METHOD]["outgoingFilesRequests"].total == 2
    assert pool.logins == 1
    assert pool.open_sessions() == 1
    assert len(emulator.room.connections) == 1


def test_without_a_pool_every_scrape_logs_in(room):
    emulator = room("doc-example", pin=PIN)
    for _ in range(3):
        fetch_room(RoomRequest(parse_target(f"127.0.0.1:{emulator.ports.websocket}"), PIN), Deadline(3.0))
    assert wait_until(lambda: emulator.open_connections == 0, 5), "each scrape closed its connection"


def test_a_room_restart_costs_no_failed_scrape(room):
    first = room("doc-example", pin=PIN)
    port = first.ports.websocket
    pool = SessionPool()
    fetch(pool, port)
    first.stop()
    again = RunningEmulator(
        EmulatedRoom(EmulatorSettings(websocket_port=port, pin=PIN), scenario=load_scenario("doc-example"))
    )
    again.start()
    try:
        trace = Trace()
        replies = fetch(pool, port, trace=trace)
        assert OUTGOING_METHOD in replies.replies
        assert [s.phase for s in trace.steps][:2] == ["session", "session"], trace.lines()
        assert "opening a new one" in trace.steps[1].outcome
        assert pool.logins == 2
    finally:
        pool.close_all()
        again.stop()


def test_concurrent_scrapes_of_one_room_share_its_session(room, pool):
    emulator = room("doc-example", pin=PIN)
    results: list[object] = []

    def scrape() -> None:
        try:
            results.append(fetch(pool, emulator.ports.websocket, timeout=5.0))
        except CollectionError as error:
            results.append(error)

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert all(not isinstance(result, CollectionError) for result in results), results
    assert pool.logins == 1


def test_a_request_left_unanswered_closes_the_session(room, pool):
    emulator = room("doc-example", pin=PIN, fault=Fault.SLOW_REPLY, slow_reply_seconds=0.8)
    with pytest.raises(CollectionError) as caught:
        fetch(pool, emulator.ports.websocket, timeout=0.3)
    assert caught.value.reason is Reason.TIMEOUT
    assert pool.open_sessions() == 0, "a session with a reply pending is never reused"
    # time passing is the behaviour here: the late reply is sent now, on a connection that is gone
    time.sleep(0.8)
    replies = fetch(pool, emulator.ports.websocket, timeout=3.0)
    assert OUTGOING_METHOD in replies.replies


def test_idle_sessions_are_closed_and_the_count_is_bounded(room, pool_of):
    rooms = [room("doc-example", pin=PIN) for _ in range(3)]
    pool = pool_of(idle_seconds=60, max_sessions=2)
    for emulator in rooms:
        fetch(pool, emulator.ports.websocket)
    assert pool.open_sessions() == 2, "the least recently used session was closed"
    pool.sweep(now=time.monotonic() + 61)
    assert pool.open_sessions() == 0


def test_credentials_are_part_of_the_session(room, pool):
    emulator = room("doc-example", pin=PIN)
    fetch(pool, emulator.ports.websocket)
    with pytest.raises(CollectionError) as caught:
        fetch(pool, emulator.ports.websocket, pin="00000000")
    assert caught.value.reason is Reason.AUTH
    assert "00000000" not in caught.value.message


def test_close_all_closes_every_session(room, pool):
    emulator = room("doc-example", pin=PIN)
    fetch(pool, emulator.ports.websocket)
    pool.close_all()
    assert pool.open_sessions() == 0
    fetch(pool, emulator.ports.websocket)
    assert pool.logins == 2


@pytest.mark.loopback  # a SessionPool: its reader wakes its selector through a socketpair
def test_the_pool_key_never_holds_the_pin():
    pool = SessionPool()
    assert PIN not in pool.key("ws://10.0.0.1:8765", PIN)
    assert pool.key("ws://10.0.0.1:8765", PIN) != pool.key("ws://10.0.0.1:8765", None)
    assert pool.key("ws://10.0.0.1:8765", PIN) == SessionPool().key("ws://10.0.0.1:8765", PIN)


@pytest.mark.loopback  # a SessionPool: its reader wakes its selector through a socketpair
def test_reading_a_rooms_counters_does_not_keep_its_slot():
    """`transfers` (what /metrics reads) leaves the order of use alone: only a scrape makes a slot recent."""
    pool = SessionPool(max_sessions=2)
    first, second = pool.key("ws://10.0.0.1:8765", PIN), pool.key("ws://10.0.0.2:8765", PIN)
    pool.slot(first)
    pool.slot(second)
    assert pool.transfers(first) is not None
    pool.slot(pool.key("ws://10.0.0.3:8765", PIN))
    assert pool.transfers(first) is None and pool.transfers(second) is not None


def holds(root: object, wanted: str) -> bool:
    """Whether `wanted` is reachable from `root` through containers and the project's own objects."""
    seen: set[int] = set()
    todo = [root]
    while todo and len(seen) < 100_000:
        item = todo.pop()
        if item is wanted:
            return True
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            todo.extend([*item.keys(), *item.values()])
        elif isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
        elif type(item).__module__.startswith("exporter.") and hasattr(item, "__dict__"):
            todo.extend(vars(item).values())
    return False


@pytest.mark.loopback  # a SessionPool: its reader wakes its selector through a socketpair
def test_closing_every_session_forgets_the_pins_hashed_for_their_keys():
    """A reload closes every session: a PIN it dropped is not kept in memory for its digest."""
    pool = SessionPool()
    dropped = "".join(["dropped-by-", "a-reload"])  # a string of its own, not an interned constant
    pool.key("ws://10.0.0.1:8765", dropped)
    assert holds(pool, dropped)
    pool.close_all()
    assert not holds(pool, dropped)


@pytest.mark.process
@pytest.mark.parametrize(("sessions", "logins"), [("true", 1), ("false", 4)])
def test_a_real_serve_logs_in_once_and_says_so_on_metrics(processes, sessions, logins):
    emulator = processes["emulator"]("--scenario", "doc-example")
    exporter = processes["exporter"](
        "--target",
        f"ws://127.0.0.1:{emulator.ports['websocket']}",
        env={"TRUECONF_EXPORTER_ROOM_SESSIONS": sessions},
    )
    for _ in range(4):
        text = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")[2].decode()
        assert value(text, "trueconf_up") == 1
    assert value(text, "trueconf_exporter_room_logins_total") == logins
    assert value(text, "trueconf_exporter_room_sessions") == (1 if sessions == "true" else 0)
    assert [v for (name, _), v in samples(text).items() if name == "trueconf_room_info"] == [1]


def test_modules_choose_sessions_and_methods_and_a_reload_closes_sessions(room, serve_app, tmp_path):
    emulator = room("doc-example")
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n  kept: {}\n  fresh:\n    sessions: false\n    collectors: {incoming: false}\n"
        "allowed_targets: ['127.0.0.1']\n"
    )
    app = ExporterApp(
        ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 3.0), ConfigHolder(config, 3.0)
    )
    url = serve_app(app)
    target = f"127.0.0.1:{emulator.ports.websocket}"
    for _ in range(3):
        kept = http_get(f"{url}/probe?target={target}&module=kept")[2].decode()
    assert app.sessions.logins == 1 and app.sessions.open_sessions() == 1
    for _ in range(3):
        fresh = http_get(f"{url}/probe?target={target}&module=fresh")[2].decode()
    assert app.sessions.logins == 4 and app.sessions.open_sessions() == 1
    assert value(kept, "trueconf_scrape_method_success", method="getIncomingFilesRequests") == 1
    assert "getIncomingFilesRequests" not in fresh, "a collector switched off is not asked"
    reload = urllib.request.Request(f"{url}/-/reload", data=b"", method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(reload) as answer:
        assert answer.status == 200
    assert app.sessions.open_sessions() == 0, "a reload closes every session (credentials may have changed)"


ALL_METHODS = (
    OUTGOING_METHOD,
    "getIncomingFilesRequests",
    "getFileTransferAvailability",
    "getAppState",
    "getSystemInfo",
)


def test_a_restarted_room_that_cut_every_connection_costs_no_failed_scrape(room, pool):
    emulator = room("doc-example", pin=PIN)
    fetch(pool, emulator.ports.websocket)
    assert emulator.restart() == 1
    assert OUTGOING_METHOD in fetch(pool, emulator.ports.websocket).replies
    assert pool.logins == 2


def test_a_half_open_session_is_replaced_within_the_scrape(room, pool):
    emulator = room("doc-example", pin=PIN, fault=Fault.HALF_OPEN)
    fetch(pool, emulator.ports.websocket)
    started = time.monotonic()
    trace = Trace()
    replies = fetch(pool, emulator.ports.websocket, timeout=2.0, trace=trace)
    assert OUTGOING_METHOD in replies.replies
    assert time.monotonic() - started < 2.0
    assert any("lost" in step.outcome for step in trace.steps), trace.lines()
    assert pool.logins == 2


def test_a_half_open_session_is_replaced_after_any_number_of_reuses_of_a_room_answering_in_order(pool):
    """A Room handling frames one at a time: no pong of an earlier scrape is left to pass for this one's."""
    in_order = raw_servers.InOrderRoom()
    with raw_servers.tcp_server(in_order) as port:
        for _ in range(3):
            fetch(pool, port, pin=None)
        in_order.half_open()
        started = time.monotonic()
        assert OUTGOING_METHOD in fetch(pool, port, pin=None, timeout=2.0).replies
        assert time.monotonic() - started < 2.0
        assert in_order.connections == 2, "the half-open session was replaced within the scrape"
        pool.close_all()


def test_a_slow_room_answering_in_order_keeps_its_session(pool):
    """Its pong comes only after the requests ahead of the ping: the ping goes first, so a Room slower than
    the patience (half the deadline) but alive is never taken for dead."""
    in_order = raw_servers.InOrderRoom(delay=1.0)
    with raw_servers.tcp_server(in_order) as port:
        for _ in range(3):
            assert OUTGOING_METHOD in fetch(pool, port, pin=None, timeout=1.7).replies
        assert in_order.connections == 1
        pool.close_all()


def test_an_optional_method_never_answered_costs_one_slow_scrape_then_is_not_asked(room, pool):
    emulator = room("doc-example", pin=PIN, fault=Fault.OPTIONAL_SILENT)
    port = emulator.ports.websocket
    first = fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{port}"), PIN, methods=ALL_METHODS), Deadline(1.0), pool=pool
    )
    assert set(first.replies) == {OUTGOING_METHOD}, "the outgoing reply still decides the scrape"
    started = time.monotonic()
    second = fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{port}"), PIN, methods=ALL_METHODS), Deadline(1.0), pool=pool
    )
    assert time.monotonic() - started < 0.5
    assert second.asked == (OUTGOING_METHOD,)


def test_replies_in_any_order_are_matched_by_request_id(room, pool):
    emulator = room("doc-example", pin=PIN, fault=Fault.REORDERED_REPLIES)
    replies = fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{emulator.ports.websocket}"), PIN, methods=ALL_METHODS),
        Deadline(3.0),
        pool=pool,
    )
    assert set(replies.replies) == set(ALL_METHODS)
    assert all(reply["method"] == method for method, reply in replies.replies.items())


def test_a_slow_but_healthy_room_keeps_its_session(room, pool):
    """A reused session that answers a ping is alive, however slow its replies: it gets the whole deadline."""
    emulator = room("doc-example", pin=PIN, fault=Fault.SLOW_REPLY, slow_reply_seconds=0.8)
    for _ in range(3):
        assert OUTGOING_METHOD in fetch(pool, emulator.ports.websocket, timeout=1.2).replies
    assert pool.logins == 1


def test_an_optional_method_late_once_is_asked_again(room, pool):
    emulator = room("every-method", pin=PIN)
    port = emulator.ports.websocket
    fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{port}"), PIN, methods=ALL_METHODS), Deadline(1.0), pool=pool
    )
    emulator.room.settings.fault = Fault.OPTIONAL_SILENT
    fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{port}"), PIN, methods=ALL_METHODS), Deadline(0.5), pool=pool
    )
    emulator.room.settings.fault = Fault.NONE
    again = fetch_room(
        RoomRequest(parse_target(f"127.0.0.1:{port}"), PIN, methods=ALL_METHODS), Deadline(1.0), pool=pool
    )
    assert "getIncomingFilesRequests" in again.asked, "answered before: one late reply does not silence it"


def test_the_session_table_holds_at_most_max_sessions_slots_failed_ones_included(pool_of):
    """A slot is made for every target tried, answered or not: a flood of probes of targets where nothing
    listens leaves at most max_sessions of them, the oldest leaving first."""
    pool = pool_of(max_sessions=5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: every connect is refused
        for index in range(50):
            with pytest.raises(CollectionError):
                fetch_room(
                    RoomRequest(parse_target(f"ws://127.0.0.{index % 250 + 1}:{port}"), PIN),
                    Deadline(1.0),
                    pool=pool,
                )
            assert len(pool) <= 5
    assert len(pool) == 5


def test_sessions_opened_at_once_past_the_bound_never_stay_open(room, pool_of):
    """Twenty Rooms scraped at once by a pool of five: every evicted session is closed, in use or not."""
    rooms = [room("doc-example", pin=PIN) for _ in range(20)]
    pool = pool_of(max_sessions=5)
    start = threading.Barrier(20)

    def scrape(emulator: RunningEmulator) -> None:
        start.wait()
        for _ in range(3):
            fetch(pool, emulator.ports.websocket)

    threads = [threading.Thread(target=scrape, args=(emulator,)) for emulator in rooms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pool.open_sessions() <= 5 and len(pool) <= 5
    deadline = time.monotonic() + 5
    while sum(emulator.open_connections for emulator in rooms) > 5:  # the Rooms see the closes arrive
        assert time.monotonic() < deadline, [emulator.open_connections for emulator in rooms]
        time.sleep(0.01)  # the poll interval of this bounded wait


def test_an_idle_session_holds_a_few_kib_whatever_the_room_sent_behind_its_reply(pool):
    """A 60 KB notification behind each reply stayed in every idle session's read-ahead buffer (up to
    64 KiB a session: 1 200 such Rooms took the exporter from 112 to 159 MiB)."""
    notification = b'{"method":"event","event":"x","pad":"' + b"p" * 60_000 + b'"}'
    servers = [
        raw_servers.tcp_server(
            raw_servers.websocket_room(frame(reply_of_size(300)), frame(notification), one_write=True)
        )
        for _ in range(20)
    ]
    ports = [server.__enter__() for server in servers]
    try:
        fetch_room(
            RoomRequest(parse_target(f"ws://127.0.0.1:{ports[0]}"), None), Deadline(3.0), pool=pool
        )  # warm up
        tracemalloc.start()
        for port in ports[1:]:
            fetch_room(RoomRequest(parse_target(f"ws://127.0.0.1:{port}"), None), Deadline(3.0), pool=pool)
        # what the exporter's side keeps (the raw Rooms in this process hold their own copies)
        kept = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/exporter/*"), tracemalloc.Filter(True, "*/websocket/*")]
        )
        tracemalloc.stop()
        assert pool.open_sessions() == 20
        per_session = sum(stat.size for stat in kept.statistics("filename")) / (len(ports) - 1)
        assert per_session < 16 * 1024, f"{per_session / 1024:.1f} KiB per idle session"
    finally:
        pool.close_all()
        for server in servers:
            server.__exit__(None, None, None)


def test_a_scrape_under_way_during_a_reload_leaves_no_session_behind(room, pool):
    """A reload closing every session between a scrape taking its slot and taking the slot's lock: the
    session the scrape then opens is the pool's, and the next close_all closes it (none is orphaned)."""
    emulator = room("doc-example", pin=PIN)
    target = parse_target(f"127.0.0.1:{emulator.ports.websocket}")
    slot = pool.slot(pool.key(str(target), PIN))  # the scrape has its slot...
    pool.close_all()  # ...when a reload closes every session
    assert slot.lock.acquire(timeout=1)
    slot.connection = RoomConnection.open(
        RoomRequest(target, PIN, max_message_bytes=4096),
        Deadline(3.0),
        Trace(),
        pool.budget,
        pool.reader,
        pool.resolver,
        slot.ledger,
    )
    assert emulator.open_connections == 1
    pool.release(slot)  # the scrape ends
    assert pool.open_sessions() == 1
    pool.close_all()
    assert wait_until(lambda: emulator.open_connections == 0, 5), "the session opened meanwhile was closed"
