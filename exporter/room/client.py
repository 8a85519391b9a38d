"""One conversation with a TrueConf Room over its WebSocket JSON API, bounded by one deadline.

look the host up once -> (discovery) -> connect -> `auth` -> wait for its reply -> one request -> read until
its reply -> close. Every connection goes to an address of that one lookup (room.connect). Notifications and
unrelated replies that arrive in between are skipped, however many. Every failure leaves as a
CollectionError with one of the fixed reasons, and its text never contains the PIN.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from http import HTTPStatus
from typing import Any

import websocket

from exporter.room import protocol
from exporter.room.connect import addresses_for, open_tcp
from exporter.room.deadline import Deadline, SocketWatchdog
from exporter.room.discovery import discover_websocket_port
from exporter.room.errors import CollectionError, Reason, describe
from exporter.room.frames import DEFAULT_MAX_MESSAGE_BYTES, BoundedWebSocket
from exporter.room.target import RoomTarget, host_port
from exporter.room.trace import Trace, shape

OUTGOING_METHOD = "getOutgoingFilesRequests"
CLOSE_WAIT_SECONDS = 0.25
"""How long a finished collection waits for the Room to acknowledge the close; the data is already in."""

_request_ids = itertools.count(1)
_id_prefix = f"tcx{os.getpid()}-"


def _next_request_id() -> str:
    """A request id unique within this process, so replies are never matched to another scrape's request."""
    return f"{_id_prefix}{next(_request_ids)}"


class RoomSession:
    """An open WebSocket to a Room, with the deadline every call on it shares; `_converse` opens it."""

    def __init__(self, ws: BoundedWebSocket, deadline: Deadline) -> None:
        self._ws = ws
        self._deadline = deadline

    def call(self, method: str, phase: str, **params: Any) -> dict[str, Any]:
        """Send one request and return its reply (successful or not) once it arrives."""
        request_id = _next_request_id()
        self._ws.settimeout(self._deadline.remaining(phase))
        self._ws.send(protocol.request(method, request_id, **params))
        while True:
            message = self._receive(phase)
            if protocol.is_reply_to(message, method, request_id):
                return message

    def _receive(self, phase: str) -> dict[str, Any]:
        self._ws.settimeout(self._deadline.remaining(phase))
        opcode, data = self._ws.recv_message()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise CollectionError(Reason.PROTOCOL, f"the Room closed the connection during {phase}")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            raise CollectionError(Reason.PROTOCOL, f"the Room sent a binary frame during {phase}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CollectionError(
                Reason.PROTOCOL, f"the Room sent text that is not UTF-8 during {phase}"
            ) from None
        return protocol.decode(text)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close(timeout=max(0.0, min(self._deadline.left(), CLOSE_WAIT_SECONDS)))


def _handshake(url: str, sock: socket.socket, deadline: Deadline, max_message_bytes: int) -> BoundedWebSocket:
    """The WebSocket upgrade on `sock`, the one connection this collection opened, and nowhere else.

    websocket-client follows up to 3 redirects by default, each on a new connection of its own (past the
    allow-list, the watchdog and any proxy rule): `redirect_limit=0` keeps a 3xx as the answer, and any
    answer other than 101 is a `connect` failure naming its status.
    """
    # RoomSession decodes every text message itself (C speed); websocket-client's pure-Python UTF-8 check of
    # the same bytes costs ~0.4 s per MiB of CPU that no deadline can interrupt.
    ws = BoundedWebSocket(
        max_message_bytes=max_message_bytes, enable_multithread=False, skip_utf8_validation=True
    )
    try:
        ws.settimeout(deadline.remaining("handshake"))
        # websocket-client leaves WebSocket.connect unannotated
        ws.connect(url, socket=sock, suppress_origin=True, redirect_limit=0)  # type: ignore[no-untyped-call]
    except CollectionError:
        raise
    except websocket.WebSocketBadStatusException as error:
        raise CollectionError(
            Reason.CONNECT, f"{url} answered HTTP {error.status_code} instead of a WebSocket upgrade"
        ) from None
    except (TimeoutError, websocket.WebSocketTimeoutException):
        raise CollectionError(
            Reason.TIMEOUT, f"WebSocket handshake with {url} did not complete in time"
        ) from None
    except (OSError, websocket.WebSocketException, ValueError) as error:
        # websocket-client 1.9 raises on a redirect it may not follow; 1.7 and 1.8 return with the 3xx.
        raise _refused_upgrade(ws, url) or deadline.failure(
            Reason.CONNECT,
            f"WebSocket handshake with {url} failed: {describe(error)}",
            f"WebSocket handshake with {url} did not complete in time",
        ) from None
    refused = _refused_upgrade(ws, url)
    if refused is not None:
        raise refused
    return ws


def _refused_upgrade(ws: BoundedWebSocket, url: str) -> CollectionError | None:
    """A `connect` failure naming the status when the Room answered the upgrade with anything but 101."""
    status = ws.getstatus()
    if status is None or status == HTTPStatus.SWITCHING_PROTOCOLS:
        return None
    where = (ws.getheaders() or {}).get("location")
    redirect = f" (a redirect to {where!r}, not followed)" if where else ""
    return CollectionError(
        Reason.CONNECT, f"{url} answered HTTP {status} instead of a WebSocket upgrade{redirect}"
    )


def _authorise(session: RoomSession, pin: str | None) -> None:
    params = {"type": "secured", "credentials": pin} if pin is not None else {"type": "unsecured"}
    reply = session.call("auth", "auth", **params)
    failure = protocol.failure_text(reply)
    if failure is not None:
        raise CollectionError(Reason.AUTH, f"the Room refused {_auth_kind(pin)} authorisation: {failure}")


def _auth_kind(pin: str | None) -> str:
    return "secured (PIN)" if pin is not None else "unsecured (no PIN)"


def _converse(
    target: RoomTarget,
    pin: str | None,
    deadline: Deadline,
    method: str,
    max_message_bytes: int,
    trace: Trace,
) -> dict[str, Any]:
    addresses = addresses_for(target, deadline)  # the one lookup: every connection below goes to these
    trace.step("lookup", ", ".join(map(str, addresses)))
    port = target.port
    if target.discover:
        port, answered = discover_websocket_port(target, addresses, deadline)
        addresses = (answered,)
        trace.step("discovery", f"config.json from {answered} names WebSocket port {port}")
    url = target.websocket_url(port)
    sock, address = open_tcp(target.host, addresses, port, deadline, "connect")
    trace.step("connect", f"TCP to {host_port(str(address), port)}")
    try:
        with SocketWatchdog(deadline, sock):
            session = RoomSession(_handshake(url, sock, deadline, max_message_bytes), deadline)
            trace.step("upgrade", "HTTP 101 Switching Protocols")
            try:
                _authorise(session, pin)
                trace.step(
                    "auth", "accepted, " + ("secured (PIN)" if pin is not None else "unsecured (no PIN)")
                )
                reply = session.call(method, "request")
                trace.step(method, f"reply {shape(reply)}")
            finally:
                session.close()
    except CollectionError:
        raise
    except (TimeoutError, websocket.WebSocketTimeoutException):
        raise CollectionError(
            Reason.TIMEOUT, f"{target} did not answer within {deadline.seconds:g}s"
        ) from None
    except (OSError, websocket.WebSocketException) as error:
        raise deadline.failure(
            Reason.PROTOCOL,
            f"the connection to {target} broke mid-way: {describe(error)}",
            f"{target} did not answer within {deadline.seconds:g}s",
        ) from None
    finally:
        sock.close()
    failure = protocol.failure_text(reply)
    if failure is not None:
        raise CollectionError(Reason.API, f"the Room refused {method}: {failure}")
    return reply


def fetch_outgoing_requests(
    target: RoomTarget,
    pin: str | None,
    deadline: Deadline,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    trace: Trace | None = None,
) -> dict[str, Any]:
    """The successful `getOutgoingFilesRequests` reply of the Room at `target`, within `deadline`.

    Any one message larger than `max_message_bytes` is refused (reason `protocol`) before it is read.
    `trace`, when given, records each phase as it completes.
    """
    try:
        return _converse(
            target, pin, deadline, OUTGOING_METHOD, max_message_bytes, trace or Trace(deadline.started)
        )
    except CollectionError as error:
        if pin and pin in error.message:
            raise CollectionError(error.reason, error.message.replace(pin, "<pin>")) from None
        raise
