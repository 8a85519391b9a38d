"""The exporter's HTTP server: asyncio holds the connections, h11 reads HTTP/1.1, a bounded pool runs the app.

One event-loop thread accepts every connection and reads every request, so an idle or slow client costs a few
kilobytes and no thread. h11 (python-hyper's HTTP/1.1 state machine) parses strictly: HTTP/0.9, a missing
`Host` on HTTP/1.1 and a header line without a colon are a 400, and headers past `max_header_bytes` a 431.
Only a request read whole (head and body) within the read-header timeout reaches the WSGI app, which runs in
a thread of a bounded pool: `/metrics` and `/probe` in the collection pool (`max_collections` threads; one
more is a 503), everything else in a small pool of its own, so `/healthz` answers while every collection is
busy. Past `max_connections`, a connection is answered 503 (within a few refusal slots) or closed.

With TLS, each connection is wrapped with the web config's current SSLContext (renewed certificates apply to
the next connection), the handshake bounded by the read-header timeout, which then starts again for the
request. See docs/development.md ("The HTTP server") for why this and not cheroot or waitress.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import functools
import gc
import http
import io
import logging
import math
import queue
import re
import resource
import socket
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import h11

from exporter.allocator import trim
from exporter.build import server_name
from exporter.web.auth import WebSecurity
from exporter.web.config import RateLimit, WebConfigError, WebConfigWatcher
from exporter.web.responses import StartResponse, WSGIApp, plain_text
from exporter.web.tls import TLSRefusedError, TLSStream, current_context, is_plain_http, is_tls
from exporter.web.warning import RateLimitedWarning

log = logging.getLogger(__name__)
_RateLimitedWarning = functools.partial(RateLimitedWarning, log)
"""The server's warnings, on its own logger."""

DEFAULT_READ_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 4096
"""Prometheus keeps one connection per target open between scrapes: 200 Rooms probed by 2 Prometheus servers
are about 400, and the rest is room for floods of idle connections (each costs ~8 KiB and one file)."""
DEFAULT_MAX_COLLECTIONS = 256
"""Scrapes of /metrics and /probe in flight: 400 probes of Rooms that all time out after 10 s, every 30 s,
keep about 130 in flight; twice that before a 503. Each in flight is one thread."""
IDLE_TIMEOUT_SECONDS = 120.0
"""How long a kept-alive connection may wait for its next request: longer than Prometheus's usual 60 s
interval, so a scrape every minute reuses its connection."""
WRITE_TIMEOUT_SECONDS = 30.0
"""How long the kernel may take to accept a whole answer (as the client reads); then the connection closes."""
DEFAULT_MAX_UNSENT_BYTES = 16 * 1024 * 1024
"""Bytes of answers the server may hold, all connections together, for clients that have not taken them yet:
a status page of a few hundred KiB for each of some fifty clients that never read, or thousands of scrape
answers. Past it, the connections waiting longest are closed to make room (they are the ones not reading)."""
SEND_BUFFER_BYTES = 32 * 1024
"""SO_SNDBUF of each connection. Linux otherwise grows a send buffer up to tcp_wmem's 4 MiB: 50 clients that
asked for a 1.7 MB page and never read held 76 MiB of kernel memory (7 MiB with this buffer), charged to the
exporter's cgroup. Linux doubles the figure for its bookkeeping; a scrape answer of a few KiB fits at once."""
WRITE_CHUNK_BYTES = 64 * 1024
"""A large answer goes to the transport in pieces of this size, each once the previous one is with the
kernel: no copy of a whole large answer is made (h11's framing, asyncio's buffer), only of one piece."""
MAX_HEADER_BYTES = 8 * 1024
"""The request line and headers together (h11's default is 16 KiB); Prometheus sends about 300 bytes."""
MAX_BODY_BYTES = 64 * 1024
COLLECTION_PATHS = ("/metrics", "/probe")
OTHER_WORKERS = 4
"""Threads for everything but collections: /healthz, /, /-/reload and errors."""
REFUSAL_SLOTS = 64
"""Connections past max_connections that are still read and answered 503; past those they are closed."""
REFUSAL_TIMEOUT_SECONDS = 2.0
READ_CHUNK_BYTES = 8 * 1024
LISTEN_BACKLOG = 512
ACCEPT_BACKOFF_SECONDS = (0.005, 1.0)
"""accept() failures (EMFILE...) wait this long, doubling from the first figure up to the second."""
LINGER_SECONDS = 1.0
"""After a refusal, how long the client's unread bytes are drained, so that closing does not reset the
answer."""
SHUTDOWN_GRACE_SECONDS = 2.0
SHUTDOWN_DRAIN_SECONDS = 10.0
"""On SIGTERM, how long answers already being computed (a scrape waiting on a slow Room) may still take to go
out; no new connection is accepted meanwhile. Then the stop path (cli/serve.py) cancels the collections
still in flight: the shipped stop timeouts (20 s) leave room for this, SHUTDOWN_GRACE_SECONDS and the exit."""
GC_INTERVAL_SECONDS = 5.0
GC_AFTER_CLOSED_CONNECTIONS = 100
"""Connections closed since the last run of the cycle collector that make the next one due."""
REFUSAL_TEXTS = MappingProxyType({400: "bad request\n", 431: "request headers too large\n"})


@dataclass(frozen=True)
class ServerLimits:
    """The server's bounds; `serve` sets the first three from flags, tests shrink the others."""

    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_collections: int = DEFAULT_MAX_COLLECTIONS
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    write_timeout: float = WRITE_TIMEOUT_SECONDS
    max_unsent_bytes: int = DEFAULT_MAX_UNSENT_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


class _ErrorLog(io.StringIO):
    """`wsgi.errors`: what the app writes there becomes one error-level line of the log at each flush."""

    def flush(self) -> None:
        text = self.getvalue().rstrip()
        self.seek(0)
        self.truncate()
        if text:
            log.error("the app wrote to wsgi.errors", extra={"detail": text})


class _RefusalError(Exception):
    """A request answered by the server itself (400, 413, 431, 505), then the connection closed; `detail`
    says why in the one debug line logged."""

    def __init__(self, status: int, text: str, detail: str = "") -> None:
        super().__init__(text)
        self.status, self.text, self.detail = status, text, detail


@dataclass
class _Request:
    """A request read whole and accepted: h11's event, the target's path (not yet unquoted) and query."""

    event: h11.Request
    path: str
    query: str
    body: bytes = b""


_HEAD_END = re.compile(rb"\n\r?\n")
"""Where h11 ends a request head (its own blank-line pattern), so the raw head checked is the one it read."""


def split_target(target: bytes) -> tuple[str, str] | None:
    """The path and query of an origin-form (`/path?query`) or absolute-form (`http://host/path`) target;
    None for anything else (asterisk or authority form, a missing leading slash, a URL urlsplit refuses)."""
    text = target.decode("latin-1")  # h11 lets only visible ASCII through
    if text.startswith("/"):
        path, _, query = text.partition("?")
        return path, query
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return parts.path or "/", parts.query


class _DaemonPool(Executor):
    """Up to `size` daemon threads, started as work comes, that run what `run_in_executor` gives them.

    ThreadPoolExecutor's workers are joined at interpreter exit: a collection blocked on a Room (until a 60 s
    deadline), or in a name lookup that nothing can interrupt, kept a stopped exporter alive that long. These
    threads are not waited for; the stop path cancels the collections, then `wait_idle` says what is left.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._queue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._threads = 0
        self._busy = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            raise TypeError("keyword arguments are not passed on (run_in_executor gives none)")
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            if not self._idle.acquire(blocking=False) and self._threads < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{self._threads}", daemon=True
                )
                thread.start()  # raises when no thread can start: then nothing was queued
                self._threads += 1
            self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            del item
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self._busy += 1
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # noqa: BLE001 - handed to the caller, as ThreadPoolExecutor does
                    future.set_exception(error)
                finally:
                    del future, fn, args  # the answer is not kept alive by an idle thread
                    with self._lock:
                        self._busy -= 1
                        self._changed.notify_all()
            self._idle.release()
        self._queue.put(None)  # the next worker stops too

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; `cancel_futures` drops the work not started. Never joins a thread: `wait`
        waits for the calls running to end."""
        with self._lock:
            self._closed = True
            while cancel_futures:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            self._queue.put(None)
        if wait:
            self.wait_idle(None)

    def wait_idle(self, seconds: float | None) -> int:
        """Wait up to `seconds` (None: for ever) for the calls running to end; how many still run."""
        with self._changed:
            self._changed.wait_for(lambda: self._busy == 0, seconds)
            return self._busy


@dataclass
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def _plain_answer(status: int, text: str, *headers: tuple[str, str]) -> _Answer:
    """The server's own answers: plain text that never quotes the request."""
    phrase = http.HTTPStatus(status).phrase
    return _Answer(status, phrase, [("Content-Type", "text/plain; charset=utf-8"), *headers], text.encode())


class HTTPServer:
    """Bound at construction (an OSError if the address is taken); `serve_forever` runs the event loop.

    The interface of socketserver's servers that the callers use: `server_address`, `serve_forever`,
    `shutdown` (from another thread; returns once `serve_forever` has) and `server_close`.
    """

    def __init__(
        self,
        app: WSGIApp,
        host: str,
        port: int,
        web_config: WebConfigWatcher | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.server_address: tuple[str, int] = listener.getsockname()[:2]
        self.app = app
        self.web_config = web_config
        self.tls = web_config is not None and web_config.current().tls is not None
        self.limits = limits or ServerLimits()
        self.date = HttpDate()
        self._collect_pool = _DaemonPool(self.limits.max_collections, "collect")
        self._other_pool = _DaemonPool(OTHER_WORKERS, "http")
        self._other_slots = asyncio.Semaphore(OTHER_WORKERS)
        """Taken from before the app runs until its answer is being sent: answers made but not yet written
        (nor counted in the budget) are at most this many, however fast the pool makes them."""
        self._open = 0
        self._closed_since_collection = 0
        self._collecting = 0
        self._answering = 0
        """Requests whose answer is being computed or sent: what a SIGTERM lets finish."""
        self._accepting_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._shutdown_requested = False
        self._done = threading.Event()
        self._accept_warning = _RateLimitedWarning(
            "cannot accept connections; retrying with back-off (raise the open-file limit, or lower "
            "--web.max-connections below it)"
        )
        self._accepting = True
        self._busy_warning = _RateLimitedWarning(
            "connection limit reached (--web.max-connections): new connections are answered 503 or closed"
        )
        self._collect_warning = _RateLimitedWarning(
            "collection limit reached (--web.max-collections): scrapes are answered 503"
        )
        self._unsent = 0
        self._holders: dict[_Connection, int] = {}
        """Connections whose answers the kernel has not taken whole, oldest first: the bytes each holds."""
        self._unsent_warning = _RateLimitedWarning(
            "answers held for clients that do not read reached their budget: the connections waiting "
            "longest are closed"
        )

    # ---- life cycle ----

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `shutdown()`; `poll_interval` is accepted for socketserver's callers and unused.

        SIGTERM's SystemExit (or Ctrl-C) leaves through here too: every task is cancelled and given
        SHUTDOWN_GRACE_SECONDS to finish before the loop closes.
        """
        del poll_interval
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(loop.create_task(self._serve(loop)))
        finally:
            try:
                loop.run_until_complete(self._finish_answers(SHUTDOWN_DRAIN_SECONDS))
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS))
            finally:
                loop.close()
                self._done.set()

    async def _finish_answers(self, seconds: float) -> None:
        """Stop accepting, then give the answers in progress up to `seconds` to go out (SIGTERM, Ctrl-C)."""
        if self._accepting_task is not None:
            self._accepting_task.cancel()
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        if self._answering:
            log.info(
                "stopping: letting the scrapes in progress finish", extra={"detail": f"{self._answering}"}
            )
        while self._answering and loop.time() < until:
            await asyncio.sleep(0.02)

    def shutdown(self) -> None:
        if self.request_stop():
            self._done.wait()

    def request_stop(self) -> bool:
        """Ask `serve_forever` to drain and return, without waiting: safe from a signal handler, even one
        that interrupts the event loop itself. False when the loop is not running."""
        with self._lock:
            self._shutdown_requested = True
            loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return False
        with contextlib.suppress(RuntimeError):  # the loop has already closed
            loop.call_soon_threadsafe(stop.set)
        return True

    def server_close(self) -> None:
        self._listener.close()
        self._collect_pool.shutdown(wait=False, cancel_futures=True)
        self._other_pool.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, seconds: float) -> int:
        """After `server_close`: wait up to `seconds` for the app calls still running (collections whose
        sockets the stop path shut down end within milliseconds; a name lookup cannot be interrupted);
        returns how many still run. Their threads are daemons: the process does not wait for them."""
        until = time.monotonic() + seconds
        left = self._collect_pool.wait_idle(seconds)
        return left + self._other_pool.wait_idle(max(0.0, until - time.monotonic()))

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._shutdown_requested:
                return
            self._loop, self._stop = loop, asyncio.Event()
            stop = self._stop
        accepting = self._accepting_task = loop.create_task(self._accept_loop())
        collecting = loop.create_task(self._collect_garbage_after_bursts())
        try:
            await stop.wait()
        finally:
            accepting.cancel()
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accepting

    async def _collect_garbage_after_bursts(self) -> None:
        """Run Python's cycle collector once many connections have closed since it last ran.

        Connections that end in errors leave reference cycles (asyncio keeps exceptions whose tracebacks
        reach back to the connection and its answer), and the collector, driven by counts of new objects,
        may not run for a long time in a quiet process: after 200 clients that never read a 1.7 MB answer,
        0.3 MiB stayed alive until it did. At most once per GC_INTERVAL_SECONDS, a few milliseconds each time.
        """
        while True:
            await asyncio.sleep(GC_INTERVAL_SECONDS)
            if self._closed_since_collection >= GC_AFTER_CLOSED_CONNECTIONS:
                self._closed_since_collection = 0
                gc.collect()
                trim()

    # ---- accepting ----

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        first, most = ACCEPT_BACKOFF_SECONDS
        backoff = 0.0
        while True:
            try:
                sock, address = await loop.sock_accept(self._listener)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as error:
                # Out of files (EMFILE, ENFILE) or memory: the connection waits in the backlog. Go's servers
                # back off the same way; retrying at once would spin a core and change nothing.
                backoff = min(most, backoff * 2 or first)
                self._accepting = False
                self._accept_warning(
                    detail=f"{errno.errorcode.get(error.errno or 0, 'error')}: {error.strerror or error}"
                )
                await asyncio.sleep(backoff)
                continue
            if not self._accepting:
                self._accepting = True
                log.info("accepting connections again")
            backoff = 0.0
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: Any) -> None:
        if self._open >= self.limits.max_connections + REFUSAL_SLOTS:
            self._busy_warning(open=self._open)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # reset, no wait
            sock.close()
            return
        busy = self._open >= self.limits.max_connections
        if busy:
            self._busy_warning(open=self._open)
        self._open += 1
        task = asyncio.get_running_loop().create_task(self._connection(sock, address, busy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- one connection ----

    async def _connection(self, sock: socket.socket, address: Any, busy: bool) -> None:
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        timeout = self.limits.read_header_timeout
        if busy:
            timeout = min(timeout, REFUSAL_TIMEOUT_SECONDS)
        stream: _PlainStream | TLSStream | None = None
        writer: asyncio.StreamWriter | None = None
        clean = False
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            reader, writer = await self._streams(sock)
            stream = _PlainStream(reader, writer)
            plain_to_tls_port = False
            if self.tls:
                assert self.web_config is not None
                async with asyncio.timeout(timeout):  # the handshake has the read-header timeout
                    first = await reader.read(READ_CHUNK_BYTES)
                    if is_tls(first):
                        stream = TLSStream(reader, writer, current_context(self.web_config), first)
                        await stream.handshake()
                    elif is_plain_http(first):
                        stream, plain_to_tls_port = _PlainStream(reader, writer, first), True
                    else:
                        raise TLSRefusedError("not a TLS handshake" if first else "closed before a handshake")
            connection = _Connection(self, stream, writer, peer, busy, plain_to_tls_port, timeout)
            await connection.serve()  # for TLS, the read-header timeout starts again after the handshake
            clean = True
        except TimeoutError:
            log.debug("connection timed out", extra={"address": peer})
        except (OSError, TLSRefusedError, h11.ProtocolError) as error:
            log.debug("connection closed", extra={"address": peer, "detail": str(error) or repr(error)})
            # asyncio's reader keeps the exception it raised, and the exception its traceback, whose frames
            # hold the reader, the connection and its answer: a cycle only the garbage collector breaks.
            error.__traceback__ = None
        except Exception:  # noqa: BLE001 - a bug here closes one connection, logged once, never the server
            log.error(
                "connection failed inside the HTTP server; it was closed",
                extra={"address": peer, "traceback": traceback.format_exc().rstrip()},
            )
        finally:
            self._open -= 1
            self._closed_since_collection += 1
            if writer is None:
                sock.close()
            elif clean and stream is not None:
                stream.close()  # everything written has been drained to the kernel
            else:
                writer.transport.abort()

    async def _streams(self, sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        transport.set_write_buffer_limits(high=0)  # drain() returns only once every byte is with the kernel
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    # ---- answers the kernel has not taken yet ----

    def hold(self, connection: _Connection, size: int) -> None:
        """Count `size` bytes held for `connection` (replacing what it held). Past the budget, the connections
        holding longest are closed first: a client that reads is through in milliseconds, so those waiting
        longest are the ones that do not read, and a small answer to a reading client still goes out."""
        self._unsent += size - self._holders.get(connection, 0)
        self._holders[connection] = size
        while self._unsent > self.limits.max_unsent_bytes:
            victim = next(iter(self._holders))
            if victim is connection:  # it alone is larger than the budget: it goes out, or times out
                break
            self._unsent_warning(unsent=self._unsent, connections=len(self._holders))
            self.release(victim)
            victim.evict()

    def release(self, connection: _Connection) -> None:
        self._unsent -= self._holders.pop(connection, 0)

    # ---- running the app ----

    async def run_app(self, environ: dict[str, Any]) -> _Answer:
        """The app's answer, from a pool thread; 503 when every collection slot is taken."""
        loop = asyncio.get_running_loop()
        if environ["PATH_INFO"] not in COLLECTION_PATHS:
            async with self._other_slots:  # released just before the answer is written: no await between
                return await loop.run_in_executor(self._other_pool, self._call_app, environ)
        if self._collecting >= self.limits.max_collections:
            self._collect_warning(collecting=self._collecting)
            return _plain_answer(
                503,
                "too many scrapes in flight; try again later\n",
                ("Retry-After", "1"),
            )
        self._collecting += 1
        try:
            return await loop.run_in_executor(self._collect_pool, self._call_app, environ)
        finally:
            self._collecting -= 1

    def _call_app(self, environ: dict[str, Any]) -> _Answer:
        """Call the WSGI app and collect its whole answer; a failure is a 500 and one error line."""
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, list(headers)]  # nothing is sent before the app returns: always replaceable
            return chunks.append

        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close: Callable[[], None] | None = getattr(result, "close", None)
                if close is not None:
                    close()
            if not started:
                raise RuntimeError("the app returned without calling start_response")
            code, _, reason = started[0].partition(" ")
            return _Answer(int(code), reason, started[1], b"".join(chunks))
        except Exception:  # noqa: BLE001 - the last resort: whatever the app raised is one log line and a 500
            log.error(
                "request failed inside the exporter; the answer was HTTP 500",
                extra={"traceback": traceback.format_exc().rstrip()},
            )
            return _plain_answer(500, "internal error; see the exporter's log\n")


class HttpDate:
    """The Date header's value, formatted once a second rather than at every answer."""

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (0, "")
        """One (second, text) pair, replaced whole: safe without a lock."""

    def __call__(self) -> str:
        now = int(time.time())
        second, text = self._cached
        if second != now:
            text = email.utils.formatdate(now, usegmt=True)
            self._cached = (now, text)
        return text


class _PlainStream:
    """The connection's bytes as they come; `first` is what was already read (to tell TLS from HTTP)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b""
    ) -> None:
        self._reader, self._writer, self._first = reader, writer, first

    async def read(self, size: int) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        return await self._reader.read(size)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


class _Connection:
    """The HTTP/1.1 conversation on one connection: requests read by h11, answered in turn (keep-alive)."""

    def __init__(
        self,
        server: HTTPServer,
        stream: _PlainStream | TLSStream,
        writer: asyncio.StreamWriter,
        peer: str,
        busy: bool,
        plain_to_tls_port: bool,
        timeout: float,
    ) -> None:
        self.server = server
        self.limits = server.limits
        self.stream, self.writer = stream, writer
        self.peer = peer
        self.busy = busy
        self.plain_to_tls_port = plain_to_tls_port
        self.timeout = timeout
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.scheme = "https" if isinstance(stream, TLSStream) else "http"
        self.write_deadline: float | None = None
        """When the answer being sent must be with the kernel whole; set at its first wait."""
        self.evicted = False

    def evict(self) -> None:
        """Closed to free the server's budget for answers (HTTPServer.hold)."""
        self.evicted = True
        self.writer.transport.abort()

    async def serve(self) -> None:
        first = True
        while True:
            if not first and not self.h11.trailing_data[0]:
                # Kept alive: wait for the next request's first bytes, then give it the header timeout.
                async with asyncio.timeout(self.limits.idle_timeout):
                    data = await self.stream.read(READ_CHUNK_BYTES)
                if not data:
                    return
                self.h11.receive_data(data)
            first = False
            try:
                async with asyncio.timeout(self.timeout):
                    request = await self._read_request()
            except h11.RemoteProtocolError as error:
                status = error.error_status_hint
                await self._refuse(
                    _RefusalError(status, REFUSAL_TEXTS.get(status, "bad request\n"), str(error))
                )
                return
            except _RefusalError as refusal:
                await self._refuse(refusal)
                return
            if request is None:
                return
            await self._answer(request)
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _read_request(self) -> _Request | None:
        """The next whole request (head and body), None when the client closed between requests."""
        request: _Request | None = None
        raw: bytearray | None = bytearray(self.h11.trailing_data[0])
        """The head's bytes as received (h11 normalises line endings): kept until the head is parsed."""
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.h11.they_are_waiting_for_100_continue:
                    await self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
                data = await self.stream.read(READ_CHUNK_BYTES)
                if raw is not None:
                    raw += data
                self.h11.receive_data(data)
            elif isinstance(event, h11.Request):
                assert raw is not None
                request = self._check_head(event, raw)
                raw = None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    raise _RefusalError(413, "request body too large\n")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                request.body = bytes(body)
                return request
            else:  # ConnectionClosed before a request began
                return None

    def _check_head(self, request: h11.Request, raw: bytearray) -> _Request:
        """What h11 lets through and this server refuses; the target split into path and query."""
        if request.http_version not in (b"1.0", b"1.1"):
            raise _RefusalError(505, "only HTTP/1.0 and HTTP/1.1 are served\n")
        size = len(request.method) + len(request.target) + 11
        size += sum(len(name) + len(value) + 4 for name, value in request.headers)
        if size > self.limits.max_header_bytes:  # complete in one read, so h11's own limit did not see it
            raise _RefusalError(431, REFUSAL_TEXTS[431])
        # h11 reads bare-LF line ends and obs-fold continuation lines; RFC 9112 lets a server refuse both,
        # and a proxy in front that reads them otherwise would see other headers than this server.
        end = _HEAD_END.search(raw)
        head = raw[: end.end()] if end is not None else raw
        if head.count(b"\n") != head.count(b"\r\n"):
            raise _RefusalError(400, REFUSAL_TEXTS[400], "bare LF line ending")
        if b"\n " in head or b"\n\t" in head:
            raise _RefusalError(400, REFUSAL_TEXTS[400], "obs-fold header line")
        names = {name for name, _ in request.headers}  # h11 gives them lower-case
        if b"transfer-encoding" in names and b"content-length" in names:
            # RFC 9112 6.3: both is a request smuggling attempt (or a broken client): refuse, then close.
            raise _RefusalError(400, REFUSAL_TEXTS[400], "Transfer-Encoding with Content-Length")
        for name, value in request.headers:
            if name == b"content-length" and int(value) > self.limits.max_body_bytes:
                raise _RefusalError(413, "request body too large\n")
        target = split_target(request.target)
        if target is None:
            raise _RefusalError(400, REFUSAL_TEXTS[400], "malformed request-target")
        return _Request(request, *target)

    async def _answer(self, accepted: _Request) -> None:
        request = accepted.event
        method = request.method.decode("ascii")
        head = method == "HEAD"
        self.server._answering += 1  # a SIGTERM now lets this answer go out (HTTPServer._finish_answers)
        try:
            if self.plain_to_tls_port:
                answer = _plain_answer(400, "Client sent an HTTP request to an HTTPS server.\n")
                answer.headers.append(("Connection", "close"))
            elif self.busy:
                answer = _plain_answer(
                    503,
                    "too many connections; try again later\n",
                    ("Retry-After", "1"),
                    ("Connection", "close"),
                )
            else:
                environ = self._environ(accepted, "GET" if head else method)
                answer = await self.server.run_app(environ)
            await self._send(answer, head)
        finally:
            self.server._answering -= 1
        line = f"{method} {request.target.decode('latin-1')} HTTP/{request.http_version.decode('ascii')}"
        log.debug(f'http "{line}" {answer.status} {len(answer.body)}', extra={"address": self.peer})

    def _environ(self, accepted: _Request, method: str) -> dict[str, Any]:
        """The WSGI environ (PEP 3333) of a request; HEAD is shown to the app as the GET it answers like."""
        request, path, query, body = accepted.event, accepted.path, accepted.query, accepted.body
        server_host, server_port = self.writer.get_extra_info("sockname")[:2]
        remote_host, _, remote_port = self.peer.rpartition(":")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(server_host),
            "SERVER_PORT": str(server_port),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('ascii')}",
            "SERVER_SOFTWARE": server_name(),
            "REMOTE_ADDR": remote_host,
            "REMOTE_PORT": remote_port,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": _ErrorLog(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for raw_name, raw_value in request.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if "_" in name:  # as wsgiref: X_Foo would pass for X-Foo once both are HTTP_X_FOO
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    async def _send(self, answer: _Answer, head: bool = False) -> None:
        names = {name.lower() for name, _ in answer.headers}
        headers = list(answer.headers)
        if "content-length" not in names:
            headers.append(("Content-Length", str(len(answer.body))))
        if "x-content-type-options" not in names:
            headers.append(("X-Content-Type-Options", "nosniff"))
        headers += [("Date", self.server.date()), ("Server", server_name())]
        data = self.h11.send(
            h11.Response(status_code=answer.status, reason=answer.reason.encode("latin-1"), headers=headers)
        )
        body = b"" if head else answer.body
        self.write_deadline = None
        try:
            if len(body) <= WRITE_CHUNK_BYTES:
                if body:
                    data += self.h11.send(h11.Data(data=body)) or b""
                data += self.h11.send(h11.EndOfMessage()) or b""
                await self._write(data or b"", len(body))
                return
            await self._write(data or b"", len(body))
            view = memoryview(body)
            for start in range(0, len(body), WRITE_CHUNK_BYTES):
                piece = bytes(view[start : start + WRITE_CHUNK_BYTES])
                await self._write(self.h11.send(h11.Data(data=piece)) or b"", len(body))
            await self._write(self.h11.send(h11.EndOfMessage()) or b"", len(body))
        finally:
            self.server.release(self)

    async def _write(self, data: bytes | None, answer_bytes: int = 0) -> None:
        """Hand `data` to the transport. When the kernel does not take it at once, what this connection
        holds (the `answer_bytes` of the answer it belongs to, and the transport's copy) is counted in the
        server's budget until the kernel has it all, and the whole answer has the write timeout."""
        self.stream.write(data or b"")
        buffered = self.writer.transport.get_write_buffer_size()
        if not buffered:
            return  # all of it is with the kernel already (the usual case): no timer to arm and cancel
        if self.write_deadline is None:
            self.write_deadline = asyncio.get_running_loop().time() + self.limits.write_timeout
        self.server.hold(self, answer_bytes + buffered)
        async with asyncio.timeout_at(self.write_deadline):
            await self.stream.drain()
        if self.evicted:
            raise ConnectionResetError("closed to keep answers held for clients within their budget")

    async def _refuse(self, refusal: _RefusalError) -> None:
        """Answer a request the server refuses, then close after draining what the client still sends."""
        extra = {"address": self.peer, "status": refusal.status}
        log.debug("request refused", extra={**extra, "detail": refusal.detail} if refusal.detail else extra)
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        answer = _plain_answer(refusal.status, refusal.text, ("Connection", "close"))
        await self._send(answer)
        if isinstance(self.stream, _PlainStream):  # TLS has no half-close; its close_notify comes at the end
            self.writer.write_eof()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(LINGER_SECONDS):
                drained = 0
                while drained < 4 * READ_CHUNK_BYTES and (data := await self.stream.read(READ_CHUNK_BYTES)):
                    drained += len(data)


FILES_BESIDES_CONNECTIONS = 64
"""Open files the process needs besides connections and collections: the listener, logs, config files."""


def fit_open_file_limit(limits: ServerLimits, room_sessions: int = 0) -> None:
    """Raise the process's soft open-file limit to what `limits` and `room_sessions` (sockets kept open to
    Rooms between scrapes) need, within the hard limit (as Go does).

    Systemd's and some container runtimes' soft limit is 1024, below the default --web.max-connections; a
    hard limit that is lower than needed is a warning: past it, connections wait in the listen backlog.
    """
    needed = limits.max_connections + REFUSAL_SLOTS + 2 * limits.max_collections + FILES_BESIDES_CONNECTIONS
    needed += room_sessions
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft < needed:
        log.warning(
            "the open-file limit is below what --web.max-connections, --web.max-collections and "
            "--room.max-sessions need; "
            "past it, new connections wait until others close",
            extra={"limit": soft, "needed": needed},
        )


def parse_listen_address(text: str) -> tuple[str, int]:
    """`:18765`, `0.0.0.0:18765`, `[::1]:18765` -> (host, port); ValueError when it is none of those."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (for example :18765 or 127.0.0.1:18765)")
    host = host.strip("[]")
    return host, int(port_text)


class TokenBucket:
    """golang.org/x/time/rate's `Limiter.Allow`: `burst` tokens, full at first, one more every interval; a
    request takes one, and one that finds none is refused and takes nothing."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._last = now

    def take(self, now: float) -> float:
        """0 when a token was taken; otherwise the seconds until the next one."""
        tokens = self._tokens + max(0.0, now - self._last) / self.limit.interval_seconds
        self._tokens, self._last = min(float(self.limit.burst), tokens), now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) * self.limit.interval_seconds


class RateLimited:
    """The web config's `rate_limit` over every request and every path, `/healthz` included, before basic
    auth, as the toolkit's handler applies it: past it, `429 Too Many Requests`. An edit of the file that
    changes the limit starts a new, full bucket; while the file is invalid, the next layer answers 500."""

    def __init__(
        self, app: WSGIApp, watcher: WebConfigWatcher, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app, self.watcher, self._clock = app, watcher, clock
        self._bucket: TokenBucket | None = None
        self._lock = threading.Lock()
        self._warning = _RateLimitedWarning("requests past the web config's rate_limit are answered 429")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        try:
            config = self.watcher.current()
        except WebConfigError:
            return self.app(environ, start_response)
        limit = config.rate_limit
        if limit is None:
            return self.app(environ, start_response)
        with self._lock:
            now = self._clock()
            if self._bucket is None or self._bucket.limit != limit:
                self._bucket = TokenBucket(limit, now)
            wait = self._bucket.take(now)
            if wait:
                self._warning(address=environ.get("REMOTE_ADDR", ""))
        if not wait:
            return self.app(environ, start_response)
        retry = ("Retry-After", str(max(1, math.ceil(wait))))
        return plain_text(
            start_response,
            "429 Too Many Requests",
            "429 Too Many Requests: past the web config's rate_limit; retry later\n",
            headers=(retry, *config.headers),
        )


def make_http_server(
    app: WSGIApp,
    host: str,
    port: int,
    web_config: WebConfigWatcher | None = None,
    limits: ServerLimits | None = None,
) -> HTTPServer:
    """Bind the app; IPv6 hosts get an IPv6 socket, an empty host listens on every IPv4 address.

    With a web config, every request passes its rate limit, then its basic auth, and TLS is on when the
    config has tls_server_config at start-up (certificates and settings may change later; TLS on/off needs
    a restart).
    """
    wrapped = app if web_config is None else RateLimited(WebSecurity(app, web_config), web_config)
    return HTTPServer(wrapped, host, port, web_config, limits)
