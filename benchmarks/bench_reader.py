"""Kept Room sessions between scrapes, measured on a real `trueconf-exporter serve` process.

Two sections, each against raw Rooms written here: an asyncio WebSocket server in a child process that
answers every method a scrape asks with the reference's shapes, pongs, closes when asked, and on command
floods one of its connections. The Rooms' own work is in their processes, never in the exporter's.

1. Idle sessions. 1 000 Rooms probed once each (`/probe`, a few clients at once), so the exporter holds
   1 000 authorised sessions; then 10 s in which nothing is asked: the exporter's CPU time (utime + stime of
   /proc/PID/stat, every thread), its threads and their context switches. Its resident memory (VmRSS) with
   0, 500 and 1 000 sessions gives what one idle session costs (the slope over the last 500 Rooms, which no
   earlier probe touched), and from it how many sessions the shipped memory limits leave room for
   (deploy/kubernetes/deployment.yaml, contrib/systemd/trueconf-exporter.service; read from those files).
   RSS leaves out the kernel's memory for the sockets, which a memory cgroup charges as well.
2. A notification flood. One Room sends 50 000 progress notifications to its kept session (none asked for;
   a busy Room during large transfers), beside a healthy Room probed every 10 ms throughout: the healthy
   probes' latency before and during the flood (median, slowest), the exporter's RSS and CPU, how long the
   flooding Room takes to hand its notifications to the connection, the longest it waits for the connection
   to take one write (a Room that is never blocked waits only for TCP's flow control), and what the next
   probe of the flooding Room says. Twice, each on a new exporter and new Rooms: as fast as the connection
   takes them, and paced at 3 000 a second. A flood still being sent when its bound runs out is stopped
   there and reported as blocked.

100 Rooms probed at once against 100 minimal raw clients is section 3 of bench_sessions.py.

The exporter is `python -m exporter serve` started in a scratch directory, so PYTHONPATH chooses the tree
measured: `PYTHONPATH=/path/to/another/checkout .venv/bin/python benchmarks/bench_reader.py` measures that
checkout's exporter with the same Rooms and the same figures (this script imports nothing of the exporter).
Measures and prints, never asserts (`make bench`); `--only 1` (or 2) runs one section.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from child import Child, children  # beside this script: benchmarks/ is the script's first path entry

REPOSITORY = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
"""Every HTTP request's timeout, every wait for a child's answer, and the probes' module timeout."""
WAIT_STEPS = 200
"""Polls of a condition (the exporter up, the sessions counted) before giving up, each 50 ms apart."""
FILES_WANTED = 8192
"""RLIMIT_NOFILE asked for this process and its children: 1 000 Rooms hold 2 000 sockets in their process,
and the exporter one per session."""
PROBE_INTERVAL = 0.010
"""The healthy Room's probes during a flood start this far apart (back to back when one takes longer)."""
OTHER_BOUNDS_MIB = 103.0
"""What the exporter was measured to reach with every other bound at its worst (connections, scrapes in
flight, the shared budget for the Rooms' large messages): docs/deployment.md#sizing."""


# ---- the raw Rooms, in a child process ----

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OUTGOING = [
    {
        "fileRequestId": "0d99602a-82a7-4aea-9a1d-f0b612bab793",
        "fileName": "2.jpg",
        "status": 2,
        "size": 3200,
        "timestamp": 1659251271,
        "peerId": "820_1@some.server",
        "peerDn": "820_1",
        "fileId": 346234218,
    },
    {
        "fileRequestId": "d6ee6bd5-70a2-4833-805d-cbded201c0c9",
        "fileName": "2.jpg",
        "status": 2,
        "size": 3200,
        "timestamp": 1659251384,
        "confId": "000001703e81e38e@some.server#vcs",
        "fileId": 346234218,
    },
]
"""The reference's example list (§4): two requests being downloaded."""
REPLIES: dict[str, dict[str, Any]] = {
    "auth": {"previleges": 2, "token": "bench", "tokenForHttpServer": "bench"},
    "getOutgoingFilesRequests": {"outgoingFilesRequests": OUTGOING},
    "getIncomingFilesRequests": {"incomingFilesRequests": []},
    "getFileTransferAvailability": {"availability": 3},
    "getAppState": {"appState": 3, "embeddedHttpPort": 8766},
    "getSystemInfo": {
        "productInfo": {"major": 5, "minor": 0, "revision": 0, "build": 1},
        "authInfo": {"peerId": "room@bench.trueconf", "peerDn": "Bench room"},
    },
}
"""What the Room answers each method with (`result: true`); any other method is refused."""


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One unmasked frame, FIN set, as a server sends it."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


def progress_notification(n: int) -> bytes:
    """The n-th of a flood: the upload progress of the first listed request (reference §8's fields)."""
    entry = OUTGOING[0]
    return json.dumps(
        {
            "method": "event",
            "event": "outgoingFileRequestUploadingProgress",
            "fileRequestId": entry["fileRequestId"],
            "fileName": entry["fileName"],
            "fileSize": entry["size"],
            "processedPercents": n % 100,
            "timestamp": entry["timestamp"],
            "fileId": entry["fileId"],
            "peerId": entry["peerId"],
            "peerDisplayName": entry["peerDn"],
        }
    ).encode()


NOTIFICATION_FRAMES = [server_frame(progress_notification(n)) for n in range(100)]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from a client (masked, never fragmented by the exporter): its opcode and its payload."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(size)
    mask = (key * (size // 4 + 1))[:size]
    payload = (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
    return first & 0x0F, payload


class RawRoom:
    """One Room on one port; remembers its authorised connections, the last one first."""

    def __init__(self) -> None:
        self.authorised: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            found = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", head)
            if found is None:
                return
            accept = base64.b64encode(hashlib.sha1((found[1] + WEBSOCKET_GUID).encode()).digest()).decode()
            writer.write(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == 8:  # close
                    writer.write(server_frame(payload[:2], 8))
                    break
                if opcode == 9:  # ping
                    writer.write(server_frame(payload, 10))
                    continue
                if opcode != 1:
                    continue
                request = json.loads(payload)
                method = str(request.get("method"))
                fields = REPLIES.get(method)
                reply = {"method": method, "requestId": request.get("requestId", "")}
                reply |= {"result": True, **fields} if fields is not None else {"result": False}
                if fields is None:
                    reply["error"] = "Unknown method"
                writer.write(server_frame(json.dumps(reply).encode()))
                if method == "auth":
                    self.authorised.insert(0, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.authorised.remove(writer)
            writer.close()

    async def flood(self, count: int, rate: float, bound: float) -> dict[str, Any]:
        """`count` notifications on the last authorised connection, as fast as it takes them (rate 0) or
        `rate` a second, for at most `bound` seconds. What the Room saw: how many it handed over, in how long,
        the longest it waited for the connection to take one write, and how it ended."""
        if not self.authorised:
            return {"error": "no authorised connection to flood"}
        writer = self.authorised[0]
        loop = asyncio.get_running_loop()
        per_write = 100 if not rate else max(1, int(rate // 100))
        started = loop.time()
        written, longest, last_write = 0, 0.0, 0.0
        waiting_since: float | None = None
        outcome = "all sent"
        try:
            async with asyncio.timeout(bound):
                while written < count:
                    n = min(per_write, count - written)
                    if rate:
                        await asyncio.sleep(max(0.0, started + written / rate - loop.time()))
                    writer.write(b"".join(NOTIFICATION_FRAMES[(written + i) % 100] for i in range(n)))
                    waiting_since = loop.time()
                    await writer.drain()
                    last_write = loop.time() - started
                    longest = max(longest, loop.time() - waiting_since)
                    waiting_since = None
                    written += n
        except TimeoutError:
            outcome = "blocked"
        except ConnectionError:
            outcome = "closed by the exporter"
        if waiting_since is not None:
            longest = max(longest, loop.time() - waiting_since)
        return {
            "written": written,
            "seconds": loop.time() - started,
            "last_write": last_write,
            "longest_wait": longest,
            "outcome": outcome,
        }


async def serve_rooms(count: int) -> None:
    """`count` Rooms on one event loop, one port each; prints their ports, then takes commands (one JSON
    line each, answered with one) until stdin closes: {"flood": INDEX, "count": N, "rate": R, "bound": S}."""
    rooms = [RawRoom() for _ in range(count)]
    servers = [await asyncio.start_server(room.handle, "127.0.0.1", 0) for room in rooms]
    print(json.dumps({"ports": [server.sockets[0].getsockname()[1] for server in servers]}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        room = rooms[command["flood"]]
        answer = await room.flood(command["count"], command["rate"], command["bound"])
        print(json.dumps(answer), flush=True)
    for server in servers:
        server.close()


@contextlib.contextmanager
def rooms(count: int) -> Iterator[Child]:
    with children(__file__, ("rooms", "--count", str(count)), timeout=TIMEOUT) as (child,):
        yield child


# ---- the exporter process ----


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(condition: Any, what: str) -> None:
    for _ in range(WAIT_STEPS):
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"gave up waiting: {what}")


@dataclass(frozen=True)
class Probe:
    seconds: float
    up: bool
    reasons: tuple[str, ...]
    """The scrape_error reasons at 1."""


@dataclass
class ProcessUse:
    """One reading of the exporter's /proc entries."""

    cpu: float
    """utime + stime, seconds, every thread."""
    rss: float
    """VmRSS, MiB."""
    threads: int
    switches: int
    """Context switches of every thread, voluntary and not."""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Exporter:
    """`python -m exporter serve --config.file` on loopback, in a scratch directory (so PYTHONPATH, not this
    checkout, decides which exporter runs), its log in a file printed if it fails."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        config = directory / "exporter.yml"
        config.write_text(
            f'modules:\n  default:\n    timeout: {TIMEOUT:g}s\nallowed_targets: ["127.0.0.1"]\n'
        )
        self.log = directory / "exporter.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "serve",
                    "--config.file",
                    str(config),
                    "--web.listen-address",
                    f"127.0.0.1:{self.port}",
                    "--log-level",
                    "warning",
                ],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._local = threading.local()
        poll(self._healthy, "the exporter to answer /healthz")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"the exporter exited:\n{self.log.read_text()[-3000:]}")
        try:
            status, _ = self.get("/healthz", fresh=True)
        except OSError:
            return False
        return status == 200

    def get(self, path: str, method: str = "GET", fresh: bool = False) -> tuple[int, str]:
        """One request on this thread's kept-alive connection (a new one when `fresh`)."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None or fresh:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            if not fresh:
                self._local.connection = connection
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read().decode()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._local.connection = None
            raise
        if fresh:
            connection.close()
        return response.status, body

    def disconnect(self) -> None:
        """Close this thread's kept-alive connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def probe(self, port: int) -> Probe:
        started = time.perf_counter()
        status, body = self.get(f"/probe?target=ws://127.0.0.1:{port}&module=default")
        seconds = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"/probe answered {status}: {body[:500]}")
        up = re.search(r"(?m)^trueconf_up (\S+)", body)
        reasons = re.findall(r'(?m)^trueconf_scrape_error\{reason="([^"]+)"\} 1', body)
        return Probe(seconds, up is not None and float(up[1]) == 1, tuple(reasons))

    def sessions(self) -> int:
        _, body = self.get("/metrics")
        found = re.search(r"(?m)^trueconf_exporter_room_sessions (\S+)", body)
        return int(float(found[1])) if found else -1

    def use(self) -> ProcessUse:
        pid = self.process.pid
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        status = Path(f"/proc/{pid}/status").read_text()
        rss = re.search(r"VmRSS:\s+(\d+)", status)
        threads = re.search(r"Threads:\s+(\d+)", status)
        switches = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                counts = re.findall(r"ctxt_switches:\s+(\d+)", (task / "status").read_text())
                switches += sum(map(int, counts))
        return ProcessUse(
            (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            int(rss[1]) / 1024 if rss else 0.0,
            int(threads[1]) if threads else 0,
            switches,
        )

    def stop(self) -> None:
        self.disconnect()
        self.process.terminate()
        try:
            self.process.wait(timeout=TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)


@contextlib.contextmanager
def exporter() -> Iterator[Exporter]:
    with tempfile.TemporaryDirectory() as directory:
        started = Exporter(Path(directory))
        try:
            yield started
        finally:
            started.stop()


def measured_tree() -> str:
    """Where the exporter the benchmark starts is imported from."""
    with tempfile.TemporaryDirectory() as directory:
        found = subprocess.run(
            [sys.executable, "-c", "import exporter; print(exporter.__file__)"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
    return str(Path(found.stdout.strip()).parent.parent)


def probe_all(target: Exporter, ports: Sequence[int], clients: int) -> list[Probe]:
    """Every port probed once, by `clients` threads at once (each its kept-alive connection, closed after)."""
    results: list[Probe] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work(share: Sequence[int]) -> None:
        try:
            mine = [target.probe(port) for port in share]
            with lock:
                results.extend(mine)
        except BaseException as error:  # reported below, in the main thread
            failures.append(error)
        finally:
            target.disconnect()

    threads = [threading.Thread(target=work, args=(ports[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT * (len(ports) // clients + 2))
    if failures:
        raise SystemExit(f"a probe failed: {failures[0]!r}")
    return results


def shipped_limit(path: str, pattern: str) -> float | None:
    """A memory limit of a shipped file in MiB (`160Mi`, `256M`), or None when it is not found."""
    try:
        found = re.search(pattern, (REPOSITORY / path).read_text(), re.MULTILINE)
    except OSError:
        return None
    if found is None:
        return None
    value, unit = float(found[1]), found[2]
    return value * {"Mi": 1, "M": 1, "Gi": 1024, "G": 1024, "K": 1 / 1024, "Ki": 1 / 1024}.get(unit, 1)


# ---- the two sections ----


def idle_sessions(count: int, idle_seconds: float, clients: int) -> None:
    half = count // 2
    with rooms(count) as room_process, exporter() as target:
        ports = room_process.ports
        warm = probe_all(target, ports[:clients], clients)  # threads, allocator arenas, imports: warmed up
        target.get("/-/reload", method="POST")  # every session closed
        poll(lambda: target.sessions() == 0, "the sessions closed by the reload")
        at_rest = target.use()
        first = probe_all(target, ports[:half], clients)
        poll(lambda: target.sessions() == half, f"{half} sessions")
        at_half = target.use()
        second = probe_all(target, ports[half:], clients)
        poll(lambda: target.sessions() == count, f"{count} sessions")
        target.disconnect()
        time.sleep(1.0)  # what the last probes left behind (their threads going idle) settles first
        before = target.use()
        time.sleep(idle_seconds)  # the measurement itself: nothing asked, nothing sent
        after = target.use()
        still_open = target.sessions()
    probes = [*warm, *first, *second]
    down = sum(not p.up for p in probes)
    slope = (before.rss - at_half.rss) / (count - half) * 1024
    whole = (before.rss - at_rest.rss) / count * 1024
    cpu = after.cpu - before.cpu
    print(f"\n1. {count} idle kept sessions (one `serve` process; {len(probes)} probes, {down} not up)")
    print(f"   RSS at rest (after a reload closed the warm-up's sessions)  {at_rest.rss:7.1f} MiB")
    print(f"   RSS with {half:>5} sessions                                {at_half.rss:7.1f} MiB")
    print(f"   RSS with {count:>5} sessions                                {before.rss:7.1f} MiB")
    print(
        f"   RSS per idle session: {slope:5.1f} KiB (the last {count - half} Rooms), "
        f"{whole:5.1f} KiB (all {count})"
    )
    print(
        f"   {idle_seconds:g} s idle with {still_open} sessions open: CPU {cpu:.2f} s "
        f"({cpu / idle_seconds * 100:.1f}% of a core; the clock's tick is {1 / CLOCK_TICKS * 1000:g} ms), "
        f"{(after.switches - before.switches) / idle_seconds:.0f} context switches/s, "
        f"{after.threads} threads"
    )
    per_session = max(slope, whole) / 1024
    print(f"   {count} sessions (the default --room.max-sessions is 1000) take {count * per_session:.1f} MiB")
    limits = [
        (
            "Kubernetes",
            shipped_limit(
                "deploy/kubernetes/deployment.yaml",
                r"^\s+limits:\s*\n(?:\s+\w+:.*\n)*?\s+memory:\s*(\d+)(Mi|Gi)\s*$",
            ),
        ),
        (
            "systemd",
            shipped_limit("contrib/systemd/trueconf-exporter.service", r"^MemoryMax=(\d+)([KMG]?)\s*$"),
        ),
    ]
    for name, limit in limits:
        if limit is None or per_session <= 0:
            continue
        alone = (limit - at_rest.rss) / per_session
        beside = (limit - OTHER_BOUNDS_MIB) / per_session
        print(
            f"   {name} limit {limit:g} MiB at {per_session * 1024:.1f} KiB a session: "
            f"{alone:,.0f} sessions with nothing else in use, {max(0.0, beside):,.0f} beside every other "
            f"bound at its worst ({OTHER_BOUNDS_MIB:g} MiB, docs/deployment.md#sizing)"
        )


@dataclass
class Sampler:
    """The healthy Room probed every PROBE_INTERVAL in a thread, the exporter's use read beside each."""

    target: Exporter
    port: int
    probes: list[Probe] = field(default_factory=list)
    peak_rss: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    failure: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        try:
            next_at = time.perf_counter()
            while not self.stop.is_set():
                self.probes.append(self.target.probe(self.port))
                self.peak_rss = max(self.peak_rss, self.target.use().rss)
                next_at = max(next_at + PROBE_INTERVAL, time.perf_counter())
                self.stop.wait(max(0.0, next_at - time.perf_counter()))
        except BaseException as error:  # reported by the main thread
            self.failure.append(error)
        finally:
            self.target.disconnect()

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, name="healthy-probes")
        thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            thread.join(timeout=TIMEOUT * 2)
        if self.failure:
            raise SystemExit(f"a probe of the healthy Room failed: {self.failure[0]!r}")


def latency(probes: Sequence[Probe]) -> str:
    if not probes:
        return "no probe"
    ms = [p.seconds * 1000 for p in probes]
    down = sum(not p.up for p in probes)
    return (
        f"median {statistics.median(ms):5.1f} ms, slowest {max(ms):6.1f} ms ({len(ms)} probes, {down} down)"
    )


def flood(count: int, rate: float, bound: float, baseline_seconds: float) -> None:
    with rooms(1) as healthy_room, rooms(1) as flooding_room, exporter() as target:
        healthy, flooding = healthy_room.ports[0], flooding_room.ports[0]
        if not (target.probe(flooding).up and target.probe(healthy).up):
            raise SystemExit("a Room was not up before the flood")
        quiet, quiet_started = target.use(), time.perf_counter()
        with Sampler(target, healthy).running() as before:
            time.sleep(baseline_seconds)  # the healthy Room's latency (and the exporter's CPU) with no flood
        at_rest = target.use()
        quiet_seconds = time.perf_counter() - quiet_started
        with Sampler(target, healthy).running() as during:
            command = {"flood": 0, "count": count, "rate": rate, "bound": bound}
            sent = json.loads(flooding_room.ask(json.dumps(command), within=bound + TIMEOUT))
        used = target.use()
        if "error" in sent:
            raise SystemExit(f"the flood did not start: {sent['error']}")
        target.disconnect()
        after = target.probe(flooding)
        again = target.probe(flooding)
        healthy_after = target.probe(healthy)
    how = "as fast as the connection takes them" if not rate else f"paced at {rate:,.0f} a second"
    print(f"\n2. {count:,} notifications on one Room's kept session, {how}, beside a healthy Room")
    print(f"   healthy Room before the flood: {latency(before.probes)}")
    print(f"   healthy Room during the flood: {latency(during.probes)}")
    if sent["outcome"] == "blocked":
        ending = (
            f"BLOCKED: {sent['written']:,} handed over, none more after {sent['last_write']:.2f} s; "
            f"stopped at the {bound:.0f} s bound"
        )
    else:
        ending = f"{sent['outcome']} after {sent['written']:,} in {sent['seconds']:.2f} s"
    print(f"   flooding Room: {ending}; longest wait for one write {sent['longest_wait'] * 1000:.0f} ms")
    print(
        f"   exporter: RSS {at_rest.rss:.1f} MiB before, {during.peak_rss:.1f} MiB at most during; "
        f"CPU {used.cpu - at_rest.cpu:.2f} s in the {sent['seconds']:.1f} s of the flood, "
        f"{(used.cpu - at_rest.cpu) / sent['seconds'] * 100:.0f}% of a core "
        f"({(at_rest.cpu - quiet.cpu) / quiet_seconds * 100:.0f}% while the healthy Room alone was probed)"
    )

    def said(probe: Probe) -> str:
        state = "up" if probe.up else f"down ({', '.join(probe.reasons) or 'no reason'})"
        return f"{state} in {probe.seconds * 1000:.0f} ms"

    print(
        f"   next probes of the flooding Room: {said(after)}, then {said(again)}; "
        f"the healthy Room after: {said(healthy_after)}"
    )


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES_WANTED if hard == resource.RLIM_INFINITY else min(FILES_WANTED, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the children inherit it
    if wanted < FILES_WANTED:
        print(f"the hard limit on open files is {hard}: fewer Rooms may be probed than asked")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions of section 1")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long section 1 stays idle")
    parser.add_argument("--clients", type=int, default=16, help="probes at once while opening the sessions")
    parser.add_argument("--notifications", type=int, default=50_000, help="notifications of each flood")
    parser.add_argument(
        "--rate", type=float, default=3000.0, help="the paced flood's notifications a second (0: skip it)"
    )
    parser.add_argument(
        "--bound", type=float, default=20.0, help="seconds a flood may take past its pacing before it stops"
    )
    parser.add_argument("--only", choices=("1", "2"), action="append", help="run only these sections")
    parser.add_argument("--child", choices=("rooms",), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raise_file_limit()
        asyncio.run(serve_rooms(args.count))
        return
    raise_file_limit()
    sections = set(args.only or ("1", "2"))
    started = time.perf_counter()
    print(f"Kept sessions of the exporter in {measured_tree()} (Python {sys.version.split()[0]})")
    if "1" in sections:
        idle_sessions(args.sessions, args.idle_seconds, args.clients)
    if "2" in sections:
        flood(args.notifications, 0.0, args.bound, 1.0)
        if args.rate:
            flood(args.notifications, args.rate, args.notifications / args.rate + args.bound, 1.0)
    print(f"\nMeasured in {time.perf_counter() - started:.0f} s, never asserted.")


if __name__ == "__main__":
    main()
