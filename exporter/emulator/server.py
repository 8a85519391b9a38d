"""The emulated TrueConf Room: the WebSocket JSON API on one port and `config.json` on a web port.

It follows the Room API notes in docs/room-api.md, quirks included: replies echo `requestId` (or send `""`),
a wrong PIN gets the documented error reply, unknown methods get `result: false`, and notifications arrive
between a request and its reply. Besides `auth` it answers getOutgoingFilesRequests and the optional methods
getIncomingFilesRequests, getFileTransferAvailability, getAppState and getSystemInfo (reference §4, §5).

Requests may arrive several at once before any reply (a pipelining client): each is answered, in request
order unless a fault says otherwise. Fault modes (see faults.py) make it misbehave on purpose. For tests, the
Room counts what each connection asked (`logins`, `requests`) and can restart or go half-open on demand.

A living Room (`living.py`) sends every authorised connection a notification for each of its transitions,
and counts them: `RunningEmulator.transfers()` is what it did, `mark()` and `transfers_since_mark()` count
from a moment a test chooses, and `pause()` / `resume()` stop and restart its life so that moment can be
made to coincide with an exporter's first reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from exporter.emulator.faults import NOTIFICATION_REPEATS, STORM_BURST, Fault
from exporter.emulator.living import DirectionTotals, LivingRoom, Transitions, progress_event, status_event
from exporter.emulator.scenario import DEMO, EMBEDDED_HTTP_PORT, LOGGED_IN_APP_STATES, Scenario, load_scenario
from exporter.methods import (
    APP_STATE_METHOD,
    AVAILABILITY_METHOD,
    INCOMING_METHOD,
    OUTGOING_METHOD,
    SYSTEM_INFO_METHOD,
    is_optional,
)

log = logging.getLogger(__name__)

OLD_ROOM_UNKNOWN = (OUTGOING_METHOD, INCOMING_METHOD, AVAILABILITY_METHOD)
"""What a Room older than 4.1 does not know (`old-room`): the file-transfer methods."""
OLD_ROOM_PRODUCT_INFO = MappingProxyType({"major": 4, "minor": 0, "revision": 3, "build": 112})
UNKNOWN_METHOD_CODE = 2
MAX_RECORDS = 10_000
"""Connections the Room remembers in `EmulatedRoom.records` (login and request counts per connection)."""
CONFIG_PATH = "/public/default/config.json"
FLOOD_NOTIFICATIONS = 10_000
"""Notifications before the reply with the `notification-flood` fault."""
STORM_NOTIFICATIONS = 50_000
"""Notifications in each `notification-storm` (`EmulatorSettings.storm_notifications`)."""
FINISHED_STATUSES = (0, 3)
"""Failed and processed: what `fleeting-requests` leaves out of the lists."""
HUGE_FRAGMENT_BYTES = 256 * 1024
"""Fragment size of the `huge-fragmented-reply` fault, and write size of `huge-reply`."""
CLOSE_GRACE_SECONDS = 1.0
"""How long a graceful restart, or the emulator stopping, waits for clients to answer its close frames."""
REORDER_WINDOW_SECONDS = 0.05
"""With `reordered-replies`: requests that arrive within this time of the first unanswered one form a batch,
answered last first."""

T = TypeVar("T")
Job = Callable[[], Awaitable[None]]
"""Sends one reply (and whatever a fault sends with it) when called."""


@dataclass
class EmulatorSettings:
    """How the emulated Room listens and behaves. Port 0 means: any free port (printed when ready).

    The Room reads these at every request, so a test may switch the fault or the PIN while it runs."""

    host: str = "127.0.0.1"
    websocket_port: int = 8765
    web_port: int = 0
    pin: str | None = None
    fault: Fault = Fault.NONE
    slow_reply_seconds: float = 30.0
    """How long `slow-reply` and `stalled-reply` hold the getOutgoingFilesRequests reply back."""
    huge_reply_bytes: int = 64 * 1024 * 1024
    restart_seconds: float = 60.0
    """How often the Room restarts (drops every connection) with the `restart` fault."""
    storm_notifications: int = STORM_NOTIFICATIONS
    """How many notifications each `notification-storm` sends to a connection."""


@dataclass
class Ports:
    websocket: int
    web: int


@dataclass
class ConnectionRecord:
    """What one client connection did, for tests that count logins and requests per session."""

    number: int
    """1 for the Room's first connection, and so on."""
    logins: int = 0
    """`auth` requests received on it, answered or not, accepted or not."""
    requests: Counter[str] = field(default_factory=Counter)
    """Every request received on it by method name, `auth` included."""
    open: bool = True
    severed: bool = False
    """Gone half-open: requests are read and never answered, nothing is sent, it is never closed."""
    notifications: int = 0
    """Notifications sent on it (each copy of a repeated one counted), storms included."""
    storms: list[float] = field(default_factory=list)
    """How long each finished `notification-storm` took to be taken by the connection, in seconds."""


@dataclass
class EmulatedRoom:
    """The API behaviour of one Room, over a fixed scenario or a living one."""

    settings: EmulatorSettings
    scenario: Scenario = field(default_factory=Scenario)
    living: LivingRoom | None = None
    connections: set[ServerConnection] = field(default_factory=set)
    """Authorised connections that are not severed: the living Room's events go to these."""
    records: list[ConnectionRecord] = field(default_factory=list)
    """One per WebSocket connection the Room has accepted, in order, open or closed (the latest
    MAX_RECORDS, so a demo that runs for weeks does not grow)."""
    restarts: int = 0
    """How often the Room dropped every connection (`restart()` or the `restart` fault)."""
    paused: bool = False
    """A living Room does not move on while paused (`pause()`); it catches up at its first move after."""
    marked: Transitions = field(default_factory=Transitions)
    """The living Room's transitions when `mark()` was last called (none before: counting from its start)."""
    _tick_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=dict, init=False, repr=False
    )
    _sessions: dict[ServerConnection, _Session] = field(default_factory=dict, init=False, repr=False)
    _live: set[ServerConnection] = field(default_factory=set, init=False, repr=False)
    """Every connection whose TCP connection may still be open, its handler finished or not."""
    _logins: int = field(default=0, init=False, repr=False)
    _closing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    @property
    def logins(self) -> int:
        """`auth` requests received, over all connections (those forgotten from `records` included)."""
        return self._logins

    def count_login(self) -> None:
        self._logins += 1

    @property
    def logins_per_connection(self) -> list[int]:
        """`auth` requests received on each connection, in the order the connections were opened."""
        return [record.logins for record in list(self.records)]

    @property
    def requests(self) -> Counter[str]:
        """Requests received by method name, over all connections."""
        total: Counter[str] = Counter()
        for record in list(self.records):
            total.update(dict(record.requests))  # a copy: the emulator's thread may be adding to it
        return total

    @property
    def open_connections(self) -> int:
        return sum(1 for record in list(self.records) if record.open)

    def outgoing_requests(self) -> list[Any]:
        if self.living is not None:
            return self.fleeting(self.living.outgoing_requests())
        return self.fleeting(self.scenario.outgoing_requests())

    def incoming_requests(self) -> list[Any]:
        if self.living is not None:
            return self.fleeting(self.living.incoming_requests())
        return self.fleeting(self.scenario.incoming_requests())

    def fleeting(self, entries: list[Any]) -> list[Any]:
        """With `fleeting-requests`, the list without its finished requests."""
        if self.settings.fault is not Fault.FLEETING_REQUESTS:
            return entries
        return [e for e in entries if not (isinstance(e, dict) and e.get("status") in FINISHED_STATUSES)]

    def app_state(self) -> int:
        return self.living.app_state if self.living is not None else self.scenario.app_state

    def availability(self) -> int:
        if self.settings.fault is Fault.FILE_TRANSFER_FORBIDDEN:
            return 0
        return self.living.availability if self.living is not None else self.scenario.availability

    def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        if self.settings.fault is Fault.HTTP_INSTEAD_OF_WEBSOCKET:
            return connection.respond(200, "TrueConf Room management\n")
        if self.settings.fault is Fault.NO_HANDSHAKE:
            return _never_answer(connection)
        return None

    async def handle(self, connection: ServerConnection) -> None:
        """One client: `auth` first, then its requests, each answered by a job of its own (see `_Session`)."""
        record = ConnectionRecord(number=self.records[-1].number + 1 if self.records else 1)
        self.records.append(record)
        if len(self.records) > MAX_RECORDS:
            del self.records[: len(self.records) - MAX_RECORDS]
        self._open_transports()  # forget those that are gone
        self._live.add(connection)
        session = _Session(self, connection, record)
        self._sessions[connection] = session
        try:
            if self.settings.fault is Fault.SILENT:
                await connection.wait_closed()
                return
            async for text in connection:
                session.receive(text)
        except ConnectionClosed:
            pass
        finally:
            session.cancel()
            record.open = False
            self._sessions.pop(connection, None)
            self.connections.discard(connection)

    async def drop_all(self, graceful: bool = False) -> int:
        """A Room restart: every open WebSocket connection goes. By default the TCP connection just ends, with
        no close frame, as when the Room's process goes away; `graceful` sends close code 1001 first (and ends
        the connection a second later whatever the client does), as a Room shut down in order. The Room keeps
        listening: new connections work at once."""
        self.restarts += 1
        connections = self._open_transports()
        for connection in connections:
            if graceful:
                closing = asyncio.create_task(_close_then_abort(connection, 1001, "the Room restarts"))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            else:
                connection.transport.abort()
        return len(connections)

    def abort_all(self) -> None:
        """End every open connection's TCP connection at once."""
        for connection in self._open_transports():
            connection.transport.abort()

    def _open_transports(self) -> list[ServerConnection]:
        self._live = {c for c in self._live if not c.transport.is_closing()}
        return list(self._live)

    def sever_all(self) -> int:
        """Every open connection goes half-open: requests on it are read and never answered, nothing more is
        sent on it and it is never closed (until the client gives up). New connections work."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.sever()
        return len(sessions)

    async def restart_periodically(self) -> None:
        """With the `restart` fault, drop every connection every `restart_seconds`."""
        while True:
            await asyncio.sleep(max(self.settings.restart_seconds, 0.05))
            if self.settings.fault is Fault.RESTART:
                await self.drop_all()

    def auth_reply(self, message: dict[str, Any], request_id: str) -> tuple[dict[str, Any], bool]:
        """The documented success reply, or the documented failure for a wrong or missing PIN."""
        pin = self.settings.pin
        if pin is not None:
            credentials = message.get("credentials")
            given = credentials if isinstance(credentials, str) and message.get("type") == "secured" else None
            if given is None or not secrets.compare_digest(given.encode(), pin.encode()):
                return {
                    "method": "auth",
                    "requestId": request_id,
                    "result": False,
                    "resultCode": 3,
                    "error": "Wrong credentials",
                }, False
        return {
            "method": "auth",
            "requestId": request_id,
            "result": True,
            "previleges": 2,
            "token": secrets.token_hex(16),
            "tokenForHttpServer": secrets.token_hex(16),
        }, True

    def unknown_to_this_room(self, method: str) -> bool:
        fault = self.settings.fault
        if fault is Fault.OLD_ROOM:
            return method in OLD_ROOM_UNKNOWN
        if fault is Fault.OPTIONAL_UNKNOWN:
            return is_optional(method)
        return False

    def method_fields(self, method: str) -> dict[str, Any] | None:
        """The method-specific fields of a successful reply, or None for a method this Room does not know."""
        if method == INCOMING_METHOD:
            return {"incomingFilesRequests": self.incoming_requests()}
        if method == AVAILABILITY_METHOD:
            return {"availability": self.availability()}
        if method == APP_STATE_METHOD:
            port = EMBEDDED_HTTP_PORT if self.living is not None else self.scenario.embedded_http_port
            return {"appState": self.app_state(), "embeddedHttpPort": port}
        if method == SYSTEM_INFO_METHOD:
            return self.system_info()
        return None

    def system_info(self) -> dict[str, Any]:
        """`productInfo` is the version; `authInfo` only while the Room is logged in to its server."""
        source: Scenario | LivingRoom = self.living if self.living is not None else self.scenario
        product_info = OLD_ROOM_PRODUCT_INFO if self.settings.fault is Fault.OLD_ROOM else source.product_info
        fields: dict[str, Any] = {"productInfo": dict(product_info)}
        if self.app_state() in LOGGED_IN_APP_STATES:
            fields["authInfo"] = dict(source.auth_info)
        return fields

    def reply(self, method: Any, request_id: str) -> dict[str, Any]:
        """The reply to any request but `auth`: the method's fields, with the scenario's `replyFields` over
        them and its `omitFields` left out; or the unknown-method reply."""
        if not isinstance(method, str) or self.unknown_to_this_room(method):
            return _unknown(method, request_id)
        fields = (
            {"outgoingFilesRequests": self.outgoing_requests()}
            if method == OUTGOING_METHOD
            else self.method_fields(method)
        )
        overrides = self.scenario.reply_fields.get(method)
        if fields is None and overrides is None:
            return _unknown(method, request_id)
        reply = {
            "method": method,
            "requestId": request_id,
            "result": True,
            **(fields or {}),
            **(overrides or {}),
        }
        for name in self.scenario.omit_fields.get(method, ()):
            reply.pop(name, None)
        return reply

    def request_id(self, message: dict[str, Any]) -> str:
        given = message.get("requestId")
        return "" if self.scenario.empty_request_id or given is None else str(given)

    async def notify(self, connection: ServerConnection, event: dict[str, Any]) -> None:
        """Send one notification as the fault in force has it: not at all, once, or NOTIFICATION_REPEATS
        times."""
        fault = self.settings.fault
        if fault is Fault.NO_NOTIFICATIONS:
            return
        text = json.dumps(event)
        copies = NOTIFICATION_REPEATS if fault is Fault.REPEATED_NOTIFICATIONS else 1
        session = self._sessions.get(connection)
        for _ in range(copies):
            await connection.send(text)
            if session is not None:
                session.record.notifications += 1

    def filler(self, progress_only: bool = False) -> Callable[[int], dict[str, Any]]:
        """The n-th notification of those a busy Room sends besides its transitions (before a reply, in a
        flood or a storm). A fixed Room alternates the progress and the status of its outgoing entries as
        they are listed (or progress only); a living Room sends the progress of what it is downloading (or its
        app state), never a status: its status notifications are its transitions."""
        if self.living is not None:
            events = self.living.progress_events()
            return lambda n: events[n % len(events)]
        entries = [e for e in self.outgoing_requests() if isinstance(e, dict)] or [{"fileRequestId": "demo"}]

        def make(n: int) -> dict[str, Any]:
            entry = entries[n % len(entries)]
            return progress_event(entry, n % 100) if progress_only or n % 2 == 0 else status_event(entry)

        return make

    async def send_notifications(self, connection: ServerConnection) -> None:
        """Events that a busy Room sends between a request and its reply (reference §2)."""
        fault = self.settings.fault
        if fault is Fault.NO_NOTIFICATIONS:
            return
        flood = fault is Fault.NOTIFICATION_FLOOD
        count = FLOOD_NOTIFICATIONS if flood else self.scenario.notifications_before_reply
        filler = self.filler()
        n = 0
        while n < count or fault is Fault.ENDLESS_NOTIFICATIONS:
            await self.notify(connection, filler(n))
            if fault is Fault.ENDLESS_NOTIFICATIONS:
                await asyncio.sleep(0.001)  # a stream, not a busy loop that starves every other connection
            n += 1

    async def storm(self, connection: ServerConnection, record: ConnectionRecord) -> None:
        """`notification-storm`: `storm_notifications` progress notifications, STORM_BURST at a time with
        a turn of the event loop between bursts (so requests are answered meanwhile), each waiting only for
        the connection to take it. Ends early when the fault is switched off."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while sent < self.settings.storm_notifications:
            if self.settings.fault is not Fault.NOTIFICATION_STORM:
                return
            filler = self.filler(progress_only=True)
            burst = min(STORM_BURST, self.settings.storm_notifications - sent)
            for n in range(sent, sent + burst):
                await self.notify(connection, filler(n))
            sent += burst
            await asyncio.sleep(0)
        record.storms.append(loop.time() - started)

    async def reply_outgoing(self, connection: ServerConnection, request_id: str) -> None:
        """Events, then the getOutgoingFilesRequests reply, as the fault in force shapes it."""
        fault = self.settings.fault
        await self.send_notifications(connection)
        reply = self.reply(OUTGOING_METHOD, request_id)
        if fault in (Fault.SLOW_REPLY, Fault.STALLED_REPLY):
            await asyncio.sleep(self.settings.slow_reply_seconds)
            reply = self.reply(OUTGOING_METHOD, request_id)  # what the Room holds when it finally answers
        if fault is Fault.NOT_JSON:
            await connection.send("<html>this is not JSON")
        elif fault is Fault.NOT_OBJECT:
            await connection.send(json.dumps([reply]))
        elif fault is Fault.BINARY_FRAME:
            await connection.send(json.dumps(reply).encode())
        elif fault is Fault.DEEP_JSON:
            await connection.send("[" * 100_000 + "]" * 100_000)
        elif fault is Fault.MISSING_LIST:
            reply.pop("outgoingFilesRequests", None)
            await connection.send(json.dumps(reply))
        elif fault is Fault.CLOSE_BEFORE_REPLY:
            await connection.close()
        elif fault is Fault.CLOSE_MID_REPLY:
            await connection.send(_first_fragment_then_drop(connection, json.dumps(reply)))
        elif fault is Fault.HUGE_FRAGMENTED_REPLY:
            await connection.send(_huge_reply(reply, self.settings.huge_reply_bytes))
        elif fault is Fault.HUGE_REPLY:
            await _send_huge_single_frame(connection, reply, self.settings.huge_reply_bytes)
        else:
            await connection.send(json.dumps(reply))

    async def tick(self) -> None:
        """Move the living Room on every `tick_seconds` and tell every authorised client what happened, as
        the real Room does (each client in order, all clients at once)."""
        while self.living is not None:
            await asyncio.sleep(self.living.tick_seconds)
            async with self.tick_lock():
                if self.paused:
                    continue
                events = self.living.advance(time.time())
                if events:
                    await asyncio.gather(*(self._tell(c, events) for c in list(self.connections)))

    async def _tell(self, connection: ServerConnection, events: list[dict[str, Any]]) -> None:
        with contextlib.suppress(ConnectionClosed):
            for event in events:
                await self.notify(connection, event)

    def tick_lock(self) -> asyncio.Lock:
        """Held while the living Room moves on and its notifications are sent (one per event loop: a Room
        may be served again by another emulator)."""
        return self._tick_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    async def pause(self) -> None:
        """Stop the living Room, once what it did last has been sent to every client."""
        async with self.tick_lock():
            self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def mark(self) -> None:
        """Count from now: `transfers(since_mark=True)` is what happened after this (once what the Room did
        before has been sent to every client)."""
        async with self.tick_lock():
            self.marked = self.transitions()

    def transitions(self) -> Transitions:
        """A copy of the living Room's transitions (none for a fixed Room)."""
        return self.living.transitions.copy() if self.living is not None else Transitions()

    def transfers(self, since_mark: bool = False) -> dict[str, DirectionTotals]:
        """What the Room did since it started living (or since `mark()`), as plain dicts."""
        transitions = self.transitions()
        return (transitions.since(self.marked) if since_mark else transitions).as_dicts()


class _Session:
    """One connection's requests and the jobs that answer them.

    The connection is read without waiting for any reply: each request becomes a job. By default a job sends
    its reply only after the previous request's reply went out, so replies keep request order (a slow reply
    holds back those behind it, as on a Room that answers one request at a time). `stalled-reply` takes the
    outgoing reply out of that order; `reordered-replies` answers each batch last first; `optional-silent`
    and `no-auth-reply` make no job at all."""

    def __init__(self, room: EmulatedRoom, connection: ServerConnection, record: ConnectionRecord) -> None:
        self.room = room
        self.connection = connection
        self.record = record
        self.authorised = False
        self.tail: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.batch: list[Job] | None = None
        self.storming: asyncio.Task[None] | None = None

    def start_storm(self) -> None:
        """With `notification-storm`: a storm, after the replies due now, unless one is under way."""
        if self.room.settings.fault is not Fault.NOTIFICATION_STORM or self.record.severed:
            return
        if self.storming is not None and not self.storming.done():
            return
        after = self.tail

        async def storm() -> None:
            if after is not None and not after.done():
                await asyncio.wait([after])
            await self.room.storm(self.connection, self.record)

        self.storming = self.spawn(storm())

    def receive(self, text: str | bytes) -> None:
        message = _decode(text)
        if message is None:
            return
        method = message.get("method")
        self.record.requests[str(method)] += 1
        if method == "auth":
            self.record.logins += 1
            self.room.count_login()
        second_scrape = method == OUTGOING_METHOD and self.record.requests[method] > 1
        if method == OUTGOING_METHOD and self.room.settings.fault is Fault.HALF_OPEN:
            # After this scrape's requests (one write), nothing more is read, as across a dead network:
            # not even a ping gets its pong. The replies already due still go out.
            self.connection.transport.pause_reading()
        if second_scrape and self.room.settings.fault is Fault.HALF_OPEN:
            self.record.severed = True
            self.room.connections.discard(self.connection)
        if self.record.severed:
            return
        room, fault = self.room, self.room.settings.fault
        request_id = room.request_id(message)
        if method == "auth":
            if fault is Fault.NO_AUTH_REPLY:
                return
            reply, self.authorised = room.auth_reply(message, request_id)
            if self.authorised:
                room.connections.add(self.connection)
            self.in_order(self.sender(reply))
            if self.authorised:
                self.start_storm()
        elif not self.authorised:
            self.in_order(self.sender(_error(method, request_id, "Not authorized", 1)))
        elif is_optional(method) and fault is Fault.OPTIONAL_SILENT:
            return
        elif method == OUTGOING_METHOD and fault is Fault.STALLED_REPLY:
            self.spawn(self.outgoing(request_id)())
        else:
            answers_outgoing = method == OUTGOING_METHOD and not room.unknown_to_this_room(method)
            job = (
                self.outgoing(request_id) if answers_outgoing else self.sender(room.reply, method, request_id)
            )
            if fault is Fault.REORDERED_REPLIES:
                self.reversed_in_batch(job)
            else:
                self.in_order(job)

    def sender(self, reply: dict[str, Any] | Callable[..., dict[str, Any]], *args: Any) -> Job:
        """A job that sends `reply` (or what `reply(*args)` gives when the job runs)."""

        async def send() -> None:
            message = reply(*args) if callable(reply) else reply
            await self.connection.send(json.dumps(message))

        return send

    def outgoing(self, request_id: str) -> Job:
        async def send() -> None:
            await self.room.reply_outgoing(self.connection, request_id)
            self.start_storm()

        return send

    def in_order(self, job: Job) -> None:
        previous = self.tail

        async def run() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await job()

        self.tail = self.spawn(run())

    def reversed_in_batch(self, job: Job) -> None:
        if self.batch is None:
            self.batch = []
            self.in_order(self.flush_batch)
        self.batch.append(job)

    async def flush_batch(self) -> None:
        await asyncio.sleep(REORDER_WINDOW_SECONDS)
        batch, self.batch = self.batch or [], None
        for job in reversed(batch):
            await job()

    def spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self.guarded(coroutine))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def guarded(self, coroutine: Awaitable[None]) -> None:
        try:
            await coroutine
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("the emulated Room failed to answer a request")

    def sever(self) -> None:
        self.record.severed = True
        self.room.connections.discard(self.connection)
        self.cancel()

    def cancel(self) -> None:
        """Stop every job of this connection (but the one calling, which ends by itself)."""
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()


async def _close_then_abort(connection: ServerConnection, code: int, reason: str) -> None:
    """Close with `code`, and end the TCP connection after CLOSE_GRACE_SECONDS if the client has not."""
    closing = asyncio.ensure_future(connection.close(code, reason))
    await asyncio.wait([closing], timeout=CLOSE_GRACE_SECONDS)
    connection.transport.abort()


async def _first_fragment_then_drop(connection: ServerConnection, text: str) -> AsyncIterator[str]:
    yield text[: len(text) // 2]
    connection.transport.abort()
    yield text[len(text) // 2 :]


async def _never_answer(connection: ServerConnection) -> Response:
    """Hold the upgrade request unanswered until the client gives up (or websockets' open timeout passes)."""
    await connection.wait_closed()
    return connection.respond(503, "never sent\n")


async def _huge_reply(reply: dict[str, Any], size: int) -> AsyncIterator[str]:
    """A valid reply of about `size` bytes, made a fragment at a time so the emulator never holds it whole.

    The list repeats the reply's first entry (or a documented one), so a client allowed to read it all gets a
    parseable reply.
    """
    entries = reply["outgoingFilesRequests"]
    entry = json.dumps(entries[0] if entries else dict(_HUGE_ENTRY))
    head = json.dumps({**reply, "outgoingFilesRequests": []})[: -len("]}")]
    count = max(1, (size - len(head) - 2) // (len(entry) + 1))
    per_fragment = max(1, HUGE_FRAGMENT_BYTES // (len(entry) + 1))
    yield head
    sent = 0
    while sent < count:
        n = min(per_fragment, count - sent)
        yield ("," if sent else "") + ",".join([entry] * n)
        sent += n
    yield "]}"


_HUGE_ENTRY = MappingProxyType(
    {
        "fileRequestId": "0d99602a-82a7-4aea-9a1d-f0b612bab793",
        "fileName": "2.jpg",
        "status": 2,
        "size": 3200,
        "timestamp": 1659251271,
        "peerId": "820_1@some.server",
        "peerDn": "820_1",
    }
)


async def _send_huge_single_frame(connection: ServerConnection, reply: dict[str, Any], size: int) -> None:
    """The huge reply as ONE text frame, written straight to the transport: websockets would need the whole
    payload in memory first. The frame header announces the full length before the first payload byte, which
    is what a client must check. A complete frame leaves the stream consistent for websockets' own writes."""
    length = sum([len(fragment.encode()) async for fragment in _huge_reply(reply, size)])  # one at a time
    transport = connection.transport
    transport.write(bytes([0x81, 127]) + length.to_bytes(8, "big"))  # FIN + text, 64-bit length, no mask
    async for fragment in _huge_reply(reply, size):
        if transport.is_closing():
            return
        transport.write(fragment.encode())
        while transport.get_write_buffer_size() > HUGE_FRAGMENT_BYTES * 4 and not transport.is_closing():
            await asyncio.sleep(0.005)


def _decode(text: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _error(method: Any, request_id: str, text: str, code: int) -> dict[str, Any]:
    return {"method": method, "requestId": request_id, "result": False, "resultCode": code, "error": text}


def _unknown(method: Any, request_id: str) -> dict[str, Any]:
    """What a Room answers a method it does not know (reference §7: `result: false`; the text is ours)."""
    return _error(method, request_id, f"Unknown method: {method}", UNKNOWN_METHOD_CODE)


def config_document(websocket_port: int, fault: Fault) -> bytes:
    """`/public/default/config.json` as the Room serves it (reference §1)."""
    if fault is Fault.BAD_CONFIG_JSON:
        return json.dumps({"config": {"websocket": {"hostname": None}}}).encode()
    return json.dumps(
        {
            "config": {
                "websocket": {"hostname": None, "port": websocket_port},
                "http": {"hostname": None, "port": 8766},
            }
        }
    ).encode()


def make_web_server(host: str, port: int, document: Callable[[], bytes]) -> ThreadingHTTPServer:
    """The Room's web UI, reduced to the one document the exporter reads."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != CONFIG_PATH:
                self.send_error(404)
                return
            body = document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("web %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class RunningEmulator:
    """An emulated Room served from a background thread: for `demo`, tests and anything embedding it."""

    def __init__(self, room: EmulatedRoom) -> None:
        self.room = room
        self.ports: Ports | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="room-emulator", daemon=True)
        self._web: ThreadingHTTPServer | None = None
        self._error: BaseException | None = None

    def start(self) -> Ports:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        assert self.ports is not None
        return self.ports

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=5)

    def restart(self, graceful: bool = False) -> int:
        """Drop every open WebSocket connection now, as a Room restart does (see `EmulatedRoom.drop_all`);
        returns how many were dropped. The Room keeps its ports and state and accepts new connections."""
        return asyncio.run_coroutine_threadsafe(self.room.drop_all(graceful), self._loop).result(timeout=5)

    def sever(self) -> int:
        """Make every open connection half-open: read, never answered, never closed; returns how many."""
        return asyncio.run_coroutine_threadsafe(self._sever(), self._loop).result(timeout=5)

    async def _sever(self) -> int:
        return self.room.sever_all()

    def pause(self) -> None:
        """Stop the living Room's life until `resume()`, once what it did last has been sent to every client
        (so a client that asks something now gets its reply after every notification of what came before).
        Nothing changes while paused; at its first move after `resume()` it catches up the time it lost."""
        self._on_loop(self.room.pause())

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self.room.resume)

    def mark(self) -> None:
        """Start counting now: `transfers_since_mark()` is what the Room does from here on. Pause the Room,
        let the exporter read it (history), mark, resume: the exporter's counters and the Room's then count
        the same transitions."""
        self._on_loop(self.room.mark())

    def transfers(self) -> dict[str, DirectionTotals]:
        """What the living Room did since it started living (its `start` history excluded):
        `{"outgoing": ..., "incoming": ...}`, each `{"created": {side: n}, "finished": {(status, side): n},
        "processed_bytes": {side: n}}`, side `peer` or `conference`, status `processed` or `failed`, every
        key present. All zero for a fixed Room."""
        return self._on_loop(self._transfers(since_mark=False))

    def transfers_since_mark(self) -> dict[str, DirectionTotals]:
        """`transfers()` counted from the last `mark()` (from the start when never marked)."""
        return self._on_loop(self._transfers(since_mark=True))

    async def _transfers(self, since_mark: bool) -> dict[str, DirectionTotals]:
        return self.room.transfers(since_mark)

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the emulator's event loop, between two of its steps, and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=5)

    @property
    def logins(self) -> int:
        """`auth` requests the Room received, over all connections (see `EmulatedRoom.records` for more)."""
        return self.room.logins

    @property
    def logins_per_connection(self) -> list[int]:
        """`auth` requests received on each connection the Room accepted, oldest first."""
        return self.room.logins_per_connection

    @property
    def requests(self) -> Counter[str]:
        """Requests the Room received, by method name."""
        return self.room.requests

    @property
    def open_connections(self) -> int:
        return self.room.open_connections

    def serve_forever(self) -> None:
        """Block until interrupted (Ctrl-C), then shut down."""
        try:
            self._thread.join()
        finally:
            self.stop()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # noqa: BLE001 - handed to the starting thread
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        settings = self.room.settings
        self._stop = asyncio.Event()
        server: Server
        async with serve(
            self.room.handle,
            settings.host,
            settings.websocket_port,
            process_request=self.room.process_request,
            ping_interval=None,
        ) as server:
            websocket_port = server.sockets[0].getsockname()[1]
            self._web = make_web_server(
                settings.host, settings.web_port, lambda: config_document(websocket_port, settings.fault)
            )
            threading.Thread(
                target=self._web.serve_forever, kwargs={"poll_interval": 0.05}, name="room-web", daemon=True
            ).start()
            self.ports = Ports(websocket=websocket_port, web=self._web.server_address[1])
            ticker = asyncio.create_task(self.room.tick())
            restarter = asyncio.create_task(self.room.restart_periodically())
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                ticker.cancel()
                restarter.cancel()
                for task in asyncio.all_tasks():  # handlers held back by a fault must not delay shutdown
                    if task is not asyncio.current_task():
                        task.cancel()
                server.close()  # close frames 1001 to the open connections; clients that never answer ...
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(server.wait_closed(), CLOSE_GRACE_SECONDS)
                self.room.abort_all()  # ... do not hold the emulator up for websockets' 10 s close timeout
                self._web.shutdown()
                self._web.server_close()


def build_room(scenario: str, settings: EmulatorSettings) -> EmulatedRoom:
    """The Room for a scenario name or file: `demo` lives, anything else is fixed."""
    if scenario == DEMO:
        living = LivingRoom()
        living.start(time.time())
        return EmulatedRoom(settings, living=living)
    return EmulatedRoom(settings, scenario=load_scenario(scenario))
