"""What a Room's messages may cost the exporter in memory and CPU: bounded before it is paid (room/budget.py).

Each hostile message here is under --max-message-bytes: a limit on bytes alone let them through, and each
cost 25 to 65 times its size once parsed, or seconds of CPU in fragments.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from exporter.collect.collection import collect_room
from exporter.collect.session_metrics import SessionCollector
from exporter.methods import OUTGOING_METHOD
from exporter.room import Deadline, Reason, parse_target
from exporter.room.budget import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FREE_BYTES,
    PARSE_COST_PER_MESSAGE_BYTE,
    MessageBudget,
    parse_cost,
    small_enough,
)
from exporter.room.client import RoomReplies, fetch_room
from exporter.room.errors import CollectionError
from exporter.room.frames import MAX_FRAMES_PER_MESSAGE
from exporter.room.request import RoomRequest
from exporter.room.sessions import SessionPool
from tests import raw_servers
from tests.raw_servers import frame, reply_of_size, websocket_room

MIB = 1024 * 1024
LIST_REPLY = b'{"method":"getOutgoingFilesRequests","requestId":"","result":true,"outgoingFilesRequests":['


def entries_reply(count: int) -> bytes:
    """A successful reply listing `count` realistic entries (about 200 bytes each)."""
    entries = b",".join(
        b'{"id":%d,"fileId":%d,"fileName":"report-%d.pdf","fileSize":%d,"status":%d,"timestamp":%d,'
        b'"peerId":"user%d@room.example.org","peerDisplayName":"User %d","confId":""}'
        % (i, 1000 + i, i, 123456 + i, i % 4, 1733300000 + i, i, i)
        for i in range(count)
    )
    return LIST_REPLY + entries + b"]}"


def empty_objects_reply(size: int) -> bytes:
    """A reply of about `size` bytes whose list is nothing but `{}`: 1.4 million dicts in 4 MiB."""
    count = (size - len(LIST_REPLY) - 2) // 3
    return LIST_REPLY + b",".join([b"{}"] * count) + b"]}"


def fetch(port: int, pool: SessionPool | None = None, timeout: float = 5.0) -> RoomReplies | CollectionError:
    try:
        return fetch_room(
            RoomRequest(parse_target(f"ws://127.0.0.1:{port}"), None, keep_session=False),
            Deadline(timeout),
            pool=pool,
        )
    except CollectionError as error:
        return error


def peak_while(action: Callable[[], object]) -> tuple[object, int]:
    """What `action` returned, and the peak of Python's allocations while it ran (every thread)."""
    tracemalloc.start()
    try:
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture
def room_sending() -> Iterator[Callable[..., int]]:
    """Serve a raw Room that answers auth, then sends the given frames; yields its port."""
    servers = []

    def serve(*frames: bytes) -> int:
        server = raw_servers.tcp_server(websocket_room(*frames))
        servers.append(server)
        return server.__enter__()

    yield serve
    for server in servers:
        server.__exit__(None, None, None)


def test_a_dense_reply_under_the_byte_limit_is_refused_unparsed(room_sending) -> None:
    """4 MiB of `{}`: 97 MiB once parsed; refused by its count of values before json.loads runs."""
    port = room_sending(frame(empty_objects_reply(DEFAULT_MAX_MESSAGE_BYTES - 100)))
    result, peak = peak_while(lambda: fetch(port))
    assert isinstance(result, CollectionError), result
    assert result.reason is Reason.PROTOCOL and "too many JSON values" in result.message
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB for a 4 MiB message"


def test_a_dense_notification_costs_no_more_than_a_dense_reply(room_sending) -> None:
    dense = b'{"method":"event","event":"x","list":[' + b",".join([b"{}"] * 1_300_000) + b"]}"
    port = room_sending(frame(dense), frame(reply_of_size(200)))
    result, peak = peak_while(lambda: fetch(port))
    assert isinstance(result, CollectionError) and result.reason is Reason.PROTOCOL, result
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_ten_thousand_entry_reply_is_read_and_kept_as_its_aggregate(room_sending) -> None:
    port = room_sending(frame(entries_reply(10_000)))
    result, peak = peak_while(lambda: fetch(port))
    assert isinstance(result, RoomReplies), result
    snapshot = result.replies[OUTGOING_METHOD]["outgoingFilesRequests"]
    assert snapshot.total == 10_000 and snapshot.pending == 5_000
    assert small_enough(result.replies[OUTGOING_METHOD]), "the entries are not kept past the parse"
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB for a 2 MB reply"


REFERENCE_ENTRY = (
    b'{"fileRequestId":"0d99602a-82a7-4aea-9a1d-%012d","fileName":"2.jpg","status":2,"size":3200,'
    b'"timestamp":1659251271,"peerId":"820_1@some.server","peerDn":"820_1","fileId":346234218}'
)
"""The reference's entry (§4), 186 bytes: a reply of them counts 11.7 times its bytes by parse_cost."""
NAMED_ENTRY = (
    b'{"id":%d,"fileId":1000,"fileName":"report-1.pdf","fileSize":123456,"status":1,"timestamp":1733300000,'
    b'"peerId":"user1@room.example.org","peerDisplayName":"User 1","confId":""}'
)
"""More fields in fewer bytes (173): 13.5 times its bytes. The reference's fields with the shortest values
(153 bytes, its 36-character fileRequestId the longest) count 13.6 times."""


def reply_up_to(limit: int, entry: bytes) -> tuple[bytes, int]:
    """A successful reply of as many `entry` (numbered) as fit in `limit` bytes, and their count: a Room
    that really lists that many requests."""
    count = (limit - len(LIST_REPLY) - 2) // (len(entry % 0) + 1)
    reply = LIST_REPLY + b",".join(entry % (i % 10) for i in range(count)) + b"]}"
    assert limit - 300 < len(reply) <= limit
    return reply, count


@pytest.mark.parametrize("entry", [REFERENCE_ENTRY, NAMED_ENTRY], ids=["reference", "named"])
@pytest.mark.parametrize("limit", [DEFAULT_MAX_MESSAGE_BYTES, 2 * DEFAULT_MAX_MESSAGE_BYTES])
def test_a_real_reply_at_the_message_limit_is_read(room_sending, limit: int, entry: bytes) -> None:
    """--max-message-bytes is a promise: a Room that really lists that many requests is read, at the default
    and raised (the parse bound follows the limit), with the parse's peak a fraction of its bound."""
    reply, count = reply_up_to(limit, entry)
    port = room_sending(frame(reply))
    request = RoomRequest(parse_target(f"ws://127.0.0.1:{port}"), None, max_message_bytes=limit)
    result, peak = peak_while(lambda: fetch_room(request, Deadline(20.0)))
    assert isinstance(result, RoomReplies), result
    assert result.replies[OUTGOING_METHOD]["outgoingFilesRequests"].total == count
    assert peak < PARSE_COST_PER_MESSAGE_BYTE * limit / 2, f"peak {peak / MIB:.1f} MiB"


def test_a_hostile_reply_cannot_keep_much_besides_its_list(room_sending) -> None:
    """What is kept after the parse lane is small, or the reply is refused: a big `productInfo` is no list."""
    filler = b",".join(b'"k%d":%d' % (i, i) for i in range(2_000))
    reply = b'{"method":"getOutgoingFilesRequests","requestId":"","result":true,"extra":{' + filler + b"}}"
    port = room_sending(frame(reply))
    result = fetch(port)
    assert isinstance(result, CollectionError) and result.reason is Reason.PROTOCOL, result
    assert "besides its request list" in result.message


def test_a_message_in_too_many_fragments_is_refused_quickly(room_sending) -> None:
    """3.5 MB in 2-byte fragments would take 6-7 s of CPU: past MAX_FRAMES_PER_MESSAGE it is refused."""
    body = reply_of_size(MAX_FRAMES_PER_MESSAGE * 2 + 2)
    fragments = [frame(body[:2], fin=False)]
    fragments += [frame(body[i : i + 2], opcode=0x0, fin=False) for i in range(2, len(body) - 2, 2)]
    fragments.append(frame(body[-2:], opcode=0x0))
    port = room_sending(b"".join(fragments))
    started = time.process_time()
    result = fetch(port)
    assert isinstance(result, CollectionError) and result.reason is Reason.PROTOCOL, result
    assert f"more than {MAX_FRAMES_PER_MESSAGE} frames" in result.message
    assert time.process_time() - started < 2.0


def test_a_message_in_fragments_under_the_frame_limit_is_read(room_sending) -> None:
    body = reply_of_size(1_000)
    fragments = [frame(body[:10], fin=False)]
    fragments += [frame(body[i : i + 10], opcode=0x0, fin=False) for i in range(10, len(body) - 10, 10)]
    fragments.append(frame(body[-10:], opcode=0x0))
    result = fetch(room_sending(b"".join(fragments)))
    assert isinstance(result, RoomReplies), result


def test_endless_empty_continuations_end_within_the_deadline(room_sending) -> None:
    port = room_sending(frame(b"{", fin=False) + frame(b"", opcode=0x0, fin=False) * 200_000)
    started = time.monotonic()
    result = fetch(port, timeout=1.0)
    assert isinstance(result, CollectionError), result
    assert time.monotonic() - started < 1.5


def test_bytes_past_the_free_share_wait_for_the_shared_budget_and_are_given_back(room_sending) -> None:
    pool = SessionPool()
    pool.budget = MessageBudget(shared_bytes=FREE_BYTES)  # room for one large message at a time
    port = room_sending(frame(reply_of_size(FREE_BYTES + 1_000)))
    held = pool.budget.free
    assert pool.budget.try_reserve(held)  # another collection holds all of it
    started = time.monotonic()
    waited = fetch(port, pool, timeout=0.5)
    assert isinstance(waited, CollectionError) and waited.reason is Reason.TIMEOUT, waited
    assert "large messages" in waited.message
    assert time.monotonic() - started < 1.0
    pool.budget.release(held)
    result = fetch(port, pool)
    assert isinstance(result, RoomReplies), result
    assert pool.budget.free == FREE_BYTES, "every reservation is given back once the message is parsed"


def test_a_message_larger_than_the_whole_budget_is_refused_at_once(room_sending) -> None:
    pool = SessionPool()
    pool.budget = MessageBudget(shared_bytes=1_000)
    result = fetch(room_sending(frame(reply_of_size(FREE_BYTES + 2_000))), pool)
    assert isinstance(result, CollectionError) and result.reason is Reason.PROTOCOL, result
    assert pool.budget.free == 1_000


def test_a_refused_or_broken_message_gives_its_reservation_back(room_sending) -> None:
    pool = SessionPool()
    budget = pool.budget
    dense = room_sending(frame(empty_objects_reply(2 * MIB)))
    cut = room_sending(frame(b"x" * 10, announced=FREE_BYTES * 4))  # announced, never sent whole
    for port in (dense, cut):
        result = fetch(port, pool, timeout=0.5)
        assert isinstance(result, CollectionError), result
        assert budget.free == budget.shared_bytes, f"leaked after: {result}"


def test_a_session_waiting_for_the_shared_budget_is_read_once_it_is_released(room_sending) -> None:
    pool = SessionPool()
    pool.budget = MessageBudget(shared_bytes=FREE_BYTES)
    port = room_sending(frame(reply_of_size(FREE_BYTES + 1_000)))
    held = pool.budget.free
    assert pool.budget.try_reserve(held)
    results: list[object] = []
    scrape = threading.Thread(target=lambda: results.append(fetch(port, pool, timeout=5.0)))
    scrape.start()
    deadline = time.monotonic() + 4
    while waiting_for_memory(pool) == 0 and time.monotonic() < deadline:  # polls the gauge, bounded
        time.sleep(0.01)  # the poll interval of this bounded wait
    assert waiting_for_memory(pool) == 1, "the reader set the session aside, and /metrics says so"
    pool.budget.release(held)
    scrape.join(5.0)
    assert isinstance(results[0], RoomReplies), results
    assert pool.budget.free == FREE_BYTES
    assert waiting_for_memory(pool) == 0


def waiting_for_memory(pool: SessionPool) -> float:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(pool))
    value = registry.get_sample_value("trueconf_exporter_room_sessions_waiting_for_memory")
    assert value is not None
    return value


def test_the_parse_cost_is_an_upper_bound_on_what_parsing_takes() -> None:
    """The count must never be below the truth, for the shapes that cost most per byte."""
    import json  # noqa: PLC0415

    chain = b"[" + b",".join([b'{"a":' * 50 + b"{}" + b"}" * 50] * 2_000) + b"]"
    shapes = {
        "empty objects": empty_objects_reply(400_000),
        "empty lists": b"[" + b",".join([b"[]"] * 130_000) + b"]",
        "one-key chains": chain,
        "floats": b"[" + b",".join([b"1.5"] * 100_000) + b"]",
        "distinct keys": b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(40_000)) + b"}",
        "real entries": entries_reply(2_000),
        "astral text": b'["' + "\U0001f600".encode() + b"a" * 300_000 + b'"]',
    }
    for name, data in shapes.items():
        text = data.decode()
        tracemalloc.start()
        parsed = json.loads(text)
        taken, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert parse_cost(data, text) - len(data) - text.__sizeof__() >= taken, name
        del parsed


def test_a_failed_collection_keeps_nothing_of_the_message_it_refused(room_sending) -> None:
    """The refusal's traceback held the 4 MiB message and its text (8 MiB) for as long as the failed
    collection was remembered, and with shared collections in a cycle only the garbage collector breaks."""
    port = room_sending(frame(empty_objects_reply(DEFAULT_MAX_MESSAGE_BYTES - 100)))
    target = parse_target(f"ws://127.0.0.1:{port}")
    gc.disable()
    tracemalloc.start()
    try:
        failed = [collect_room(RoomRequest(target, None, keep_session=False), 5.0) for _ in range(3)]
        # what the exporter's side holds (the raw Room in this process keeps its own copy while it serves)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, raw_servers.__file__)]
        )
        held = sum(stat.size for stat in snapshot.statistics("filename"))
    finally:
        tracemalloc.stop()
        gc.enable()
    assert all(collection.error is not None for collection in failed)
    assert held < 4 * MIB, f"{held / MIB:.1f} MiB held by three failed collections"


@pytest.mark.loopback  # raw Rooms served in the test
def test_rooms_sending_fragmented_messages_at_once_never_wait_on_each_others_halves() -> None:
    """Each held its first fragment's share and waited for its second's, which no other could free: 9 of 11
    such Rooms timed out where, taking turns, all would finish in about a second. The first fragment now
    reserves what the whole message may take, so no connection waits while it holds part of the budget."""
    limit = 1024 * 1024
    pool = SessionPool()
    pool.budget = MessageBudget(shared_bytes=2 * (limit - FREE_BYTES))  # two such messages at a time
    message = reply_of_size(900_000)
    servers = [raw_servers.tcp_server(raw_servers.fragmenting_room(message, 0.2)) for _ in range(6)]
    ports = [server.__enter__() for server in servers]
    try:

        def scrape(port: int) -> RoomReplies | CollectionError:
            try:
                return fetch_room(
                    RoomRequest(
                        parse_target(f"ws://127.0.0.1:{port}"),
                        None,
                        max_message_bytes=limit,
                        keep_session=False,
                    ),
                    Deadline(5.0),
                    pool=pool,
                )
            except CollectionError as error:
                return error

        with ThreadPoolExecutor(len(ports)) as executor:
            results = list(executor.map(scrape, ports))
    finally:
        for server in servers:
            server.__exit__(None, None, None)
    assert all(isinstance(result, RoomReplies) for result in results), results
    assert pool.budget.free == pool.budget.shared_bytes


def test_a_control_frame_longer_than_the_rfc_allows_is_refused_unread(room_sending) -> None:
    """A 4 MiB pong was read outside the budget and kept by every idle session."""
    port = room_sending(frame(reply_of_size(200)), frame(b"p" * 200_000, opcode=0xA))
    pool = SessionPool()
    try:
        first = fetch_room(
            RoomRequest(parse_target(f"ws://127.0.0.1:{port}"), None), Deadline(3.0), pool=pool
        )
        assert isinstance(first, RoomReplies)
        with pytest.raises(CollectionError) as second:  # the session's next exchange meets the pong
            fetch_room(RoomRequest(parse_target(f"ws://127.0.0.1:{port}"), None), Deadline(3.0), pool=pool)
        assert second.value.reason is Reason.PROTOCOL and "control frame" in second.value.message
    finally:
        pool.close_all()


def test_a_reply_may_not_keep_much_text_besides_its_list(room_sending) -> None:
    """A getSystemInfo of one 4 MiB string of escaped astral characters is 16 MiB once decoded, and a
    session kept it: what a reply keeps is bounded in bytes as well as values."""
    astral = b"\\ud83d\\ude00" * 100_000
    reply = b'{"method":"getOutgoingFilesRequests","requestId":"","result":true,"note":"' + astral + b'"}'
    result = fetch(room_sending(frame(reply)))
    assert isinstance(result, CollectionError) and result.reason is Reason.PROTOCOL, result
    assert "bytes of text" in result.message


def test_escaped_astral_characters_are_counted_at_their_decoded_width() -> None:
    data = b'["' + b"\\ud83d\\ude00" * 10_000 + b'"]'
    text = data.decode()
    tracemalloc.start()
    parsed = json.loads(text)
    taken, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parse_cost(data, text) - len(data) - sys.getsizeof(text) >= taken
    del parsed


def test_a_dense_list_is_parsed_whole_not_entry_by_entry(room_sending) -> None:
    """`[0,0,...]` read one entry at a time takes 27 times json.loads's CPU (1 MB: 485 ms against 18 ms)."""
    dense = LIST_REPLY + b",".join([b"0"] * 400_000) + b"]}"
    started = time.process_time()
    result = fetch(room_sending(frame(dense)))
    assert isinstance(result, RoomReplies), result
    assert result.replies[OUTGOING_METHOD]["outgoingFilesRequests"].malformed == 400_000
    assert time.process_time() - started < 0.5
