"""Sessions and one round trip, measured as ratios in one run.

Three comparisons, each of the exporter against the floor a minimal client reaches on the same emulated Room:

1. Round trips. Through an asyncio TCP proxy on loopback that delays every chunk 10 ms each way (20 ms of
   round-trip time), a scrape with a warm session, a scrape without sessions, and one bare request on an
   already open raw WebSocket (websocket-client, `auth` once, then one request and its reply). The scrapes are
   given in RTTs; target: a warm scrape <= 1.5 RTT.
2. A big reply. On loopback, a Room listing 10 000 outgoing requests: a warm-session scrape versus one bare
   request for the same reply on an already open raw connection. Target: <= 1.5x.
3. A fleet. 100 emulated Rooms probed at once (`/probe`, warm sessions, each on its kept-alive connection
   with the headers Prometheus 2 sends: OpenMetrics first, gzip), versus 100 minimal raw clients doing
   connect + `auth` + request at once: a thread each (websocket-client, as the exporter), and all in one
   event loop (websockets); the faster of the two is the floor. Target: wall time <= 2x.

A "scrape" is a whole `GET /metrics` (sections 1 and 2) or `GET /probe` (section 3) answered by ExporterApp,
served in this process by the exporter's own HTTP server; `collect_room` alone (the fetch and the parse, no
HTTP, no exposition) is shown beside it. The scrapes ask what the exporter asks by default (the outgoing
requests and every optional method; the version once per session); the raw client asks
getOutgoingFilesRequests only and decodes each message with json.loads, which any client must do to find its
reply. The raw client skips websocket-client's pure-Python UTF-8 check, as the exporter does.

The emulated Rooms, the delay proxy and section 3's HTTP clients (Prometheus's part) run in child processes
(this script with --child), so this process holds the exporter's side alone, and "CPU here" (this process's
CPU time, every thread) is the exporter's cost, or the raw clients'. The Rooms' work is the same for both.
Wall and CPU times are medians of runs taken in turns, so a busy moment of a shared machine hits all alike.
The proxy delays data, not TCP's handshake: a real 20 ms network would add one more RTT to every new
connection (the cold scrape's and the raw clients'), never to a warm scrape.

Prints medians, the ratios, the targets and whether each is met. Measures, never asserts (`make bench`);
`--profile N` adds section 2's profiles, `--only 1` (2, 3) runs one section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gzip
import http.client
import io
import itertools
import json
import os
import pstats
import re
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import websocket
from child import Child  # beside this script: benchmarks/ is the script's first path entry
from child import children as children_of
from prometheus_client import CollectorRegistry, generate_latest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve

from exporter.collect.collection import Collection, collect_room
from exporter.collect.families import RoomCollector, collection_metrics
from exporter.emulator.scenario import Scenario, load_scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings
from exporter.fleet.reload import ConfigHolder
from exporter.methods import OUTGOING_METHOD, methods_for
from exporter.room import RoomTarget, parse_target
from exporter.room.request import RoomRequest
from exporter.room.sessions import SessionPool
from exporter.web.app import ExporterApp
from exporter.web.server import make_http_server
from exporter.web.settings import ExporterSettings

ONE_WAY_DELAY = 0.010
"""What the proxy adds to every chunk in each direction: 20 ms of round-trip time."""
RTT_TARGET = 1.5
"""A warm scrape through the proxy, in RTTs."""
SIZE_TARGET = 1.5
"""A warm scrape of a 10 000-entry reply over one bare request for it."""
FLEET_TARGET = 2.0
"""100 Rooms scraped at once over 100 raw clients doing connect + auth + request at once."""
TIMEOUT = 10.0
"""Every collection's deadline, every socket's timeout and every wait on a thread or a child."""
MAX_MESSAGES = 100
"""A raw client reads at most this many messages (notifications) before its reply."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
METHODS = methods_for({})
"""What a scrape asks by default: getOutgoingFilesRequests and every optional method."""


# ---- the Rooms and the proxy, in child processes ----


def big_scenario(entries: int) -> Scenario:
    """A busy Room: the documentation's two entry shapes (a peer, a group conference) over every status."""

    def entry(n: int) -> dict[str, Any]:
        common = {
            "fileRequestId": f"0d99602a-82a7-4aea-9a1d-{n:012d}",
            "fileName": f"file-{n}.jpg",
            "status": n % 4,
            "size": 3200 + n,
            "timestamp": 1659251271 + n,
            "fileId": 346234218 + n,
        }
        if n % 3 == 0:
            return {**common, "confId": "000001703e81e38e@some.server#vcs"}
        return {**common, "peerId": f"820_{n}@some.server", "peerDn": f"820_{n}"}

    return Scenario(entries=[entry(n) for n in range(entries)])


async def _until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_rooms(count: int, entries: int) -> None:
    """`count` emulated Rooms on one event loop, one listening port each; prints the ports as JSON."""
    scenario = big_scenario(entries) if entries else load_scenario("doc-example")
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for _ in range(count):
            room = EmulatedRoom(EmulatorSettings(websocket_port=0, web_port=0), scenario=scenario)
            server = await stack.enter_async_context(
                serve(
                    room.handle,
                    "127.0.0.1",
                    0,
                    process_request=room.process_request,
                    ping_interval=None,
                    close_timeout=1.0,
                )
            )
            ports.append(server.sockets[0].getsockname()[1])
        print(json.dumps({"ports": ports}), flush=True)
        await _until_stdin_closes()


async def _delayed_copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Every chunk read is written `delay` after it was read, in order; chunks in flight overlap (a pipe, not
    a queue of delays), and the end of the stream is passed on the same way."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
    except OSError:
        queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(OSError):
        await delivering


async def _relay(
    upstream_port: int, delay: float, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        writer.close()
        return
    try:
        await asyncio.gather(_delayed_copy(reader, up_writer, delay), _delayed_copy(up_reader, writer, delay))
    except asyncio.CancelledError:
        pass  # the proxy stopping: this connection ends quietly
    finally:
        for each in (writer, up_writer):
            each.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def serve_proxies(upstreams: list[int], delay: float) -> None:
    """A delaying proxy to each upstream port, and one to an echo server (to measure the RTT it makes)."""
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    ports = []
    for upstream in [*upstreams, echo.sockets[0].getsockname()[1]]:
        server = await asyncio.start_server(partial(_relay, upstream, delay), "127.0.0.1", 0)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports[:-1], "echo": ports[-1]}), flush=True)
    await _until_stdin_closes()


PROMETHEUS_HEADERS = (
    "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    "Accept-Encoding: gzip\r\n"
    "User-Agent: Prometheus/2.53.0\r\n"
    f"X-Prometheus-Scrape-Timeout-Seconds: {TIMEOUT:g}\r\n"
)
"""What Prometheus 2 sends with every scrape: it asks for OpenMetrics first, and gzip."""


async def serve_probes(exporter_port: int, room_ports: list[int]) -> None:
    """Prometheus's part, out of the exporter's process: at each line read, every Room probed at once, each
    on its own kept-alive connection with Prometheus's headers (a scrape target keeps its connection);
    prints the wall time of the whole round."""
    paths = [f"/probe?target=ws://127.0.0.1:{port}&module=default" for port in room_ports]
    connections = [await asyncio.open_connection("127.0.0.1", exporter_port) for _ in paths]
    print(json.dumps({"ports": []}), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(
                *(_scrape(*connection, path) for connection, path in zip(connections, paths, strict=True))
            ),
            TIMEOUT * 2,
        )
        print(json.dumps(time.perf_counter() - started), flush=True)
    for _, writer in connections:
        writer.close()


async def _scrape(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
    """One scrape as Prometheus makes it, on a kept-alive connection; exits unless the Room is up."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{PROMETHEUS_HEADERS}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line)
    body = await reader.readexactly(int(headers["Content-Length"]))
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    if not head.startswith(b"HTTP/1.1 200") or b"trueconf_up 1.0" not in body:
        raise SystemExit(f"probe {path} failed:\n{head.decode('latin-1')}{body[:2000]!r}")


def children(*args: Sequence[str]) -> contextlib.AbstractContextManager[list[Child]]:
    """This script's children (`--child ARGS`), one for each argument list, stopped when the block ends."""
    return children_of(__file__, *args, timeout=TIMEOUT)


# ---- the clients ----

_request_ids = itertools.count(1)


class RawClient:
    """A minimal client: websocket-client, `auth` once, then requests; json.loads of every message read."""

    def __init__(self, port: int) -> None:
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}", timeout=TIMEOUT, enable_multithread=False, skip_utf8_validation=True
        )
        self.call("auth", type="unsecured")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        request_id = f"raw-{next(_request_ids)}"
        self.ws.send(json.dumps({"method": method, "requestId": request_id, **params}))
        for _ in range(MAX_MESSAGES):
            message: dict[str, Any] = json.loads(self.ws.recv())
            if message.get("requestId") == request_id:
                if message.get("result") is not True:
                    raise SystemExit(f"the Room refused {method}: {message}")
                return message
        raise SystemExit(f"no reply to {method} in {MAX_MESSAGES} messages")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.shutdown()  # type: ignore[no-untyped-call]  # websocket-client leaves it unannotated


def connect_auth_request(port: int) -> None:
    """What a minimal client does to ask a Room once: connect, upgrade, auth, request, reply."""
    client = RawClient(port)
    try:
        client.call(OUTGOING_METHOD)
    finally:
        client.close()


async def _raw_async(port: int) -> ClientConnection:
    """connect + auth + request as one coroutine of an event loop (websockets, no compression): the same
    floor without a thread per client. Returns the open connection, to be closed after the clock stops."""
    ws = await ws_connect(
        f"ws://127.0.0.1:{port}", compression=None, ping_interval=None, max_size=None, open_timeout=TIMEOUT
    )
    for method, params in (("auth", {"type": "unsecured"}), (OUTGOING_METHOD, {})):
        request_id = f"raw-{next(_request_ids)}"
        await ws.send(json.dumps({"method": method, "requestId": request_id, **params}))
        for _ in range(MAX_MESSAGES):
            message = json.loads(await ws.recv())
            if message.get("requestId") == request_id:
                break
        else:
            raise SystemExit(f"no reply to {method} in {MAX_MESSAGES} messages")
        if message.get("result") is not True:
            raise SystemExit(f"the Room refused {method}: {message}")
    return ws


def raw_in_one_loop(loop: asyncio.AbstractEventLoop, ports: Sequence[int], into: Timings) -> None:
    """Every Room asked at once by `_raw_async`, in one thread; the connections are closed untimed."""

    async def all_at_once() -> list[ClientConnection]:
        return await asyncio.wait_for(asyncio.gather(*(_raw_async(port) for port in ports)), TIMEOUT * 2)

    connections: list[ClientConnection] = []
    timed(lambda: connections.extend(loop.run_until_complete(all_at_once())), into)

    async def close_all() -> None:
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in connections)), TIMEOUT)

    loop.run_until_complete(close_all())


def rtt_probe(port: int) -> Callable[[], None]:
    """One byte there and back through the proxy's echo: the round-trip time the proxy really makes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping() -> None:
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise SystemExit("the echo server answered something else")

    return ping


def collected(collection: Collection) -> None:
    if not collection.up:
        raise SystemExit(f"collection failed: {collection.error}")


class Exporter:
    """ExporterApp served in this process by the exporter's own HTTP server on loopback."""

    def __init__(self, settings: ExporterSettings, config: ConfigHolder | None = None) -> None:
        self.app = ExporterApp(settings, config)
        self.server = make_http_server(self.app, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-server", daemon=True)
        self.thread.start()
        self._connection: http.client.HTTPConnection | None = None

    def get(self, path: str) -> None:
        """One scrape on a kept-alive HTTP connection, as Prometheus scrapes; exits unless the Room is up."""
        if self._connection is None:
            self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        self._connection.request("GET", path)
        response = self._connection.getresponse()
        body = response.read()
        if response.status != 200 or b"trueconf_up 1.0" not in body:
            raise SystemExit(f"scrape of {path} failed: HTTP {response.status}\n{body.decode()[:2000]}")

    def call(self, path: str) -> None:
        """The WSGI app called in this thread, without HTTP: what a scrape costs the app alone."""
        answer: list[str] = []
        route, _, query = path.partition("?")
        environ = {"PATH_INFO": route, "QUERY_STRING": query, "REQUEST_METHOD": "GET"}
        body = b"".join(self.app(environ, lambda status, headers, exc_info=None: answer.append(status)))
        if answer != ["200 OK"] or b"trueconf_up 1.0" not in body:
            raise SystemExit(f"{path} failed: {answer}\n{body.decode()[:2000]}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self.server.shutdown()
        self.thread.join(timeout=TIMEOUT)
        self.app.sessions.close_all()


# ---- measuring ----


@dataclass
class Timings:
    """Wall times, and this process's CPU times (all its threads: the exporter's server and collections),
    user and system together, and system (the kernel's part: syscalls, futexes, waking threads) alone."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    system: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def system_median(self) -> float:
        return statistics.median(self.system)


def cpu_times() -> tuple[float, float]:
    """(user + system, system) CPU seconds this process has used, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


class CpuClock:
    """Wall and CPU time from its creation to `stop()`, added to a Timings."""

    def __init__(self) -> None:
        self.cpu, self.system = cpu_times()
        self.started = time.perf_counter()

    def stop(self, into: Timings, wall: float | None = None) -> None:
        ended = time.perf_counter()
        cpu, system = cpu_times()
        into.wall.append(ended - self.started if wall is None else wall)
        into.cpu.append(cpu - self.cpu)
        into.system.append(system - self.system)


def timed(action: Callable[[], object], into: Timings) -> None:
    clock = CpuClock()
    action()
    clock.stop(into)


def interleaved(actions: dict[str, Callable[[], object]], runs: int, warmup: int = 3) -> dict[str, Timings]:
    """Each action `runs` times, taking turns, so a slow moment of a shared machine hits them all alike."""
    for _ in range(warmup):
        for action in actions.values():
            action()
    timings = {name: Timings() for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            timed(action, timings[name])
    return timings


def at_once(actions: Sequence[Callable[[], object]]) -> Callable[[], None]:
    """A thread per action, started and waiting: the function returned releases them all and returns when
    the last has finished (exits if any failed)."""
    go = threading.Event()
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        go.wait(TIMEOUT)
        try:
            action()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(action,), daemon=True) for action in actions]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # every thread waiting on `go`

    def release() -> None:
        go.set()
        for thread in threads:
            thread.join(TIMEOUT * 2)
        if errors or any(thread.is_alive() for thread in threads):
            raise SystemExit(f"{len(errors)} of {len(actions)} failed or hung; first: {errors[:1]}")

    return release


@dataclass
class Verdict:
    name: str
    value: float
    target: float
    unit: str
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.target


def print_table(title: str, rows: list[tuple[str, Timings, str]], system: bool = False) -> None:
    """Medians of wall and CPU time; with `system`, the kernel's share of the CPU time too (its split from
    user time is sampled at clock ticks: meaningful for runs of hundreds of milliseconds only)."""
    print(f"\n{title}")
    print(f"  {'':<50} {'median':>9} {'CPU here':>9}" + (f" {'(system)':>10}" if system else ""))
    for name, timings, detail in rows:
        wall, cpu = timings.median * 1000, timings.cpu_median * 1000
        kernel = f" ({timings.system_median * 1000:5.1f} ms)" if system else ""
        print(f"  {name:<50} {wall:6.1f} ms {cpu:6.1f} ms{kernel}  {detail}".rstrip())


def thread_cpu() -> dict[str, float]:
    """CPU seconds each kind of live thread of this process has used so far, by thread name without its
    number (Linux /proc; empty elsewhere). Ticks of 10 ms: meaningful over many scrapes only."""
    names = {thread.native_id: re.sub(r"[_-]\d+$", "", thread.name) for thread in threading.enumerate()}
    used: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = stat[stat.rindex(")") + 2 :].split()  # utime and stime are fields 14 and 15 of stat
        name = names.get(int(task.name), "other")
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return used


def ratios(timings: Timings, floor: Timings, name: str) -> str:
    wall = timings.median / floor.median
    return f"{wall:4.2f}x {name}, CPU here {timings.cpu_median / floor.cpu_median:4.2f}x"


def profile(action: Callable[[], object], runs: int, lines: int) -> None:
    """The functions that take the time of `runs` calls of `action` in this process, by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        action()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    print(text[text.find("   ncalls") :].rstrip())


# ---- the three sections ----


def round_trips(runs: int) -> Verdict:
    nominal = ONE_WAY_DELAY * 2
    with (
        children(("rooms", "--rooms", "1", "--entries", "0")) as (rooms,),
        children(("proxy", "--upstream", str(rooms.ports[0]), "--delay", str(ONE_WAY_DELAY))) as (proxy,),
    ):
        port = proxy.ports[0]
        target = parse_target(f"ws://127.0.0.1:{port}")
        raw = RawClient(port)
        pool = SessionPool()
        warm = Exporter(ExporterSettings(target, None, TIMEOUT))
        cold = Exporter(ExporterSettings(target, None, TIMEOUT, sessions=False))
        try:
            t = interleaved(
                {
                    "rtt": rtt_probe(proxy.info["echo"]),
                    "bare": partial(raw.call, OUTGOING_METHOD),
                    "warm": partial(warm.get, "/metrics"),
                    "warm collect": lambda: collected(
                        collect_room(RoomRequest(target, None, methods=METHODS), TIMEOUT, pool=pool)
                    ),
                    "cold": partial(cold.get, "/metrics"),
                    "cold collect": lambda: collected(
                        collect_room(RoomRequest(target, None, methods=METHODS), TIMEOUT)
                    ),
                    "cold raw": partial(connect_auth_request, port),
                },
                runs,
            )
            logins = warm.app.sessions.logins, cold.app.sessions.logins
        finally:
            raw.close()
            pool.close_all()
            warm.close()
            cold.close()

    def in_rtt(name: str) -> str:
        m = t[name].median
        measured, bare = m / t["rtt"].median, m / t["bare"].median
        return f"{m / nominal:4.2f} RTT ({measured:4.2f} measured RTTs), {bare:4.2f}x bare"

    print_table(
        f"1. Round trips through the delay proxy ({nominal * 1000:g} ms RTT added; medians of {runs})",
        [
            (
                "RTT measured (1 byte through the proxy's echo)",
                t["rtt"],
                f"{t['rtt'].median / nominal:4.2f} RTT",
            ),
            ("bare request on an open raw WebSocket", t["bare"], in_rtt("bare")),
            (f"scrape /metrics, warm session ({logins[0]} logins)", t["warm"], in_rtt("warm")),
            ("  collect_room, warm session", t["warm collect"], in_rtt("warm collect")),
            (f"scrape /metrics, no sessions ({logins[1]} logins)", t["cold"], in_rtt("cold")),
            ("  collect_room, no sessions", t["cold collect"], in_rtt("cold collect")),
            ("raw client: connect + auth + request", t["cold raw"], in_rtt("cold raw")),
        ],
    )
    return Verdict("warm scrape through a 20 ms RTT proxy", t["warm"].median / nominal, RTT_TARGET, "RTT")


def big_reply(runs: int, entries: int, profile_lines: int) -> Verdict:
    with children(("rooms", "--rooms", "1", "--entries", str(entries))) as (rooms,):
        port = rooms.ports[0]
        target = parse_target(f"ws://127.0.0.1:{port}")
        raw = RawClient(port)
        size = len(json.dumps(raw.call(OUTGOING_METHOD)))
        pool = SessionPool()
        exporter = Exporter(ExporterSettings(target, None, TIMEOUT))
        try:
            t = interleaved(
                {
                    "bare": partial(raw.call, OUTGOING_METHOD),
                    "warm": partial(exporter.get, "/metrics"),
                    "collect": lambda: collected(
                        collect_room(RoomRequest(target, None, methods=METHODS), TIMEOUT, pool=pool)
                    ),
                    "outgoing only": lambda: collected(
                        collect_room(
                            RoomRequest(target, None, methods=(OUTGOING_METHOD,)), TIMEOUT, pool=pool
                        )
                    ),
                },
                runs,
            )
            if profile_lines:
                print(f"\nProfile of {runs} warm scrapes of /metrics, {entries} entries (the app, no HTTP):")
                profile(partial(exporter.call, "/metrics"), runs, profile_lines)
                print(f"\nProfile of {runs} bare requests, {entries} entries:")
                profile(partial(raw.call, OUTGOING_METHOD), runs, profile_lines)
        finally:
            raw.close()
            pool.close_all()
            exporter.close()

    def ratio(name: str) -> str:
        return ratios(t[name], t["bare"], "bare")

    print_table(
        f"2. A {entries}-entry reply ({size / 1024:.0f} KiB of JSON) on loopback (medians of {runs})",
        [
            ("bare request on an open raw WebSocket", t["bare"], ""),
            ("scrape /metrics, warm session", t["warm"], ratio("warm")),
            ("  collect_room, warm session", t["collect"], ratio("collect")),
            (
                "  collect_room, warm, getOutgoingFilesRequests only",
                t["outgoing only"],
                ratio("outgoing only"),
            ),
        ],
    )
    return Verdict(
        f"warm scrape of {entries} entries / bare request",
        t["warm"].median / t["bare"].median,
        SIZE_TARGET,
        "x",
    )


def fleet(rounds: int, count: int, room_processes: int, runs: int) -> Verdict:
    per_child = -(-count // room_processes)
    specs = [
        ("rooms", "--rooms", str(min(per_child, count - i)), "--entries", "0")
        for i in range(0, count, per_child)
    ]
    with children(*specs) as started, tempfile.TemporaryDirectory() as directory:
        ports = [port for child in started for port in child.ports]
        targets = [parse_target(f"ws://127.0.0.1:{port}") for port in ports]
        config_file = Path(directory) / "exporter.yml"
        config_file.write_text(f"modules:\n  default:\n    timeout: {TIMEOUT:g}s\n")
        exporter = Exporter(ExporterSettings(targets[0], None, TIMEOUT), ConfigHolder(config_file, TIMEOUT))
        pool = SessionPool()

        def collect(target: RoomTarget) -> None:
            collected(collect_room(RoomRequest(target, None, methods=METHODS), TIMEOUT, pool=pool))

        raw_actions = [partial(connect_auth_request, port) for port in ports]
        collect_actions = [partial(collect, target) for target in targets]
        upstreams = [arg for port in ports for arg in ("--upstream", str(port))]
        try:
            with children(("probes", "--exporter-port", str(exporter.port), *upstreams)) as (prometheus,):
                at_once(collect_actions)()  # every session opened (and the version asked) once, before timing
                prometheus.ask("go")
                t = {name: Timings() for name in ("raw", "raw loop", "probe", "collect")}
                by_thread: dict[str, float] = {}
                loop = asyncio.new_event_loop()
                for _ in range(rounds):
                    timed(at_once(raw_actions), t["raw"])
                    raw_in_one_loop(loop, ports, t["raw loop"])
                    clock, before = CpuClock(), thread_cpu()
                    clock.stop(t["probe"], wall=float(prometheus.ask("go")))  # the wall time Prometheus saw
                    for name, used in thread_cpu().items():
                        by_thread[name] = by_thread.get(name, 0.0) + used - before.get(name, 0.0)
                    timed(at_once(collect_actions), t["collect"])
                loop.close()
            logins = exporter.app.sessions.logins, pool.logins
            one = targets[0]
            query = f"/probe?target={one}&module=default"
            fixed = collect_room(RoomRequest(one, None, methods=METHODS), TIMEOUT, pool=pool)
            exposed = CollectorRegistry(auto_describe=False)  # the text of that one collection, no Room asked
            exposed.register(RoomCollector(lambda: fixed))
            samples = sum(len(family.samples) for family in collection_metrics(fixed))
            serial = interleaved(
                {
                    "raw": partial(connect_auth_request, ports[0]),
                    "collect": partial(collect, one),
                    "exposition": partial(generate_latest, exposed),
                    "app": partial(exporter.call, query),
                    "http": partial(exporter.get, query),
                },
                runs,
            )
        finally:
            exporter.close()
            pool.close_all()

    floor_name = min(("raw", "raw loop"), key=lambda name: t[name].median)
    floor = t[floor_name]

    def per_room(name: str) -> str:
        return f"{t[name].cpu_median / count * 1000:4.2f} ms CPU here per Room"

    def ratio(name: str) -> str:
        return f"{ratios(t[name], floor, 'raw')}; {per_room(name)}"

    print_table(
        f"3. {count} Rooms at once, wall time ({len(started)} Room process(es); medians of {rounds} rounds; "
        f"the ratios to the faster raw clients)",
        [
            (f"{count} raw clients in threads (websocket-client)", t["raw"], per_room("raw")),
            (f"{count} raw clients in one event loop (websockets)", t["raw loop"], per_room("raw loop")),
            (f"{count} /probe at once, warm ({logins[0]} logins in all)", t["probe"], ratio("probe")),
            (f"  {count} collect_room in threads, warm ({logins[1]} logins)", t["collect"], ratio("collect")),
        ],
        system=True,
    )
    if by_thread:
        shares = ", ".join(
            f"{name} {used / rounds * 1000:.0f} ms"
            for name, used in sorted(by_thread.items(), key=lambda item: -item[1])
            if used >= 0.0005
        )
        print(f"  CPU here per round of {count} /probe, by thread: {shares}")
    print_table(
        f"   One Room at a time, where a probe's CPU goes (medians of {runs})",
        [
            ("raw client: connect + auth + request (a thread)", serial["raw"], ""),
            ("collect_room, warm (fetch and parse)", serial["collect"], ""),
            (f"exposition of one collection ({samples} samples)", serial["exposition"], "generate_latest"),
            ("/probe, the app called directly (+ exposition)", serial["app"], ""),
            ("/probe over HTTP (+ its server; http.client here)", serial["http"], ""),
        ],
    )
    other = "raw loop" if floor_name == "raw" else "raw"
    kind = {"raw": "in threads", "raw loop": "in one event loop"}
    return Verdict(
        f"{count} Rooms probed at once / raw clients",
        t["probe"].median / floor.median,
        FLEET_TARGET,
        "x",
        f"(raw clients {kind[floor_name]}; {t['probe'].median / t[other].median:.2f}x those {kind[other]})",
    )


def child_main(args: argparse.Namespace) -> None:
    if args.child == "rooms":
        asyncio.run(serve_rooms(args.rooms, args.entries))
    elif args.child == "proxy":
        asyncio.run(serve_proxies(args.upstream, args.delay))
    elif args.child == "probes":
        asyncio.run(serve_probes(args.exporter_port, args.upstream))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="timed runs per figure in sections 1 and 2")
    parser.add_argument("--entries", type=int, default=10_000, help="entries of section 2's reply")
    parser.add_argument("--rooms", type=int, default=100, help="Rooms of section 3")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per figure in section 3")
    parser.add_argument("--room-processes", type=int, default=1, help="processes serving section 3's Rooms")
    parser.add_argument("--profile", type=int, default=0, metavar="LINES", help="profile section 2's scrapes")
    parser.add_argument("--only", choices=("1", "2", "3"), action="append", help="run only these sections")
    parser.add_argument("--child", choices=("rooms", "proxy", "probes"), help=argparse.SUPPRESS)
    parser.add_argument("--exporter-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=ONE_WAY_DELAY, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    sections = set(args.only or ("1", "2", "3"))
    started = time.perf_counter()
    verdicts = []
    if "1" in sections:
        verdicts.append(round_trips(args.runs))
    if "2" in sections:
        verdicts.append(big_reply(args.runs, args.entries, args.profile))
    if "3" in sections:
        verdicts.append(fleet(args.rounds, args.rooms, args.room_processes, args.runs))
    print(f"\nTargets (measured in {time.perf_counter() - started:.0f} s, never asserted):")
    for v in verdicts:
        met = "met" if v.met else "MISSED"
        figure = f"{v.value:5.2f} {v.unit:<3} target <= {v.target:g} {v.unit:<3}"
        print(f"  {v.name:<50} {figure} {met} {v.note}".rstrip())


if __name__ == "__main__":
    main()
