"""The emulated TrueConf Room: the WebSocket JSON API on one port and `config.json` on a web port.

It follows the Room API notes in docs/room-api.md, quirks included: replies echo `requestId` (or send `""`),
a wrong PIN gets the documented error reply, unknown methods get `result: false`, and notifications arrive
between a request and its reply. Fault modes (see faults.py) make it misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from exporter.emulator.faults import Fault
from exporter.emulator.living import LivingRoom, progress_event, status_event
from exporter.emulator.scenario import DEMO, Scenario, load_scenario

log = logging.getLogger(__name__)

OUTGOING_METHOD = "getOutgoingFilesRequests"
CONFIG_PATH = "/public/default/config.json"
TICK_SECONDS = 1.0
"""How often the living demo Room moves on."""
FLOOD_NOTIFICATIONS = 10_000
"""Notifications before the reply with the `notification-flood` fault."""
HUGE_FRAGMENT_BYTES = 256 * 1024
"""Fragment size of the `huge-fragmented-reply` fault, and write size of `huge-reply`."""


@dataclass
class EmulatorSettings:
    """How the emulated Room listens and behaves. Port 0 means: any free port (printed when ready)."""

    host: str = "127.0.0.1"
    websocket_port: int = 8765
    web_port: int = 0
    pin: str | None = None
    fault: Fault = Fault.NONE
    slow_reply_seconds: float = 30.0
    huge_reply_bytes: int = 64 * 1024 * 1024


@dataclass
class Ports:
    websocket: int
    web: int


@dataclass
class EmulatedRoom:
    """The API behaviour of one Room, over a fixed scenario or a living one."""

    settings: EmulatorSettings
    scenario: Scenario = field(default_factory=Scenario)
    living: LivingRoom | None = None
    connections: set[ServerConnection] = field(default_factory=set)

    def outgoing_requests(self) -> list[Any]:
        if self.living is not None:
            return self.living.outgoing_requests()
        return self.scenario.outgoing_requests()

    def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        if self.settings.fault is Fault.HTTP_INSTEAD_OF_WEBSOCKET:
            return connection.respond(200, "TrueConf Room management\n")
        if self.settings.fault is Fault.NO_HANDSHAKE:
            return _never_answer(connection)
        return None

    async def handle(self, connection: ServerConnection) -> None:
        """One client: authorise first, then answer requests in order."""
        if self.settings.fault is Fault.SILENT:
            await connection.wait_closed()
            return
        authorised = False
        try:
            async for text in connection:
                message = _decode(text)
                if message is None:
                    continue
                method = message.get("method")
                request_id = "" if self.scenario.empty_request_id else str(message.get("requestId", ""))
                if method == "auth":
                    if self.settings.fault is Fault.NO_AUTH_REPLY:
                        continue
                    reply, authorised = self.auth_reply(message, request_id)
                    await connection.send(json.dumps(reply))
                    if authorised:
                        self.connections.add(connection)
                elif not authorised:
                    await connection.send(json.dumps(_error(method, request_id, "Not authorized", 1)))
                elif method == OUTGOING_METHOD and self.settings.fault is not Fault.OLD_ROOM:
                    await self.send_notifications(connection)
                    await self.reply_outgoing(connection, request_id)
                else:
                    await connection.send(json.dumps(self.other_reply(method, request_id)))
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)

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

    async def send_notifications(self, connection: ServerConnection) -> None:
        """Events that a busy Room sends between a request and its reply (reference §2)."""
        entries = [e for e in self.outgoing_requests() if isinstance(e, dict)] or [{"fileRequestId": "demo"}]
        fault = self.settings.fault
        flood = fault is Fault.NOTIFICATION_FLOOD
        count = FLOOD_NOTIFICATIONS if flood else self.scenario.notifications_before_reply
        n = 0
        while n < count or fault is Fault.ENDLESS_NOTIFICATIONS:
            entry = entries[n % len(entries)]
            event = progress_event(entry, n % 100) if n % 2 == 0 else status_event(entry)
            await connection.send(json.dumps(event))
            if fault is Fault.ENDLESS_NOTIFICATIONS:
                await asyncio.sleep(0.001)  # a stream, not a busy loop that starves every other connection
            n += 1

    async def reply_outgoing(self, connection: ServerConnection, request_id: str) -> None:
        reply = {
            "method": OUTGOING_METHOD,
            "requestId": request_id,
            "result": True,
            "outgoingFilesRequests": self.outgoing_requests(),
        }
        fault = self.settings.fault
        if fault is Fault.SLOW_REPLY:
            await asyncio.sleep(self.settings.slow_reply_seconds)
        if fault is Fault.NOT_JSON:
            await connection.send("<html>this is not JSON")
        elif fault is Fault.NOT_OBJECT:
            await connection.send(json.dumps([reply]))
        elif fault is Fault.BINARY_FRAME:
            await connection.send(json.dumps(reply).encode())
        elif fault is Fault.DEEP_JSON:
            await connection.send("[" * 100_000 + "]" * 100_000)
        elif fault is Fault.MISSING_LIST:
            del reply["outgoingFilesRequests"]
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

    def other_reply(self, method: Any, request_id: str) -> dict[str, Any]:
        """A few harmless read-only methods; anything else is unknown, as on a Room that lacks it."""
        if method == "getAppState":
            return {"method": method, "requestId": request_id, "result": True, "appState": 3}
        if method == "getFileTransferAvailability":
            return {"method": method, "requestId": request_id, "result": True, "availability": 3}
        return _error(method, request_id, f"Unknown method: {method}", 2)

    async def tick(self) -> None:
        """Move the living Room on and tell every authorised client, as the real Room does."""
        while self.living is not None:
            await asyncio.sleep(TICK_SECONDS)
            for event in self.living.advance(time.time()):
                for connection in list(self.connections):
                    with contextlib.suppress(ConnectionClosed):
                        await connection.send(json.dumps(event))


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
    entry = json.dumps(entries[0] if entries else _HUGE_ENTRY)
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


_HUGE_ENTRY = {
    "fileRequestId": "0d99602a-82a7-4aea-9a1d-f0b612bab793",
    "fileName": "2.jpg",
    "status": 2,
    "size": 3200,
    "timestamp": 1659251271,
    "peerId": "820_1@some.server",
    "peerDn": "820_1",
}


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
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                ticker.cancel()
                for task in asyncio.all_tasks():  # handlers held back by a fault must not delay shutdown
                    if task is not asyncio.current_task():
                        task.cancel()
                self._web.shutdown()
                self._web.server_close()


def build_room(scenario: str, settings: EmulatorSettings) -> EmulatedRoom:
    """The Room for a scenario name or file: `demo` lives, anything else is fixed."""
    if scenario == DEMO:
        living = LivingRoom()
        living.start(time.time())
        return EmulatedRoom(settings, living=living)
    return EmulatedRoom(settings, scenario=load_scenario(scenario))
