"""One authorised WebSocket to a TrueConf Room: opened once (lookup, discovery, TCP, upgrade, `auth`), then
used for any number of exchanges, each a batch of requests sent in one write and their replies read back.

The Room may send notifications at any time, between scrapes too: they wait in the socket's buffer (bounded
by the kernel) and are read and skipped at the next exchange. Replies are matched by `requestId` (unique in
this process), falling back to the method when the Room leaves it empty (reference §2).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import websocket

from exporter.room import protocol
from exporter.room.budget import MessageBudget
from exporter.room.connect import addresses_for, open_tcp
from exporter.room.deadline import Deadline, SocketWatchdog
from exporter.room.discovery import discover_websocket_port
from exporter.room.errors import CollectionError, Reason, describe
from exporter.room.frames import BoundedWebSocket
from exporter.room.readahead import ReadAheadSocket
from exporter.room.target import RoomTarget, host_port
from exporter.room.trace import Trace

CLOSE_WAIT_SECONDS = 0.25
"""How long closing waits for the Room to acknowledge; the data is already in."""

_request_ids = itertools.count(1)
_id_prefix = f"tcx{os.getpid()}-"


def next_request_id() -> str:
    """A request id unique within this process, so replies are never matched to another scrape's request."""
    return f"{_id_prefix}{next(_request_ids)}"


@dataclass(frozen=True)
class Exchange:
    replies: dict[str, dict[str, Any]]
    """Each method's reply, successful or not, that arrived in time."""
    complete: bool
    """False when a reply is still pending: the connection must not be used again."""
    shut_down: bool = False
    """True when the deadline's watchdog shut the socket down, whatever was read: not to be used again."""


class SessionLostError(Exception):
    """The Room closed or reset a connection that was open: a restart, or a peer that forgot us."""


class RoomConnection:
    """An open, authorised WebSocket to one Room. Not thread-safe: one exchange at a time (sessions.py)."""

    def __init__(
        self, target: RoomTarget, ws: BoundedWebSocket, sock: socket.socket, budget: MessageBudget
    ) -> None:
        self.target = target
        self._ws = ws
        self._sock = sock
        self._budget = budget
        self.opened_at = time.monotonic()
        self.exchanges = 0

    @classmethod
    def open(
        cls,
        target: RoomTarget,
        pin: str | None,
        deadline: Deadline,
        max_message_bytes: int,
        trace: Trace,
        budget: MessageBudget,
    ) -> RoomConnection:
        """Look the Room up once, connect to exactly those addresses, upgrade and authorise, in `deadline`."""
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
                ws = _handshake(url, sock, deadline, max_message_bytes, budget)
                connection = cls(target, ws, sock, budget)
                trace.step("upgrade", "HTTP 101 Switching Protocols")
                connection._authorise(pin, deadline)
                trace.step("auth", f"accepted, {_auth_kind(pin)}")
        except SessionLostError as error:
            sock.close()
            raise CollectionError(
                Reason.PROTOCOL, f"the Room broke the connection during auth: {error}"
            ) from None
        except BaseException:
            sock.close()
            raise
        return connection

    def _authorise(self, pin: str | None, deadline: Deadline) -> None:
        """Send nothing else until `auth` is answered (reference §3)."""
        params = {"type": "secured", "credentials": pin} if pin is not None else {"type": "unsecured"}
        reply = self.exchange(("auth",), deadline, params={"auth": params}, phase="auth").replies["auth"]
        failure = protocol.failure_text(reply)
        if failure is not None:
            if pin:  # the Room's own words could echo what it was sent
                failure = failure.replace(pin, "<pin>")
            raise CollectionError(Reason.AUTH, f"the Room refused {_auth_kind(pin)} authorisation: {failure}")

    def exchange(
        self,
        methods: tuple[str, ...],
        deadline: Deadline,
        params: dict[str, dict[str, Any]] | None = None,
        phase: str = "request",
        first_reply_within: float | None = None,
        keep: Keep | None = None,
        lists: Mapping[str, protocol.ListReader] | None = None,
    ) -> Exchange:
        """Send one request per method in one write, and read until every reply is in or the deadline passes.

        `first_reply_within` is for a reused connection: a ping goes out with the requests, and a connection
        that answers neither the ping (the WebSocket layer pongs however slow the Room's application is) nor
        a request that long is taken as dead (half-open); a notification proves nothing, it may have waited
        in the buffer since the last scrape. Raises SessionLostError when the Room closed, reset or ignored
        an open connection, CollectionError (timeout) when nothing was answered in time, CollectionError
        (protocol) for a broken message or frame. An exchange that ends with replies missing leaves them
        pending: the caller closes such a connection, so a late reply can never answer a later scrape.

        Each message is parsed in the budget's lane and reduced there by `keep` (see budget.py): a
        notification is dropped, a reply is kept as `keep` returns it (whole when `keep` is None); arrays
        under `lists` keys are read entry by entry (protocol.decode).
        """
        pending = {next_request_id(): method for method in methods}
        frames = [
            websocket.ABNF.create_frame(
                protocol.request(method, request_id, **(params or {}).get(method, {})),
                websocket.ABNF.OPCODE_TEXT,
            )
            for request_id, method in pending.items()
        ]
        ping = f"alive? {next_request_id()}".encode()  # this exchange's own: a late pong proves nothing
        if first_reply_within is not None:
            # First, so that a Room handling frames strictly in order pongs before it works on the requests.
            frames.insert(0, websocket.ABNF.create_frame(ping, websocket.ABNF.OPCODE_PING))
        replies: dict[str, dict[str, Any]] = {}
        self.exchanges += 1
        self._ws.deadline = deadline
        with SocketWatchdog(deadline, self._sock) as watchdog:
            try:
                # The deadline is the watchdog's: it shuts the socket when the deadline passes, whatever a
                # read waits for. So reads need no timeout of their own (with one, each read is a poll()
                # and a recv(), two system calls that each give up the GIL), except while the patience
                # runs: then a read gives up after it, and the socket blocks again once the Room is alive.
                patience = first_reply_within
                left = deadline.remaining(phase)
                self._ws.settimeout(None if patience is None else min(patience, left))
                waiting_for_life = patience is not None
                self._sock.sendall(masked(frames))
                while pending and deadline.left() > 0:
                    if waiting_for_life and patience is None:
                        self._ws.settimeout(None)
                        waiting_for_life = False
                    try:
                        message = self._receive(phase, deadline, keep or _whole, lists)
                    except (TimeoutError, websocket.WebSocketTimeoutException):
                        if patience is None or deadline.left() <= 0:
                            break
                        if self._ws.last_pong == ping:  # alive, only slow: wait the whole deadline
                            patience = None
                            continue
                        raise SessionLostError(
                            f"{self.target} answered neither a request nor a ping for {patience:.2f}s"
                        ) from None
                    if self._ws.last_pong == ping:
                        patience = None
                    if message is None:  # a notification: it proves nothing, it may have waited since
                        continue
                    method = protocol.take_reply(message, pending)
                    if method is not None:
                        replies[method] = message
                        patience = None
            except (OSError, websocket.WebSocketConnectionClosedException) as error:
                if not deadline.expired():
                    raise SessionLostError(describe(error)) from None
            except websocket.WebSocketException as error:  # a malformed frame: the Room broke the protocol
                raise CollectionError(
                    Reason.PROTOCOL,
                    f"the Room sent a malformed WebSocket frame during {phase}: {describe(error)}",
                ) from None
            finally:
                self._ws.release_message()  # whatever a broken message had reserved
                self._ws.deadline = None
        if pending and not replies:
            raise CollectionError(
                Reason.TIMEOUT, f"{self.target} did not answer within {deadline.seconds:g}s"
            )
        return Exchange(replies, complete=not pending, shut_down=watchdog.fired)

    def _receive(
        self,
        phase: str,
        deadline: Deadline,
        keep: Keep,
        lists: Mapping[str, protocol.ListReader] | None,
    ) -> dict[str, Any] | None:
        """The next message as `keep` leaves it (None for a notification), parsed within the budget."""
        opcode, data = self._ws.recv_message()
        try:
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise SessionLostError(f"the Room closed the connection during {phase}")
            if opcode != websocket.ABNF.OPCODE_TEXT:
                raise CollectionError(Reason.PROTOCOL, f"the Room sent a binary frame during {phase}")
            return self._budget.parse(
                data, deadline, lambda message: _notification_dropped(message, keep), lists
            )
        finally:
            del data
            self._ws.release_message()

    def close(self, deadline: Deadline | None = None) -> None:
        """Close politely when there is time left, at once otherwise; never raises, never waits longer than
        CLOSE_WAIT_SECONDS (a watchdog shuts the socket down should the Room drip its answer)."""
        wait = CLOSE_WAIT_SECONDS if deadline is None else max(0.0, min(deadline.left(), CLOSE_WAIT_SECONDS))
        closing = Deadline(wait + 0.01)
        self._ws.deadline = closing
        with contextlib.suppress(Exception), SocketWatchdog(closing, self._sock):
            self._ws.close(timeout=wait)
        self._ws.release_message()
        with contextlib.suppress(OSError):
            self._sock.close()


Keep = Callable[[dict[str, Any]], dict[str, Any]]
"""What a reply becomes once parsed, inside the parse lane (the client aggregates request lists there)."""


def _whole(reply: dict[str, Any]) -> dict[str, Any]:
    return reply


def _notification_dropped(message: dict[str, Any], keep: Keep) -> dict[str, Any] | None:
    return None if protocol.is_notification(message) else keep(message)


def masked(frames: list[websocket.ABNF]) -> bytes:
    """The frames as sent by a client, masked (RFC 6455 §5.3) with keys drawn in one `os.urandom` call:
    websocket-client draws one per frame, and each draw is a system call that gives up the GIL."""
    keys = os.urandom(4 * len(frames))
    for index, frame in enumerate(frames):
        frame.get_mask_key = partial(_fixed_key, keys[4 * index : 4 * index + 4])
    return b"".join(frame.format() for frame in frames)


def _fixed_key(key: bytes, length: int) -> bytes:
    assert length == len(key)
    return key


def _handshake(
    url: str, sock: socket.socket, deadline: Deadline, max_message_bytes: int, budget: MessageBudget
) -> BoundedWebSocket:
    """The WebSocket upgrade on `sock`, the one connection this collection opened, and nowhere else.

    websocket-client follows up to 3 redirects by default, each on a new connection of its own (past the
    allow-list, the watchdog and any proxy rule): `redirect_limit=0` keeps a 3xx as the answer, and any
    answer other than 101 is a `connect` failure naming its status.
    """
    # RoomSession decodes every text message itself (C speed); websocket-client's pure-Python UTF-8 check of
    # the same bytes costs ~0.4 s per MiB of CPU that no deadline can interrupt.
    ws = BoundedWebSocket(
        max_message_bytes=max_message_bytes,
        budget=budget,
        enable_multithread=False,
        skip_utf8_validation=True,
    )
    try:
        ws.settimeout(deadline.remaining("handshake"))
        # websocket-client leaves WebSocket.connect unannotated
        ws.connect(  # type: ignore[no-untyped-call]
            url, socket=ReadAheadSocket(sock), suppress_origin=True, redirect_limit=0
        )
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


def _auth_kind(pin: str | None) -> str:
    return "secured (PIN)" if pin is not None else "unsecured (no PIN)"
