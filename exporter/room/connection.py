"""One authorised WebSocket to a TrueConf Room: opened once (lookup, discovery, TCP, upgrade, `auth`), then
used for any number of exchanges, each a batch of requests sent in one write and their replies read back.

Once open, the session is read by the sessions' reader (room/reader.py) whenever the Room sends, between
scrapes too, so no Room is ever blocked sending to the exporter. What arrives becomes, in the reader's
thread: a notification, parsed and given to the Room's ledger (room/ledger.py); a pong, noted; a ping,
answered; a reply, handed to the scrape that waits for it (a large one as bytes, parsed by that scrape in the
budget's lane). Replies are matched by `requestId` (unique in this process), falling back to the method when
the Room leaves it empty (reference §2); a reply nobody waits for is dropped.

A session is dropped, and the next scrape says why, when its Room breaks the protocol, sends a message over
its limits (room/frames.py), sends notifications faster than FLOOD_PER_SECOND beyond a burst of FLOOD_BURST,
or stops reading what the exporter sends. A Room that closes the connection is simply reconnected.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import websocket

from exporter.room import protocol
from exporter.room.budget import FREE_BYTES, MessageBudget, small_enough
from exporter.room.connect import Resolver, addresses_for, open_tcp
from exporter.room.deadline import Deadline, DeadlineSocket
from exporter.room.discovery import discover_websocket_port
from exporter.room.errors import CollectionError, Reason, describe
from exporter.room.frames import BudgetBusyError, FrameStream, Message, NeedMoreBytesError
from exporter.room.ledger import Ledger
from exporter.room.reader import READ_BYTES, RoomReader
from exporter.room.request import RoomRequest
from exporter.room.target import RoomTarget, host_port
from exporter.room.trace import Trace

log = logging.getLogger(__name__)

FLOOD_BURST = 20_000
"""Messages (notifications, pings, anything) a Room may send at once: a busy Room during large transfers
sends many progress events."""
FLOOD_PER_SECOND = 2_000
"""Messages a second a Room may keep sending past the burst; faster, and its session is dropped. Each costs
the reader 9-14 us: one flooding Room takes at most 2-3% of a core."""
MAX_UNSENT_BYTES = 64 * 1024
LARGE_MESSAGES_BEYOND_REPLIES = 4
"""Large messages (past FREE_BYTES: whose request id is known only once parsed) held for a scrape beyond one
per request it sent; past them, the session is dropped. A small reply is matched as it is read, and one that
answers nothing asked, or answers it a second time, is dropped at once: a Room cannot queue messages behind
a scrape busy parsing."""
"""What may wait to be written to a Room that does not read (pongs to its pings): past it, it is dropped."""

_ID_PREFIX = f"tcx{os.getpid()}-"


@dataclass(frozen=True)
class Exchange:
    replies: dict[str, dict[str, Any]]
    """Each method's reply, successful or not, that arrived in time."""
    complete: bool
    """False when a reply is still pending: the connection must not be used again."""
    sequences: dict[str, int]
    """Each reply's place in the session's stream of messages (the ledger orders lists and notifications)."""


class SessionLostError(Exception):
    """The Room closed or reset a connection that was open: a restart, or a peer that forgot us."""


Keep = Callable[[dict[str, Any]], dict[str, Any]]
"""What a reply becomes once parsed (the client aggregates request lists there)."""

Arrived = tuple[int, dict[str, Any] | bytes, int]
"""A reply handed to the waiting scrape: its sequence, the parsed reply (or a large one's bytes), and the
shared budget those bytes hold."""


class RoomConnection:
    """An open, authorised WebSocket to one Room. One exchange at a time (sessions.py); the reader's thread
    and the scrape's meet under `_condition`."""

    def __init__(
        self,
        target: RoomTarget,
        sock: DeadlineSocket,
        reader: RoomReader,
        budget: MessageBudget,
        max_message_bytes: int,
        ledger: Ledger | None = None,
    ) -> None:
        self.target = target
        self._sock = sock
        self._fileno = sock.fileno()
        self._reader = reader
        self._budget = budget
        self._stream = FrameStream(max_message_bytes, budget)
        self._condition = threading.Condition()
        self._unsent = bytearray()
        self._awaiting = False
        self._expected: dict[str, str] = {}
        """The request ids (-> method) the waiting scrape has had no reply to from the reader yet."""
        self._large_left = 0
        """Large messages the reader may still hand to the waiting scrape."""
        self._budget_waits = False
        self._arrived: deque[Arrived] = deque()
        self._closed = False
        self.failure: CollectionError | SessionLostError | None = None
        """Why the session ended while it was open (None while it is alive)."""
        self.last_pong: bytes | None = None
        self.sequence = 0
        """Messages received so far."""
        self.ledger = ledger
        self._tokens = float(FLOOD_BURST)
        self._tokens_at = time.monotonic()
        self.exchanges = 0
        self._request_ids = itertools.count(1)

    @classmethod
    def open(
        cls,
        request: RoomRequest,
        deadline: Deadline,
        trace: Trace,
        budget: MessageBudget,
        reader: RoomReader,
        resolver: Resolver,
        ledger: Ledger | None = None,
    ) -> RoomConnection:
        """Look the Room up once (by `resolver`), connect to exactly those addresses, upgrade and authorise,
        in `deadline`."""
        target = request.target
        addresses = addresses_for(target, deadline, resolver)  # the one lookup: every connection goes there
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
            sock.bind_deadline(deadline, "handshake")
            _handshake(url, sock, deadline)
            sock.bind_deadline(None)
            sock.setblocking(False)
            connection = cls(target, sock, reader, budget, request.max_message_bytes, ledger)
            reader.watch(connection)
        except BaseException:
            sock.close()
            raise
        trace.step("upgrade", "HTTP 101 Switching Protocols")
        try:
            connection._authorise(request.pin, deadline)
        except SessionLostError as error:
            connection.close()
            raise CollectionError(
                Reason.PROTOCOL, f"the Room broke the connection during auth: {error}"
            ) from None
        except BaseException:
            connection.close()
            raise
        trace.step("auth", f"accepted, {_auth_kind(request.pin)}")
        return connection

    def _authorise(self, pin: str | None, deadline: Deadline) -> None:
        """Send nothing else until `auth` is answered (reference §3)."""
        params = {"type": "secured", "credentials": pin} if pin is not None else {"type": "unsecured"}
        reply = self.exchange(("auth",), deadline, params={"auth": params}, phase="auth").replies["auth"]
        failure = protocol.failure_text(reply, pin)
        if failure is not None:
            raise CollectionError(Reason.AUTH, f"the Room refused {_auth_kind(pin)} authorisation: {failure}")

    def fileno(self) -> int:
        return self._fileno

    # The scrape's side.

    def _next_request_id(self) -> str:
        """A request id unique within this connection, so a late reply is never matched to a later
        exchange's request (replies cannot cross connections)."""
        return f"{_ID_PREFIX}{next(self._request_ids)}"

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
        """Send one request per method in one write, and wait until every reply is in or the deadline passes.

        `first_reply_within` is for a reused connection: a ping goes out with the requests, and a connection
        that answers neither the ping (the WebSocket layer pongs however slow the Room's application is) nor
        a request that long is taken as dead (half-open). Raises SessionLostError when the Room closed, reset
        or ignored an open connection, CollectionError (timeout) when nothing was answered in time,
        CollectionError for a session dropped for a fault (see the module's docstring) or a reply that cannot
        be read. An exchange that ends with replies missing leaves them pending: the caller closes such a
        connection, so a late reply can never answer a later scrape.

        A reply is kept as `keep` returns it (whole when `keep` is None); arrays under `lists` keys are read
        entry by entry (protocol.decode) in a large reply, after a whole parse in a small one.
        """
        pending = {self._next_request_id(): method for method in methods}
        frames = [
            websocket.ABNF.create_frame(
                protocol.request(method, request_id, **(params or {}).get(method, {})),
                websocket.ABNF.OPCODE_TEXT,
            )
            for request_id, method in pending.items()
        ]
        ping = f"alive? {self._next_request_id()}".encode()  # this exchange's own: a late pong proves nothing
        if first_reply_within is not None:
            # First, so that a Room handling frames strictly in order pongs before it works on the requests.
            frames.insert(0, websocket.ABNF.create_frame(ping, websocket.ABNF.OPCODE_PING))
        patience_ends = None if first_reply_within is None else time.monotonic() + first_reply_within
        replies: dict[str, dict[str, Any]] = {}
        sequences: dict[str, int] = {}
        with self._condition:
            self._raise_failure(phase)
            self.exchanges += 1
            self._awaiting = True
            self._expected = dict(pending)
            self._large_left = len(pending) + LARGE_MESSAGES_BEYOND_REPLIES
            self._write(masked(frames))
        try:
            while pending:
                with self._condition:
                    arrived = self._wait(deadline, patience_ends, ping)
                    if self.last_pong == ping:
                        patience_ends = None
                    if not arrived:
                        self._raise_failure(phase)
                for index, (sequence, message, reserved) in enumerate(arrived):
                    try:
                        reply = self._kept(message, reserved, deadline, keep, lists)
                    except BaseException:
                        for _, _, rest in arrived[index + 1 :]:  # read with it, never to be parsed
                            self._budget.release(rest)
                        raise
                    method = None if reply is None else protocol.take_reply(reply, pending)
                    if method is not None and reply is not None:
                        replies[method], sequences[method] = reply, sequence
                        patience_ends = None
                if arrived:
                    continue
                if deadline.expired():
                    break
                if patience_ends is not None and time.monotonic() >= patience_ends:
                    raise SessionLostError(
                        f"{self.target} answered neither a request nor a ping for {first_reply_within:.2f}s"
                    )
        finally:
            self._end_exchange()
        if pending and not replies:
            why = ""
            if self._budget_waits:
                why = ": its reply waited for the memory that other Rooms' large messages were using"
            raise CollectionError(
                Reason.TIMEOUT, f"{self.target} did not answer within {deadline.seconds:g}s{why}"
            )
        return Exchange(replies, complete=not pending, sequences=sequences)

    def _wait(self, deadline: Deadline, patience_ends: float | None, ping: bytes) -> list[Arrived]:
        """What has arrived for the exchange (the condition held), waiting for it within the deadline and,
        until the Room shows life, the patience."""
        while not self._arrived and self.failure is None:
            ends = deadline.expires
            if patience_ends is not None and self.last_pong != ping:
                ends = min(ends, patience_ends)
            left = ends - time.monotonic()
            if left <= 0:
                break
            self._condition.wait(left)
        arrived = list(self._arrived)
        self._arrived.clear()
        return arrived

    def _kept(
        self,
        message: dict[str, Any] | bytes,
        reserved: int,
        deadline: Deadline,
        keep: Keep | None,
        lists: Mapping[str, protocol.ListReader] | None,
    ) -> dict[str, Any] | None:
        """A reply as the caller keeps it: a small one parsed by the reader already, a large one parsed here,
        in the budget's lane (None when it turns out to be a notification)."""
        if isinstance(message, bytes):
            try:
                return self._budget.parse(
                    message, deadline, lambda parsed: _notification_dropped(parsed, keep), lists
                )
            finally:
                del message
                self._budget.release(reserved)
        if lists:
            message = protocol.read_lists(message, lists)
        kept = keep(message) if keep is not None else message
        if not small_enough(kept):
            raise CollectionError(
                Reason.PROTOCOL,
                "the Room sent a reply of too many values or too much text besides its request list",
            )
        return kept

    def _end_exchange(self) -> None:
        with self._condition:
            self._awaiting = False
            self._expected = {}
            if self._stream.reserved:  # a large message begun under the awaited limit: none is awaited now
                self._shut(
                    CollectionError(Reason.PROTOCOL, "the Room began a large message after its last reply")
                )
            leftover = list(self._arrived)
            self._arrived.clear()
        for _, message, reserved in leftover:
            del message
            self._budget.release(reserved)

    def _raise_failure(self, phase: str) -> None:
        """Raise why the session ended, if it has (the condition held)."""
        failure = self.failure
        if failure is None and self._closed:
            failure = SessionLostError("the session was closed")
        if isinstance(failure, SessionLostError):
            raise SessionLostError(f"{failure} (during {phase})" if phase != "request" else str(failure))
        if failure is not None:
            raise CollectionError(failure.reason, failure.message)

    def close(self) -> None:
        """Close at once: a close frame if the socket takes it now, then the socket. Never raises, never
        waits (the Room's answer to the close frame is not needed: every reply is in or abandoned)."""
        with self._condition:
            if self._closed:
                return
            self._shut(None, polite=True)

    # The reader's side (its thread), each call under `_condition`.

    def on_ready(self, readable: bool, writable: bool) -> None:
        try:
            with self._condition:
                if self._closed:
                    return
                if writable:
                    self._flush()
                if readable and not self._closed:
                    self._read()
        except Exception:  # a bug must not end the reader, which every session needs
            log.exception("internal error reading a Room session", extra={"target": str(self.target)})
            with self._condition:
                self._shut(CollectionError(Reason.INTERNAL, "an unexpected error inside the exporter"))

    def resume(self) -> bool:
        with self._condition:
            if self._closed:
                return False
            self._budget_waits = not self._drain()
            return not self._budget_waits

    def _read(self) -> None:
        try:
            data = self._sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._shut(SessionLostError(describe(error)))
            return
        if not data:
            self._shut(SessionLostError("the Room closed the connection"))
            return
        self._stream.feed(data)
        del data
        if not self._drain():
            self._budget_waits = True
            self._reader.pause(self)

    def _drain(self) -> bool:
        """Handle every whole frame of what was fed; False when the budget made the session wait."""
        while not self._closed:
            try:
                item = self._stream.next(self._awaiting)
            except NeedMoreBytesError:
                return True
            except BudgetBusyError:
                return False
            except CollectionError as error:
                self._shut(error)
            except websocket.WebSocketException as error:
                self._shut(
                    CollectionError(
                        Reason.PROTOCOL, f"the Room sent a malformed WebSocket frame: {describe(error)}"
                    )
                )
            else:
                if not self._spend_token():
                    return True
                if isinstance(item, Message):
                    self._message(item)
                else:
                    self._control(item)
        return True

    def _control(self, frame: websocket.ABNF) -> None:
        data = frame.data if isinstance(frame.data, bytes) else b""
        if frame.opcode == websocket.ABNF.OPCODE_PING:
            self._write(masked([websocket.ABNF.create_frame(data, websocket.ABNF.OPCODE_PONG)]))
        elif frame.opcode == websocket.ABNF.OPCODE_PONG:
            self.last_pong = data
            self._condition.notify_all()
        else:
            self._shut(SessionLostError("the Room closed the connection"))

    def _message(self, message: Message) -> None:
        self.sequence += 1
        if message.opcode != websocket.ABNF.OPCODE_TEXT:
            self._budget.release(message.reserved)
            self._shut(CollectionError(Reason.PROTOCOL, "the Room sent a binary frame"))
            return
        if message.reserved or len(message.data) > FREE_BYTES:  # large: the waiting scrape parses it
            if not self._awaiting:
                self._budget.release(message.reserved)
            elif self._large_left > 0:
                self._large_left -= 1
                self._arrived.append((self.sequence, message.data, message.reserved))
                self._condition.notify_all()
            else:
                self._budget.release(message.reserved)
                self._shut(
                    CollectionError(
                        Reason.PROTOCOL,
                        f"the Room sent more than {LARGE_MESSAGES_BEYOND_REPLIES} large messages beyond the "
                        "replies a scrape asked for",
                    )
                )
            return
        try:
            parsed = protocol.decode(protocol.text_of(message.data))
        except CollectionError as error:
            self._shut(error)
            return
        if protocol.is_notification(parsed):
            self._notified(parsed)
        elif self._awaiting and protocol.take_reply(parsed, self._expected) is not None:
            self._arrived.append((self.sequence, parsed, 0))
            self._condition.notify_all()

    def _notified(self, notification: dict[str, Any]) -> None:
        if self.ledger is not None:
            self.ledger.notify(notification, self.sequence)

    def _spend_token(self) -> bool:
        """Every message and control frame costs the reader CPU, whatever it is: past the flood bound the
        session is dropped (False)."""
        now = time.monotonic()
        self._tokens = min(float(FLOOD_BURST), self._tokens + (now - self._tokens_at) * FLOOD_PER_SECOND)
        self._tokens_at = now
        if self._tokens < 1:
            self._shut(
                CollectionError(
                    Reason.PROTOCOL,
                    f"the Room sent notifications faster than {FLOOD_PER_SECOND} a second past a burst of "
                    f"{FLOOD_BURST} (pings and other frames count too)",
                )
            )
            return False
        self._tokens -= 1
        return True

    def wants_write(self) -> bool:
        return bool(self._unsent)

    def _write(self, data: bytes) -> None:
        if not self._unsent:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._shut(SessionLostError(describe(error)))
                return
            if sent == len(data):
                return
            data = data[sent:]
            self._reader.watch(self, writing=True)
        self._unsent += data
        if len(self._unsent) > MAX_UNSENT_BYTES:
            self._shut(
                CollectionError(Reason.PROTOCOL, "the Room does not read what the exporter sends to it")
            )

    def _flush(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._shut(SessionLostError(describe(error)))
            return
        del self._unsent[:sent]
        if not self._unsent:
            self._reader.watch(self)

    def _shut(self, failure: CollectionError | SessionLostError | None, polite: bool = False) -> None:
        """End the session (the condition held): the reader forgets it, its budget is given back, the
        socket closed, and a waiting scrape wakes to `failure`."""
        if self._closed:
            return
        self._closed = True
        if self.failure is None:
            self.failure = failure
        self._reader.forget(self)
        self._stream.release()  # what arrived whole stays for the waiting scrape (it releases it)
        self._unsent.clear()
        if polite:
            with contextlib.suppress(OSError):
                self._sock.send(masked([_CLOSE_FRAME]))
        with contextlib.suppress(OSError):
            self._sock.close()
        self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


_CLOSE_FRAME = websocket.ABNF.create_frame(
    struct.pack("!H", websocket.STATUS_NORMAL), websocket.ABNF.OPCODE_CLOSE
)


def _notification_dropped(message: dict[str, Any], keep: Keep | None) -> dict[str, Any] | None:
    if protocol.is_notification(message):
        return None
    return keep(message) if keep is not None else message


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


def _handshake(url: str, sock: DeadlineSocket, deadline: Deadline) -> None:
    """The WebSocket upgrade on `sock`, the one connection this collection opened, and nowhere else; each
    read and write waits at most what is left of the deadline (DeadlineSocket).

    websocket-client follows up to 3 redirects by default, each on a new connection of its own (past the
    allow-list and any proxy rule): `redirect_limit=0` keeps a 3xx as the answer, and any answer other than
    101 is a `connect` failure naming its status. websocket-client reads the answer's head a byte at a time,
    so not one byte of what the Room sends after it is taken from the socket here.
    """
    ws = websocket.WebSocket(enable_multithread=False, skip_utf8_validation=True)
    try:
        # websocket-client leaves WebSocket.connect unannotated
        ws.connect(  # type: ignore[no-untyped-call]
            url, socket=sock, suppress_origin=True, redirect_limit=0, timeout=deadline.remaining("handshake")
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


def _refused_upgrade(ws: websocket.WebSocket, url: str) -> CollectionError | None:
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
