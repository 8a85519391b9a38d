"""What one scrape asks a TrueConf Room, in one round trip, within one deadline.

With a SessionPool, the Room's open session is reused (no `auth`), or opened when there is none; a session
found dead (the Room restarted, reset or went silent) is replaced within the same scrape and deadline. Without
a pool, every scrape opens and closes its own connection. Either way all of a scrape's requests go out in one
write and the replies are matched by `requestId`. Only getOutgoingFilesRequests is required; an optional
method the Room never answers is remembered and not asked again of that Room. Every failure leaves as a
CollectionError with one of the fixed reasons, and its text never contains the PIN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from exporter.methods import INCOMING_METHOD, OUTGOING_METHOD, SYSTEM_INFO_METHOD
from exporter.room import protocol
from exporter.room.connection import Exchange, RoomConnection, SessionLostError
from exporter.room.deadline import Deadline
from exporter.room.errors import CollectionError, Reason
from exporter.room.file_requests import INCOMING_LIST_KEY, REPLY_LIST_KEY, Snapshot
from exporter.room.ledger import Direction, Ledger, listing
from exporter.room.request import RoomRequest
from exporter.room.sessions import RoomSlot, SessionPool
from exporter.room.target import RoomTarget
from exporter.room.trace import Trace, shape

MAX_SHAPE_CHARS = 1000
"""A reply's shape in a debug probe's trace is cut here: a hostile reply can have any number of keys."""

STREAMED_LISTS: Mapping[str, protocol.ListReader] = MappingProxyType(
    {REPLY_LIST_KEY: listing, INCOMING_LIST_KEY: listing}
)
"""The reply lists a scrape reads entry by entry, never holding the entries (protocol.decode): each becomes
its aggregate and what the ledger needs of each request."""

LEDGER_LISTS = MappingProxyType(
    {
        OUTGOING_METHOD: (REPLY_LIST_KEY, Direction.OUTGOING),
        INCOMING_METHOD: (INCOMING_LIST_KEY, Direction.INCOMING),
    }
)
"""The replies whose lists the Room's ledger compares with what it saw before."""

REUSE_PATIENCE_SHARE = 0.5
"""A reused session gets this share of the time left to say anything at all; past it, it is taken as dead
(half-open) and replaced with the rest."""


@dataclass(frozen=True)
class RoomReplies:
    """What a scrape asked and what the Room answered."""

    asked: tuple[str, ...]
    replies: dict[str, dict[str, Any]]
    """Each asked method's reply (successful or not) that arrived in time; the outgoing one always."""
    system_info: dict[str, Any] | None = None
    """The session's `getSystemInfo` reply, this scrape's or an earlier one of the same session."""


def fetch_room(
    request: RoomRequest,
    deadline: Deadline,
    *,
    trace: Trace | None = None,
    pool: SessionPool | None = None,
) -> RoomReplies:
    """Ask the Room `request.methods`: the replies, or CollectionError (reason `api` when the Room refused
    getOutgoingFilesRequests, `timeout` when it did not answer it in time).

    With a `pool` and `request.keep_session`, the Room's session is reused or opened and kept; otherwise the
    scrape has a connection of its own (still counted in the pool's logins when there is a pool).
    """
    trace = trace or Trace(deadline.started, detailed=False)
    if pool is None:
        pool = SessionPool(max_message_bytes=request.max_message_bytes)
        try:
            result = _one_connection(request, deadline, trace, pool)
        finally:
            pool.reader.stop()
    else:
        pool.begin(deadline)
        if request.keep_session:
            result = _session(request, deadline, trace, pool)
        else:
            result = _one_connection(request, deadline, trace, pool)
    outgoing = result.replies[OUTGOING_METHOD]
    failure = protocol.failure_text(outgoing, request.pin)
    if failure is not None:
        raise CollectionError(Reason.API, f"the Room refused {OUTGOING_METHOD}: {failure}")
    return result


def _one_connection(request: RoomRequest, deadline: Deadline, trace: Trace, pool: SessionPool) -> RoomReplies:
    """A connection of the scrape's own, closed after it; the Room's ledger still compares its lists."""
    ledger = pool.slot(pool.key(str(request.target), request.pin)).ledger
    ledger.new_session()
    connection = _open(request, deadline, trace, pool, ledger)
    try:
        exchange = _exchange(connection, request.methods, deadline, trace)
    except SessionLostError as lost:
        raise _broken(request.target, lost) from None
    finally:
        connection.close()
    _require_outgoing(request.target, exchange.replies, deadline)
    _observe_lists(ledger, exchange, request.methods)
    return RoomReplies(request.methods, exchange.replies, exchange.replies.get(SYSTEM_INFO_METHOD))


def _open(
    request: RoomRequest, deadline: Deadline, trace: Trace, pool: SessionPool, ledger: Ledger
) -> RoomConnection:
    """A new authorised connection, on the pool's budget, reader and resolver, counted as a login."""
    connection = RoomConnection.open(
        request, deadline, trace, pool.budget, pool.reader, pool.resolver, ledger
    )
    pool.logged_in()
    return connection


def _session(request: RoomRequest, deadline: Deadline, trace: Trace, pool: SessionPool) -> RoomReplies:
    slot = pool.slot(pool.key(str(request.target), request.pin))
    if not slot.lock.acquire(timeout=max(0.0, deadline.left())):
        raise CollectionError(
            Reason.TIMEOUT,
            f"another scrape of {request.target} held its session for the whole {deadline.seconds:g}s",
        )
    try:
        return _on_slot(slot, request, deadline, trace, pool)
    except BaseException:
        slot.drop_connection()  # in an unknown state: never reused
        raise
    finally:
        slot.last_used = deadline.started
        pool.release(slot)


def _on_slot(
    slot: RoomSlot, request: RoomRequest, deadline: Deadline, trace: Trace, pool: SessionPool
) -> RoomReplies:
    asked = _to_ask(slot, request.methods)
    exchange = None
    dropped = _dropped_for_a_fault(slot)
    if dropped is not None:
        trace.step("session", f"dropped since the last scrape: {dropped.message}")
        raise dropped
    if slot.connection is not None:
        trace.step("session", f"reusing the open session ({slot.connection.exchanges} scrapes so far)")
        try:
            exchange = _exchange(
                slot.connection,
                asked,
                deadline,
                trace,
                first_reply_within=deadline.left() * REUSE_PATIENCE_SHARE,
            )
        except SessionLostError as lost:
            trace.step("session", f"lost ({lost}): opening a new one")
            slot.drop_connection()
            asked = _to_ask(slot, request.methods)  # the new session asks the version again
    if exchange is None:
        slot.ledger.new_session()
        slot.connection = _open(request, deadline, trace, pool, slot.ledger)
        try:
            exchange = _exchange(slot.connection, asked, deadline, trace)
        except SessionLostError as lost:
            raise _broken(request.target, lost) from None
    if not exchange.complete:
        missing = set(asked) - set(exchange.replies) - {OUTGOING_METHOD}
        slot.silent_methods |= missing - slot.answered_methods  # late once is not never
        trace.step("session", f"closed: no reply in time to {', '.join(sorted(missing)) or OUTGOING_METHOD}")
        slot.drop_connection()
    _require_outgoing(request.target, exchange.replies, deadline)
    _observe_lists(slot.ledger, exchange, asked)
    slot.answered_methods |= set(exchange.replies)
    if (
        SYSTEM_INFO_METHOD in exchange.replies
        and protocol.failure_text(exchange.replies[SYSTEM_INFO_METHOD]) is None
    ):
        slot.system_info = exchange.replies[SYSTEM_INFO_METHOD]
    return RoomReplies(asked, exchange.replies, slot.system_info)


def _dropped_for_a_fault(slot: RoomSlot) -> CollectionError | None:
    """Why the Room's open session was dropped between scrapes for a fault of the Room's (a flood, a broken
    frame), taking the session off the slot: this scrape says so, the next one opens a new session. A
    session the Room merely closed is not a fault: it is replaced within the scrape."""
    connection = slot.connection
    if connection is None or not isinstance(connection.failure, CollectionError):
        return None
    slot.drop_connection()
    failure = connection.failure
    return CollectionError(failure.reason, f"the session was dropped: {failure.message}")


def _observe_lists(ledger: Ledger, exchange: Exchange, asked: tuple[str, ...]) -> None:
    """Give the ledger each request list the Room answered, at its place in the session's stream. A list
    this Room is not asked for (its collector is off, or the Room never answers it) starts that direction
    empty, so its notifications still count."""
    for method, (key, direction) in LEDGER_LISTS.items():
        if method not in asked:
            ledger.prime(direction, exchange.sequences[OUTGOING_METHOD])
            continue
        reply = exchange.replies.get(method)
        if reply is None or protocol.failure_text(reply) is not None:
            continue
        snapshot = reply.get(key)
        if snapshot is None:  # a successful reply without a list: none (reference §7)
            snapshot = listing(())
        if isinstance(snapshot, Snapshot):
            ledger.observe_list(direction, snapshot, exchange.sequences[method])
            snapshot.listed = None  # up to MAX_TRACKED_IDS records: not kept with the collection


def _to_ask(slot: RoomSlot, methods: tuple[str, ...]) -> tuple[str, ...]:
    """`methods` less those this Room never answers, and less the version when this session knows it."""
    return tuple(
        method
        for method in methods
        if method not in slot.silent_methods and not (method == SYSTEM_INFO_METHOD and slot.system_info)
    )


def _exchange(
    connection: RoomConnection,
    methods: tuple[str, ...],
    deadline: Deadline,
    trace: Trace,
    first_reply_within: float | None = None,
) -> Exchange:
    shapes: dict[str, str] = {}
    if trace.detailed:  # a debug probe: each reply whole, to describe its shape, then reduced
        keep, lists = partial(_reduced, shapes), None
    else:  # a scrape: request lists aggregated as they are decoded
        keep, lists = None, STREAMED_LISTS
    exchange = connection.exchange(
        methods, deadline, first_reply_within=first_reply_within, keep=keep, lists=lists
    )
    for method in methods:
        reply = exchange.replies.get(method)
        outcome = "no reply in time" if reply is None else f"reply {shapes.get(method, '')}"
        trace.step(method, outcome.rstrip())
    return exchange


def _reduced(shapes: dict[str, str], reply: dict[str, Any]) -> dict[str, Any]:
    """A debug probe's reply as kept after the parse lane: its shape noted, then its request list aggregated
    (the entries are dropped there, as a scrape never holds them)."""
    described = shape(reply)
    if len(described) > MAX_SHAPE_CHARS:
        described = described[:MAX_SHAPE_CHARS] + "..."
    shapes[str(reply.get("method"))[:50]] = described
    return protocol.read_lists(reply, STREAMED_LISTS)


def _broken(target: RoomTarget, lost: SessionLostError) -> CollectionError:
    return CollectionError(Reason.PROTOCOL, f"the connection to {target} broke mid-way: {lost}")


def _require_outgoing(target: RoomTarget, replies: dict[str, dict[str, Any]], deadline: Deadline) -> None:
    if OUTGOING_METHOD not in replies:
        raise CollectionError(Reason.TIMEOUT, f"{target} did not answer within {deadline.seconds:g}s")
