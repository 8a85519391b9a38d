"""The sessions' reader over real loopback sockets: kept sessions read between scrapes (notifications, pings,
floods, oversized messages, a Room that hangs up), blocking steps bounded by their deadline, frames fed in any
pieces, the shared budget given back, and idle sessions that cost no CPU.

The Rooms are raw servers (tests/raw_servers.py): each does between two scrapes what the test says, in its own
thread, and measures there what the Room sees (how long its writes take, the pong it gets). Tests over sockets
are marked `loopback`; those on FrameStream alone are the fast tier. The last ones hold what an adversarial
pass found: a budget held or leaked by a message begun or refused beside a reply, a flood of frames that are
not notifications, a frame dripped a byte at a time, closed sessions counted as open."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from hypothesis import given
from hypothesis import strategies as st

from exporter.room import CollectionError, Deadline, Reason, parse_target
from exporter.room.budget import FREE_BYTES, MessageBudget
from exporter.room.client import RoomReplies, fetch_room
from exporter.room.connection import (
    FLOOD_BURST,
    FLOOD_PER_SECOND,
    LARGE_MESSAGES_BEYOND_REPLIES,
    RoomConnection,
)
from exporter.room.frames import (
    MAX_CONTROL_PAYLOAD,
    MAX_FRAMES_PER_MESSAGE,
    MAX_UNASKED_BYTES,
    BudgetBusyError,
    FrameStream,
    Message,
    NeedMoreBytesError,
)
from exporter.room.request import RoomRequest
from exporter.room.sessions import SessionPool
from exporter.room.trace import Trace
from tests import raw_servers
from tests.raw_servers import RoomLine, ScriptedRoom, frame, progress_notification, reply_of_size

PIN = "27182818"
MIB = 1024 * 1024


# --- helpers ---


def until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll `condition` (every 10 ms, `seconds` at most); whether it held."""
    ends = time.monotonic() + seconds
    pause = threading.Event()
    while not condition():
        if time.monotonic() >= ends:
            return False
        pause.wait(0.01)
    return True


def scrape(
    pool: SessionPool, port: int, seconds: float = 3.0, pin: str = PIN, trace: Trace | None = None
) -> RoomReplies | CollectionError:
    """One scrape of the Room on `port` through `pool`: its replies, or the CollectionError it ended with."""
    try:
        return fetch_room(
            RoomRequest(parse_target(f"127.0.0.1:{port}"), pin), Deadline(seconds), trace=trace, pool=pool
        )
    except CollectionError as error:
        return error


def session(pool: SessionPool, port: int, pin: str = PIN) -> RoomConnection | None:
    """The open session the pool keeps for the Room on `port`."""
    return pool.slot(pool.key(str(parse_target(f"127.0.0.1:{port}")), pin)).connection


Serve = Callable[[Callable[[socket.socket], None]], int]
"""The `serve` fixture: serve a raw Room handler, get its port."""


@pytest.fixture
def pool() -> Iterator[SessionPool]:
    sessions = SessionPool()
    yield sessions
    sessions.close_all()
    sessions.reader.stop()


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve a raw Room handler on a free loopback port for the test; yields a function returning the port."""
    with contextlib.ExitStack() as stack:
        yield lambda handle: stack.enter_context(raw_servers.tcp_server(handle))


class Sending:
    """What a Room saw when it wrote a flood between scrapes: how long the write took, and how it ended."""

    def __init__(self) -> None:
        self.seconds: float | None = None
        self.outcome = ""


def flood(
    data: bytes, seen: Sending, then: bytes = b"", pace: float = 0.0, pieces: int = 0
) -> Callable[[RoomLine], None]:
    """A `between` step: `data` in one write (timed), then `pieces` writes of `then`, `pace` seconds apart."""

    def between(line: RoomLine) -> None:
        line.connection.settimeout(15)
        started = time.monotonic()
        try:
            line.send(data)
            seen.outcome = "sent"
        except TimeoutError:
            seen.outcome = "blocked"
        except OSError as error:  # the exporter dropped the session: its socket is gone
            seen.outcome = f"reset ({type(error).__name__})"
        seen.seconds = time.monotonic() - started
        pause = threading.Event()
        for _ in range(pieces):
            pause.wait(pace)
            line.send(then)

    return between


def notifications(count: int, ids: int = 100) -> bytes:
    return b"".join(progress_notification(f"req-{index % ids}", index % 100) for index in range(count))


# --- kept sessions are read between scrapes ---


@pytest.mark.loopback
def test_a_notification_flood_over_the_bound_is_taken_at_once_and_drops_the_session(
    pool: SessionPool, serve: Serve
) -> None:
    """50 000 notifications (~16 MB, more than the kernel buffers hold) at once: the Room's write ends
    within seconds, and past FLOOD_BURST the session is dropped; the next scrape says why, the one after
    opens a new session."""
    seen = Sending()
    data = notifications(50_000)
    assert len(data) > 12 * MIB
    room = ScriptedRoom(flood(data, seen))
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    assert room.done.wait(10), "the Room is still writing its flood"
    assert seen.seconds is not None and seen.seconds < 3.0, (seen.outcome, seen.seconds)
    assert seen.outcome.startswith("reset"), seen.outcome  # it did not all go: the session was dropped
    dropped = scrape(pool, port)
    assert isinstance(dropped, CollectionError) and dropped.reason is Reason.PROTOCOL, dropped
    assert dropped.message.startswith("the session was dropped: "), dropped.message
    assert str(FLOOD_BURST) in dropped.message
    assert "notifications faster than" in dropped.message
    assert isinstance(scrape(pool, port), RoomReplies)
    assert pool.logins == 2 and room.connections == 2
    assert pool.budget.free == pool.budget.shared_bytes


@pytest.mark.loopback
def test_notifications_under_the_bound_are_all_read_and_counted_before_the_next_scrape(
    pool: SessionPool, serve: Serve
) -> None:
    """A burst just under FLOOD_BURST (~6 MB, more than the kernel buffers hold unread), then notifications
    at half FLOOD_PER_SECOND past the burst: all read and given to the Room's ledger between scrapes; the
    session is kept."""
    seen = Sending()
    burst = FLOOD_BURST - 1_000
    paced = FLOOD_PER_SECOND // 2
    data = notifications(burst, ids=100)
    more = b"".join(progress_notification(f"late-{index}") for index in range(paced // 10))
    room = ScriptedRoom(flood(data, seen, then=more, pace=0.1, pieces=10))  # `paced` in one second
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    connection = session(pool, port)
    assert connection is not None
    assert room.done.wait(10)
    assert seen.outcome == "sent" and seen.seconds is not None and seen.seconds < 3.0, vars(seen)
    read = 2 + burst + paced  # auth's reply, the first scrape's, the notifications
    assert until(lambda: connection.sequence == read), (connection.sequence, read)
    key = pool.key(str(parse_target(f"127.0.0.1:{port}")), PIN)

    def created() -> int:
        transfers = pool.transfers(key)
        return -1 if transfers is None else transfers.outgoing.created["peer"]

    assert until(lambda: created() == 100 + paced // 10), created()  # each id once
    assert connection.failure is None and not connection.closed
    assert isinstance(scrape(pool, port), RoomReplies)
    assert pool.logins == 1 and room.connections == 1


@pytest.mark.loopback
def test_a_ping_between_scrapes_is_answered_with_its_payload(pool: SessionPool, serve: Serve) -> None:
    pongs: list[tuple[int, bytes]] = []
    payload = b"are you there? 0123456789"

    def ping(line: RoomLine) -> None:
        line.connection.settimeout(3)
        line.send(frame(payload, opcode=0x9))
        pongs.append(line.read_frame())

    room = ScriptedRoom(ping)
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    assert room.done.wait(5)
    assert room.error is None, room.error
    assert pongs == [(0xA, payload)]
    assert isinstance(scrape(pool, port), RoomReplies)
    assert pool.logins == 1


@pytest.mark.loopback
@pytest.mark.parametrize(
    ("frames", "dropped"),
    [
        pytest.param(lambda body: [frame(body(MAX_UNASKED_BYTES))], False, id="at the limit"),
        pytest.param(lambda body: [frame(body(MAX_UNASKED_BYTES + 1))], True, id="one byte over"),
        pytest.param(
            lambda body: (
                [
                    frame(body(MAX_UNASKED_BYTES + 1)[:4096], fin=False),
                    frame(body(MAX_UNASKED_BYTES + 1)[4096:], opcode=0x0),
                ]
            ),
            True,
            id="over in fragments",
        ),
        pytest.param(lambda body: [frame(b"", announced=MIB)], True, id="announced, never sent"),
    ],
)
def test_a_message_over_the_unasked_limit_between_scrapes_drops_the_session(
    pool: SessionPool,
    serve: Serve,
    frames: Callable[[Callable[[int], bytes]], list[bytes]],
    dropped: bool,
) -> None:
    def body(size: int) -> bytes:
        head = b'{"method":"event","event":"fileTransferProgress","pad":"'
        return head + b"p" * (size - len(head) - 2) + b'"}'

    def send(line: RoomLine) -> None:
        for each in frames(body):
            line.send(each)

    room = ScriptedRoom(send)
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    connection = session(pool, port)
    assert connection is not None and room.done.wait(5)
    if not dropped:
        assert until(lambda: connection.sequence == 3)
        assert isinstance(scrape(pool, port), RoomReplies)
        assert pool.logins == 1
        return
    assert until(lambda: connection.closed)
    refused = scrape(pool, port)
    assert isinstance(refused, CollectionError) and refused.reason is Reason.PROTOCOL, refused
    assert refused.message.startswith("the session was dropped: "), refused.message
    assert f"more than {MAX_UNASKED_BYTES} bytes while no reply was awaited" in refused.message
    assert isinstance(scrape(pool, port), RoomReplies)
    assert pool.logins == 2 and room.connections == 2
    assert pool.budget.free == pool.budget.shared_bytes


def hang_up(how: str) -> Callable[[RoomLine], None]:
    def between(line: RoomLine) -> None:
        if how == "close frame":
            line.send(frame(struct.pack("!H", 1001), opcode=0x8))
        elif how == "reset":
            line.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        line.connection.close()

    return between


@pytest.mark.loopback
@pytest.mark.parametrize("how", ["close", "close frame", "reset"])
@pytest.mark.parametrize("noticed", [True, False], ids=["noticed", "racing"])
def test_a_room_that_hangs_up_between_scrapes_is_reconnected_without_an_error(
    pool: SessionPool, serve: Serve, how: str, noticed: bool
) -> None:
    room = ScriptedRoom(hang_up(how))
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    connection = session(pool, port)
    assert connection is not None and room.done.wait(5)
    if noticed:  # the reader has seen the hang-up; otherwise the scrape may find it first
        assert until(lambda: connection.closed)
        assert not isinstance(connection.failure, CollectionError), connection.failure
    trace = Trace()
    started = time.monotonic()
    replies = scrape(pool, port, seconds=2.0, trace=trace)
    assert isinstance(replies, RoomReplies), (replies, trace.lines())
    assert time.monotonic() - started < 1.0, trace.lines()
    assert pool.logins == 2 and room.connections == 2


# --- the blocking steps: bounded by their deadline, ended at once by a cancel ---


@pytest.mark.loopback
def test_a_dripping_upgrade_answer_ends_within_the_deadline(serve: Serve) -> None:
    port = serve(raw_servers.dripping_upgrade(every=0.2, seconds=8.0))
    pool = SessionPool()
    started = time.monotonic()
    try:
        result = scrape(pool, port, seconds=1.0)
    finally:
        pool.reader.stop()
    took = time.monotonic() - started
    assert isinstance(result, CollectionError) and result.reason is Reason.TIMEOUT, result
    assert took < 1.3, f"the handshake took {took:.2f}s against a 1s deadline"


@pytest.mark.loopback
@pytest.mark.parametrize("cancel", ["deadline", "pool"])
def test_a_cancel_ends_a_blocked_upgrade_at_once(serve: Serve, cancel: str) -> None:
    requested, released = threading.Event(), threading.Event()
    port = serve(raw_servers.held_upgrade(requested, released))
    pool = SessionPool()
    deadline = Deadline(20.0)
    results: list[object] = []

    def blocked() -> None:
        try:
            fetch_room(RoomRequest(parse_target(f"127.0.0.1:{port}"), PIN), deadline, pool=pool)
        except CollectionError as error:
            results.append(error)

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    try:
        assert requested.wait(5), "the upgrade request never came"
        started = time.monotonic()
        ended = deadline.cancel() if cancel == "deadline" else pool.cancel_all()
        thread.join(2.0)
        took = time.monotonic() - started
        assert not thread.is_alive(), "the scrape still waits for the upgrade answer"
    finally:
        released.set()
        pool.reader.stop()
    assert ended == 1
    assert took < 0.5, f"{took:.2f}s"
    assert len(results) == 1
    error = results[0]
    assert isinstance(error, CollectionError) and error.reason is Reason.TIMEOUT, error


# --- frames fed in any pieces; the budget given back after every refusal ---


def _text(data: bytes, fin: bool = True, opcode: int = 0x1) -> bytes:
    return frame(data, opcode=opcode, fin=fin)


LARGE = b'{"method":"x","pad":"' + b"L" * (FREE_BYTES + 5_000) + b'"}'
SMALL = b"".join(
    [
        _text(b'{"method":"event","event":"a"}'),
        frame(b"ping-1", opcode=0x9),
        _text(b'{"method":', fin=False),  # a fragmented message with control frames inside it
        frame(b"pong-1", opcode=0xA),
        _text(b'"getAppState",', fin=False, opcode=0x0),
        frame(b"", opcode=0x9),
        _text(b'"result":true}', opcode=0x0),
        _text(b"x" * 300),  # a 16-bit length
        frame(b"bye", opcode=0x2),
    ]
)
STREAM = (
    SMALL
    + b"".join(
        [
            _text(LARGE[:30_000], fin=False),  # past FREE_BYTES: reserved from the shared budget
            frame(b"ping-2", opcode=0x9),
            _text(LARGE[30_000:], opcode=0x0),
            frame(struct.pack("!H", 1000), opcode=0x8),
        ]
    )
)


def read_all(stream: FrameStream, pieces: list[bytes], budget: MessageBudget) -> list[tuple[str, int, bytes]]:
    """Every frame and message `stream` gives for `pieces` fed one after another, the budget released as
    a parsing scrape would."""
    seen: list[tuple[str, int, bytes]] = []
    for piece in pieces:
        stream.feed(piece)
        while True:
            try:
                item = stream.next(replies_awaited=True)
            except NeedMoreBytesError:
                break
            if isinstance(item, Message):
                seen.append(("message", item.opcode, item.data))
                budget.release(item.reserved)
            else:
                assert isinstance(item.data, bytes)
                seen.append(("control", item.opcode, item.data))
    return seen


def whole(data: bytes) -> list[tuple[str, int, bytes]]:
    budget = MessageBudget()
    return read_all(FrameStream(4 * MIB, budget), [data], budget)


def test_frames_fed_byte_by_byte_give_what_they_give_whole() -> None:
    """Byte by byte for the small frames; the large message (past FREE_BYTES) in pieces of 997 bytes:
    byte by byte it costs quadratic time (see the fault test below)."""
    expected = whole(STREAM)
    kinds = ["message", "control", "control", "control", "message", "message", "message"]
    assert [kind for kind, _, _ in expected] == [*kinds, "control", "message", "control"]
    assert expected[4] == ("message", 0x1, b'{"method":"getAppState","result":true}')
    assert expected[8] == ("message", 0x1, LARGE)
    budget = MessageBudget()
    pieces = [SMALL[i : i + 1] for i in range(len(SMALL))]
    rest = STREAM[len(SMALL) :]
    pieces += [rest[i : i + 997] for i in range(0, len(rest), 997)]
    assert read_all(FrameStream(4 * MIB, budget), pieces, budget) == expected
    assert budget.free == budget.shared_bytes


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=40, unique=True))
def test_frames_fed_in_any_pieces_give_what_they_give_whole(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(STREAM)]
    budget = MessageBudget()
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert read_all(FrameStream(4 * MIB, budget), pieces, budget) == whole(STREAM)
    assert budget.free == budget.shared_bytes


REFUSALS: dict[str, tuple[bytes, bool]] = {
    # what the Room sends, and whether the refused message holds part of the budget when it is refused
    "over the message limit": (
        _text(b"a" * 1_000, fin=False)
        + _text(b"", opcode=0x0, fin=False)
        + frame(b"", opcode=0x0, announced=5 * MIB),
        True,
    ),
    "a long control frame inside a message": (
        _text(b"a", fin=False) + frame(b"p" * 200, opcode=0x9),
        True,
    ),
    "a message inside a message": (_text(b"a", fin=False) + _text(b"b"), True),
    "a continuation of nothing": (_text(b"a", opcode=0x0), False),
    "too many frames": (
        _text(b"[", fin=False) + _text(b" ", opcode=0x0, fin=False) * (MAX_FRAMES_PER_MESSAGE + 1),
        True,
    ),
    "larger than the whole budget": (frame(b"", announced=20 * MIB), False),
    "a bad frame inside a message": (_text(b"a", fin=False) + bytes([0x80 | 0x40, 0]), True),  # rsv1
}


@pytest.mark.parametrize("pieces", ["whole", "byte by byte"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_every_refusal_gives_the_budget_back(refusal: str, pieces: str) -> None:
    budget = MessageBudget()  # 16 MiB: a fragmented message reserves 4 MiB (less FREE_BYTES) at once
    stream = FrameStream(32 * MIB, budget)
    data, holds = REFUSALS[refusal]
    if refusal != "larger than the whole budget":
        stream.max_message_bytes = 4 * MIB
    chunks = [data] if pieces == "whole" else [data[i : i + 1] for i in range(len(data))]
    with pytest.raises((CollectionError, websocket.WebSocketException)):
        read_all(stream, chunks, budget)
    assert (budget.free < budget.shared_bytes) is holds, "held when refused"
    stream.release()  # what the connection's `_shut` does on every refusal
    assert budget.free == budget.shared_bytes


def test_a_session_waits_for_the_budget_without_losing_what_it_read() -> None:
    budget = MessageBudget(shared_bytes=FREE_BYTES)
    held = budget.free
    assert budget.try_reserve(held)
    stream = FrameStream(4 * MIB, budget)
    stream.feed(_text(LARGE))
    with pytest.raises(BudgetBusyError):
        stream.next(replies_awaited=True)
    budget.release(held)
    message = stream.next(replies_awaited=True)
    assert isinstance(message, Message) and message.data == LARGE
    budget.release(message.reserved)
    assert budget.free == budget.shared_bytes


@pytest.mark.loopback
@pytest.mark.parametrize("refusal", ["a long control frame", "a message inside a message", "over the limit"])
def test_a_session_dropped_mid_message_gives_its_reservation_back(serve: Serve, refusal: str) -> None:
    """Over sockets: the scrape's reply begins past FREE_BYTES (reserving), then breaks the rules."""
    start = _text(LARGE[:30_000], fin=False)
    broken = {
        "a long control frame": frame(b"p" * (MAX_CONTROL_PAYLOAD + 1), opcode=0x9),
        "a message inside a message": _text(b"{}"),
        "over the limit": frame(b"", opcode=0x0, announced=5 * MIB),
    }[refusal]
    port = serve(raw_servers.websocket_room(start, broken))
    pool = SessionPool()
    try:
        result = scrape(pool, port)
    finally:
        pool.close_all()
        pool.reader.stop()
    assert isinstance(result, CollectionError) and result.reason is Reason.PROTOCOL, result
    assert pool.budget.free == pool.budget.shared_bytes


# --- an idle session costs nothing ---


@pytest.mark.loopback
def test_two_hundred_idle_sessions_cost_no_cpu(pool: SessionPool, serve: Serve) -> None:
    room = ScriptedRoom(idle_seconds=20)
    port = serve(room)
    for index in range(200):
        assert isinstance(scrape(pool, port, pin=f"pin-{index}"), RoomReplies)
    assert pool.open_sessions() == 200
    idle = threading.Event()
    before = time.process_time()
    idle.wait(1.0)
    spent = time.process_time() - before
    assert spent < 0.05, f"{spent:.3f}s of CPU in 1s of idling"
    assert pool.open_sessions() == 200


# --- faults found: these fail on the code as it stands ---


@pytest.mark.loopback
def test_a_large_message_begun_with_the_last_reply_does_not_hold_the_budget_between_scrapes(
    serve: Serve,
) -> None:
    """A Room writes its last reply and, in the same write, the head of a 4 MiB frame it never finishes. The
    head is read while the scrape still awaits replies, so the frame gets the awaited limit and reserves
    ~4 MiB of the shared budget; the scrape ends well and the session is kept, still holding it, until the
    idle sweep (300 s). Four such Rooms hold the whole 16 MiB: every other Room's large reply waits for
    budget and its scrape times out."""
    head = frame(b"", announced=4 * MIB - 100)
    port = serve(raw_servers.websocket_room(frame(reply_of_size(200)) + head))  # one write
    pool = SessionPool()
    try:
        assert isinstance(scrape(pool, port), RoomReplies)
        assert until(lambda: pool.budget.free == pool.budget.shared_bytes, seconds=1.0), (
            f"{(pool.budget.shared_bytes - pool.budget.free) / MIB:.2f} MiB of the shared budget held by an "
            "idle session"
        )
    finally:
        pool.close_all()
        pool.reader.stop()


def test_a_notification_dripped_a_byte_at_a_time_costs_linear_cpu() -> None:
    """websocket-client's frame_buffer keeps what a frame has received as a list of the pieces fed, and sums
    their lengths at every call (`recv_strict`): a frame fed in k pieces costs O(k^2). An 8 KiB notification
    (the most a message may take between scrapes) in 1-byte pieces took 1.0 s of the reader's CPU (64-byte
    pieces: 0.6 ms). A Room that sends a byte every ~0.3 ms, slower than the reader reads, gets each byte
    read on its own: ~40 % of a core for 27 kbit/s, between scrapes, unbounded by the flood limit."""
    body = b'{"method":"event","event":"x","pad":"' + b"p" * (MAX_UNASKED_BYTES - 40) + b'"}'
    data = _text(body)
    stream = FrameStream(4 * MIB, MessageBudget())
    seen = []
    started = time.process_time()
    for index in range(len(data)):
        stream.feed(data[index : index + 1])
        with contextlib.suppress(NeedMoreBytesError):
            seen.append(stream.next(replies_awaited=False))
    spent = time.process_time() - started
    assert [item.data for item in seen if isinstance(item, Message)] == [body]
    assert spent < 0.2, f"{spent:.2f}s of CPU for one {len(body)}-byte notification fed a byte at a time"


@pytest.mark.loopback
def test_a_refused_large_message_gives_back_the_reservations_of_those_read_with_it(serve: Serve) -> None:
    """Two fragmented messages in one write (each fragmented message reserves its whole possible size,
    ~4 MiB, at its first frame) reach the scrape in one batch; the first is refused in the lane (not UTF-8),
    the exchange raises, and the second's reservation is never given back: 3.94 MiB lost per scrape, for
    the life of the process (3 scrapes: 11.8 MiB of the 16 MiB budget)."""
    bad = frame(b'{"x":"\xff', fin=False) + frame(b'"}', opcode=0x0)
    stray = frame(b'{"method":', fin=False) + frame(b'"y"}', opcode=0x0)
    port = serve(raw_servers.websocket_room(bad + stray + frame(reply_of_size(200))))  # one write
    pool = SessionPool()
    try:
        refused = scrape(pool, port)
    finally:
        pool.close_all()
        pool.reader.stop()
    assert isinstance(refused, CollectionError) and "not UTF-8" in refused.message, refused
    held = pool.budget.shared_bytes - pool.budget.free
    assert held == 0, f"{held / MIB:.2f} MiB of the shared budget never given back"


@pytest.mark.loopback
@pytest.mark.parametrize(
    "unit",
    [frame(b"p", opcode=0x9), frame(b"{}"), frame(b"q", opcode=0xA)],
    ids=["pings", "empty messages", "pongs"],
)
def test_a_flood_of_frames_that_are_not_notifications_is_bounded(
    pool: SessionPool, serve: Serve, unit: bytes
) -> None:
    """The flood bound counts notifications only: 100 000 pings (each answered with a pong, one system call
    each), empty messages or pongs between scrapes are all read and the session is kept. Against a real
    `serve`, four Rooms flooding pings took a healthy Room's probe from ~7 ms to a median of 2.2-2.9 s."""

    def between(line: RoomLine) -> None:
        line.connection.settimeout(10)
        drained = threading.Thread(target=_drain_for, args=(line.connection, 1.0), daemon=True)
        drained.start()
        with contextlib.suppress(OSError):
            line.send(unit * 100_000)
        drained.join(15)

    room = ScriptedRoom(between)
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    assert room.done.wait(20)
    result = scrape(pool, port)
    assert isinstance(result, CollectionError), "100 000 frames at once between scrapes were taken"
    assert "faster than" in result.message


def _drain_for(connection: socket.socket, quiet: float) -> None:
    """Read what the exporter sends (pongs) until it has been quiet for `quiet` seconds."""
    connection.settimeout(quiet)
    with contextlib.suppress(OSError):
        while connection.recv(1 << 20):
            pass


@pytest.mark.loopback
def test_the_sessions_gauge_leaves_out_sessions_whose_room_hung_up(pool: SessionPool, serve: Serve) -> None:
    """The reader closes a session whose Room hangs up at once, but the slot keeps it until the next scrape
    or the idle sweep, and `open_sessions()` (trueconf_exporter_room_sessions) counts it as open: 400 Rooms
    that all closed still showed 400 open sessions against a real `serve`."""
    room = ScriptedRoom(hang_up("close"))
    port = serve(room)
    assert isinstance(scrape(pool, port), RoomReplies)
    connection = session(pool, port)
    assert connection is not None and room.done.wait(5)
    assert until(lambda: connection.closed)
    assert pool.open_sessions() == 0, "a closed session is counted as open"


# --- what a Room sends while a scrape is busy parsing is bounded ---


class GatedBudget(MessageBudget):
    """A budget whose parse lane opens only when `gate` is set: the scrape stays busy with its large reply
    while the Room goes on sending (as when other Rooms' parses hold the lane)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        assert self.gate.wait(10), "the Room never finished sending"
        return super().parse(*args, **kwargs)


def busy_scrape_room(after_reply: bytes, gate: threading.Event) -> Callable[[socket.socket], None]:
    """A raw Room that answers getOutgoingFilesRequests with a large reply, sends `after_reply`, then a ping;
    once its pong comes back (the exporter has read everything before it), it opens `gate`."""

    def handle(connection: socket.socket) -> None:
        buffer = raw_servers._accept_upgrade(connection)
        if buffer is None:
            return
        connection.settimeout(10)
        line = RoomLine(connection, buffer)
        line.read_frame()  # auth
        line.send(frame(raw_servers._AUTH_OK))
        opcode, request = line.read_frame()
        while opcode != 0x1:
            opcode, request = line.read_frame()
        request_id = json.loads(request)["requestId"].encode()
        line.send(
            frame(reply_of_size(200_000).replace(b'"requestId":""', b'"requestId":"' + request_id + b'"'))
        )
        try:
            line.send(after_reply)
            line.send(frame(b"all sent", opcode=0x9))
            while line.read_frame() != (0xA, b"all sent"):
                pass
        except (OSError, AssertionError):  # the exporter dropped the session: it read no further
            pass
        finally:
            gate.set()
        with contextlib.suppress(OSError, AssertionError):
            while True:
                line.read_frame()

    return handle


@pytest.mark.loopback
def test_replies_nobody_asked_for_are_dropped_as_read_while_the_scrape_is_busy(
    pool: SessionPool, serve: Serve
) -> None:
    """Small replies to ids nobody asked (and a second answer to the id asked) are dropped by the reader, not
    queued for a scrape busy parsing: 400 of 60 KB held 23 MiB and, unbounded, OOM-killed the exporter."""
    pool.budget = budget = GatedBudget()
    stray = b'{"method":"getOutgoingFilesRequests","requestId":"%s","result":true,"x":"%s"}'
    strays = b"".join(frame(stray % (b"nobody-%d" % i if i % 2 else b"", b"y" * 60_000)) for i in range(400))
    port = serve(busy_scrape_room(strays, budget.gate))
    tracemalloc.start()
    try:
        result = scrape(pool, port, seconds=15)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, RoomReplies), result
    assert peak < 6 * MIB, f"{peak / MIB:.1f} MiB at the peak"


@pytest.mark.loopback
def test_large_messages_beyond_the_replies_asked_for_drop_the_session(
    pool: SessionPool, serve: Serve
) -> None:
    """A large message cannot be matched before it is parsed: a scrape takes one per request and
    LARGE_MESSAGES_BEYOND_REPLIES more; past them the session is dropped, and the next scrape says why."""
    pool.budget = budget = GatedBudget()
    large = frame(b'{"method":"event","event":"x","pad":"%s"}' % (b"z" * 70_000))
    port = serve(busy_scrape_room(large * (LARGE_MESSAGES_BEYOND_REPLIES + 2), budget.gate))
    first, second = scrape(pool, port, seconds=15), scrape(pool, port)
    said = [
        r.message for r in (first, second) if isinstance(r, CollectionError) and r.reason is Reason.PROTOCOL
    ]
    assert any("large messages beyond the replies" in message for message in said), (first, second)
