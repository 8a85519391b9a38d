"""Every attack at once, against one `serve --config.file` process under the shipped limits (the systemd
unit's TasksMax as pids.max, the Kubernetes manifest's memory limit), while a healthy Room is probed every
second as Prometheus would.

Together the attacks must not hit the memory limit nor leave the healthy Room's scrapes slow or down. The
hostile Rooms are raw servers in this process (tests/raw_servers.py), the slow emulated Room too, but the
healthy Room and its client are processes of their own, so what they measure is the exporter, not this
process's attackers; only the exporter is in the cgroup.

Also here: 16 and 32 Rooms of 10 000 entries probed at once, inside the same memory limit.

Loopback only; every loop is bounded in count and time; the cgroups and processes go even on failure.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.emulator.faults import Fault
from exporter.methods import OUTGOING_METHOD
from exporter.room.budget import DEFAULT_MAX_MESSAGE_BYTES
from exporter.room.frames import MAX_FRAMES_PER_MESSAGE
from tests import raw_servers
from tests.exposition import value
from tests.processes import Process, http_get, start_emulator
from tests.raw_servers import (
    announcing_room,
    answering_room,
    frame,
    ok_reply,
    reply_of_size,
    websocket_room,
)
from tests.test_deployment_limits import (
    Cgroup,
    cpu_seconds,
    limited_cgroup,
    manifest_memory_limit,
    raise_open_files,
    start_serve,
    unit_setting,
)
from tests.test_message_cost import empty_objects_reply, entries_reply

pytestmark = [pytest.mark.process, pytest.mark.serial]  # CPU-heavy, and bounds a healthy Room's latency

ROOT = Path(__file__).resolve().parent.parent
CONFIGMAP = ROOT / "deploy" / "kubernetes" / "configmap.yaml"
MIB = 1024 * 1024

ATTACK_SECONDS = 25.0
HEALTHY_EVERY = 1.0
HOSTILE_EVERY = 2.0
SCRAPE_TIMEOUT = "10"  # Prometheus's default scrape_timeout, sent as Prometheus sends it
IDLE_CONNECTIONS = 2000
NON_READERS = 200
LOOPING_CLIENTS = 100
STATUS_PAGE_TARGETS = 400  # more Rooms than the status page shows rows (300)
BIG_ROOMS = 16
NOTIFYING_ROOMS = 10

HEALTHY_SLOWEST = 2.5
"""No healthy probe may take longer (seconds). Alone it takes ~2 ms; under the whole mix the exporter's one
process is CPU-bound (the hostile Rooms are probed every 2 s, some 20 times as often as a fleet's Prometheus
would) and the slowest measured 0.3-0.9 s."""
HEALTHY_MEDIAN = 1.0
"""Measured 0.05-0.22 s under the whole mix (every thread waits its turn for the GIL, in 1 ms slices: serve's
GIL_SWITCH_SECONDS; 0.10-0.19 s with Python's 5 ms), ~2 ms alone."""
RSS_RETURN_MIB = 32
"""RSS after the attackers leave may stay this far above its level before them: Python's allocator keeps some
arenas it used (measured 25-26 MiB above after the whole mix; and the sessions of the big Rooms are still
held, a few KiB each); what failed kept everything it had held for the non-readers (4 GiB for 1 000 of
them)."""


def shipped_module_timeout() -> str:
    """The default module's timeout in the Kubernetes ConfigMap: hostile Rooms hold a collection that long."""
    [configmap] = [d for d in yaml.safe_load_all(CONFIGMAP.read_text()) if d]
    return str(yaml.safe_load(configmap["data"]["config.yml"])["modules"]["default"]["timeout"])


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    document = {
        "modules": {"default": {"timeout": shipped_module_timeout()}},
        "allowed_targets": ["127.0.0.0/8"],
    }
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class Probe:
    status: int
    """0 when the exporter did not answer at all."""
    up: float | None
    seconds: float


def probe(port: int, target: str, timeout: float = 20.0) -> Probe:
    started = time.monotonic()
    try:
        status, _, body = http_get(
            f"http://127.0.0.1:{port}/probe?target={target}&module=default",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": SCRAPE_TIMEOUT},
            timeout=timeout,
        )
    except OSError:
        return Probe(0, None, time.monotonic() - started)
    up = value(body.decode(), "trueconf_up") if status == 200 else None
    return Probe(status, up, time.monotonic() - started)


HEALTHY_PROBER = """
import re, sys, time, urllib.request
url, every, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": sys.argv[4]})
began = time.monotonic()
for beat in range(int(seconds / every)):
    time.sleep(max(0.0, began + beat * every - time.monotonic()))  # a scrape interval: the pacing
    started = time.monotonic()
    try:
        with opener.open(request, timeout=20) as response:
            status, body = response.status, response.read().decode()
    except OSError:
        status, body = 0, ""
    found = re.search(r"^trueconf_up (\\S+)$", body, re.MULTILINE)
    print(status, found.group(1) if found else "none", time.monotonic() - started, flush=True)
"""
"""The well-behaved client, in a process of its own: what it measures is the exporter's answer time, not
this process's threads (the attackers') waiting for their turn at the GIL."""


def start_healthy_prober(port: int, target: str, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    url = f"http://127.0.0.1:{port}/probe?target={target}&module=default"
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", HEALTHY_PROBER, url, str(HEALTHY_EVERY), str(seconds), SCRAPE_TIMEOUT],
            stdout=out,
            stdin=subprocess.DEVNULL,
        )


def read_healthy_probes(output: Path) -> list[Probe]:
    probes = []
    for line in output.read_text().splitlines():
        status, up, seconds = line.split()
        probes.append(Probe(int(status), None if up == "none" else float(up), float(seconds)))
    return probes


def memory_of(pid: int) -> tuple[int, int, int]:
    """(resident, peak resident, threads) of a process: VmRSS and VmHWM in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()

    def field(name: str) -> int:
        return int(re.search(rf"{name}:\s+(\d+)", text).group(1))

    return field("VmRSS") * 1024, field("VmHWM") * 1024, field("Threads")


# --- the hostile Rooms: the frames each sends, built once ---


def dense_notification() -> bytes:
    """A notification under --max-message-bytes of nothing but `{}`, only to be skipped."""
    count = (DEFAULT_MAX_MESSAGE_BYTES - 200) // 3
    return b'{"method":"event","event":"x","list":[' + b",".join([b"{}"] * count) + b"]}"


def in_fragments(body: bytes, size: int) -> bytes:
    """`body` as one text message in fragments of `size` bytes."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(
        frame(piece, opcode=0x1 if i == 0 else 0x0, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    )


def big_room_answer(entries: bytes) -> Callable[[str], bytes]:
    """A Room of 10 000 valid entries: that list for getOutgoingFilesRequests, success for the rest."""

    def answer(method: str) -> bytes:
        return entries if method == OUTGOING_METHOD else ok_reply(method)

    return answer


def notifying_answer(method: str) -> bytes:
    """A reply with a 60 KB notification behind it: what a kept session then holds until its next scrape."""
    notification = b'{"method":"event","event":"fileTransferProgress","pad":"' + b"a" * 60_000 + b'"}'
    reply = frame(entries_reply(3)) if method == OUTGOING_METHOD else ok_reply(method)
    return reply + frame(notification)


@contextlib.contextmanager
def raw_rooms(handles: list[Callable[[socket.socket], None]]) -> Iterator[list[str]]:
    """Serve each handler as a Room on a free loopback port; yields their /probe targets."""
    with contextlib.ExitStack() as stack:
        yield [f"127.0.0.1:{stack.enter_context(raw_servers.tcp_server(h))}" for h in handles]


def hostile_rooms() -> dict[str, list[Callable[[socket.socket], None]]]:
    """Every kind of hostile Room, a few of each; by kind."""
    big_entries = frame(entries_reply(10_000))
    dense_reply = frame(empty_objects_reply(DEFAULT_MAX_MESSAGE_BYTES - 100))
    dense_before = frame(dense_notification()) + frame(reply_of_size(200))
    fragments = in_fragments(reply_of_size(400_000), 2)  # 200 000 frames; 4096 are read
    assert len(fragments) > 40 * MAX_FRAMES_PER_MESSAGE
    continuations = frame(b"{", fin=False) + frame(b"", opcode=0x0, fin=False) * 200_000
    return {
        "dense reply": [websocket_room(dense_reply) for _ in range(3)],
        "dense notification": [websocket_room(dense_before) for _ in range(3)],
        "2-byte fragments": [websocket_room(fragments) for _ in range(2)],
        "empty continuations": [websocket_room(continuations) for _ in range(2)],
        "announce and drip": [announcing_room(DEFAULT_MAX_MESSAGE_BYTES - 1, 0.5, 60) for _ in range(3)],
        "never answers": [websocket_room() for _ in range(3)],
        "60 KB behind replies": [answering_room(notifying_answer) for _ in range(NOTIFYING_ROOMS)],
        "10 000 entries": [answering_room(big_room_answer(big_entries)) for _ in range(BIG_ROOMS)],
    }


# --- the clients ---


class Attack:
    """Threads that run until `stop` is set or their time is up, each counting what it got."""

    def __init__(self, seconds: float) -> None:
        self.stop = threading.Event()
        self.began = time.monotonic()
        self.ends = self.began + seconds
        self.threads: list[threading.Thread] = []
        self.results: dict[str, list[Probe]] = {}
        self._lock = threading.Lock()

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.ends

    def record(self, kind: str, result: Probe) -> None:
        with self._lock:
            self.results.setdefault(kind, []).append(result)

    def start(self, loop: Callable[[], None]) -> None:
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def loop_probes(self, port: int, target: str, kind: str, every: float = 0.0) -> None:
        """Probe `target` again and again (every `every` seconds at most, all such loops on one beat)."""

        def loop() -> None:
            while self.running():
                result = probe(port, target)
                self.record(kind, result)
                if result.status == 0:
                    self.stop.wait(0.1)  # refused: the exporter is gone or full; no spinning
                if every:  # the next beat of the attack's clock: loops started together stay together
                    beats = math.floor((time.monotonic() - self.began) / every) + 1
                    self.stop.wait(max(0.0, self.began + beats * every - time.monotonic()))

        self.start(loop)

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)  # a probe in flight ends by its own timeout (20 s)


def fill_status_page(port: int) -> int:
    """Probe more distinct Rooms than the status page shows (nothing listens there: refused at once)."""
    targets = [f"127.0.{1 + i // 250}.{1 + i % 250}:1" for i in range(STATUS_PAGE_TARGETS)]
    with ThreadPoolExecutor(16) as pool:
        statuses = [p.status for p in pool.map(lambda t: probe(port, t), targets)]
    assert statuses == [200] * STATUS_PAGE_TARGETS
    status, _, page = http_get(f"http://127.0.0.1:{port}/", timeout=20)
    assert status == 200
    return len(page)


def open_idle(port: int, count: int, held: list[socket.socket]) -> None:
    """`count` connections that never send a byte, added to `held` as they open (closed by the caller)."""
    for _ in range(count):
        held.append(socket.create_connection(("127.0.0.1", port), timeout=10))


def non_readers(port: int, count: int, held: list[socket.socket]) -> None:
    """Clients that ask for the status page and never read it, with a small receive buffer: the kernel
    takes little of the answer off the exporter's hands."""
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


class Sampler:
    """The exporter's RSS and threads every 0.2 s while the attack runs (their peaks); when it was gone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = self.peak_threads = 0
        self.gone_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                rss, _, threads = memory_of(self.pid)
            except (OSError, AttributeError):  # gone (a zombie has no VmRSS line)
                self.gone_at = time.monotonic()
                return
            self.peak_rss, self.peak_threads = max(self.peak_rss, rss), max(self.peak_threads, threads)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def exporter_in_cgroup(tmp_path) -> Iterator[Callable[[], tuple[Process, Cgroup]]]:
    """`serve --config.file` in a pids+memory cgroup with the shipped limits; stopped and removed after."""
    with contextlib.ExitStack() as stack:

        def start() -> tuple[Process, Cgroup]:
            cgroup = stack.enter_context(
                limited_cgroup(int(unit_setting("TasksMax")), manifest_memory_limit())
            )
            exporter = start_serve(
                tmp_path,
                ["--config.file", str(write_config(tmp_path)), "--web.read-header-timeout", "60"],
                join=cgroup.procs,
            )
            stack.callback(exporter.stop)  # before the cgroup goes (callbacks run last in, first out)
            return exporter, cgroup

        yield start


def summary(probes: list[Probe]) -> str:
    up = sum(1 for p in probes if p.up == 1)
    seconds = sorted(p.seconds for p in probes)
    median = statistics.median(seconds) if seconds else 0.0
    return f"{len(probes)} probes, {up} up, median {median:.2f} s, max {max(seconds, default=0):.2f} s"


ATTACKS = (
    "dense reply",
    "dense notification",
    "2-byte fragments",
    "empty continuations",
    "announce and drip",
    "never answers",
    "60 KB behind replies",
    "10 000 entries",
    "slow Room flood",
    "idle connections",
    "non-readers",
)


@dataclass
class Mix:
    """What one run of the mix measured."""

    alive: bool
    limit_hits: int
    cgroup_peak: int
    peak_rss: int
    peak_threads: int
    rss_before: int
    rss_after: int
    page_bytes: int
    healthy: list[Probe]
    hostile: dict[str, list[Probe]]
    died_after: float | None
    """Seconds into the attack when the exporter was found gone."""
    exporter_cpu: float
    """CPU seconds the exporter used during the attack."""
    stderr: str

    def report(self) -> str:
        lines = [
            f"status page {self.page_bytes} bytes; {ATTACK_SECONDS:g} s of attack",
            f"peak: cgroup {self.cgroup_peak / MIB:.0f} MiB, RSS {self.peak_rss / MIB:.0f} MiB, threads "
            f"{self.peak_threads}; memory limit hits {self.limit_hits}; CPU {self.exporter_cpu:.1f} s; "
            + ("alive" if self.alive else f"DEAD after {self.died_after or 0:.1f} s"),
            f"RSS before {self.rss_before / MIB:.0f} MiB, after {self.rss_after / MIB:.0f} MiB",
            f"healthy Room: {summary(self.healthy)}",
            *(f"  {kind}: {summary(probes)}" for kind, probes in self.hostile.items()),
        ]
        return "\n".join(lines)


def run_mix(
    attacks: tuple[str, ...],
    start_exporter: Callable[[], tuple[Process, Cgroup]],
    slow_room: str,
    healthy: str,
    workdir: Path,
) -> Mix:
    """Run `attacks` together for ATTACK_SECONDS against a fresh exporter while `healthy` is probed every
    HEALTHY_EVERY seconds; then let the attackers go and see what the exporter keeps."""
    raise_open_files(IDLE_CONNECTIONS + NON_READERS + 4096)
    kinds = {kind: handles for kind, handles in hostile_rooms().items() if kind in attacks}
    held: list[socket.socket] = []
    with raw_rooms([h for handles in kinds.values() for h in handles]) as all_targets:
        exporter, cgroup = start_exporter()
        port, pid = exporter.ports["http"], exporter.popen.pid
        targets = iter(all_targets)
        by_kind = {kind: [next(targets) for _ in handles] for kind, handles in kinds.items()}

        assert probe(port, healthy).up == 1, exporter.stderr
        page_bytes = fill_status_page(port)
        rss_before = memory_of(pid)[0]

        attack = Attack(ATTACK_SECONDS)
        output = workdir / f"healthy.{time.monotonic_ns()}.out"
        cpu_before = cpu_seconds(pid)
        with Sampler(pid) as sampler:
            prober = start_healthy_prober(port, healthy, ATTACK_SECONDS, output)
            try:
                if "idle connections" in attacks:
                    open_idle(port, IDLE_CONNECTIONS, held)
                if "non-readers" in attacks:
                    non_readers(port, NON_READERS, held)
                if "slow Room flood" in attacks:
                    for _ in range(LOOPING_CLIENTS):
                        attack.loop_probes(port, slow_room, "slow Room flood")
                for kind, kind_targets in by_kind.items():
                    for target in kind_targets:
                        attack.loop_probes(port, target, kind, every=HOSTILE_EVERY)
                while attack.running() and exporter.alive():
                    attack.stop.wait(0.2)
                if exporter.alive():
                    prober.wait(timeout=25)  # its last probe began before the attack's end
            finally:
                if prober.poll() is None:
                    prober.kill()
                    prober.wait()
                attack.end()
                for sock in held:
                    sock.close()
                held.clear()
        exporter_cpu = cpu_seconds(pid) - cpu_before if exporter.alive() else 0.0
        alive = exporter.alive()
        limit_hits = cgroup.limit_hit_count()
        cgroup_peak = int(cgroup.peak.read_text()) if cgroup.peak.exists() else 0

    # the hostile Rooms and the clients are gone: what the exporter still holds of them
    rss_after = rss_before
    deadline = time.monotonic() + 15
    while alive and time.monotonic() < deadline:
        rss_after = memory_of(pid)[0]
        if rss_after <= rss_before + RSS_RETURN_MIB * MIB:
            break
        time.sleep(0.5)  # the poll interval of this bounded wait
    if alive:
        assert probe(port, healthy).up == 1, "the healthy Room is still probed after the attack"
    return Mix(
        alive=alive and exporter.alive(),
        limit_hits=limit_hits,
        cgroup_peak=cgroup_peak,
        peak_rss=sampler.peak_rss,
        peak_threads=sampler.peak_threads,
        rss_before=rss_before,
        rss_after=rss_after,
        page_bytes=page_bytes,
        healthy=read_healthy_probes(output),
        exporter_cpu=exporter_cpu,
        hostile=attack.results,
        died_after=None if sampler.gone_at is None else sampler.gone_at - attack.began,
        stderr=exporter.stderr,
    )


def test_every_attack_at_once_leaves_a_healthy_room_fast_within_the_shipped_limits(
    room, exporter_in_cgroup, tmp_path
):
    slow = room("doc-example", fault=Fault.SLOW_REPLY, slow_reply_seconds=0.25)
    healthy_room = start_emulator(tmp_path)  # a process of its own: its answer time is not this process's
    try:
        mix = run_mix(
            ATTACKS,
            exporter_in_cgroup,
            f"127.0.0.1:{slow.ports.websocket}",
            f"127.0.0.1:{healthy_room.ports['websocket']}",
            tmp_path,
        )
    finally:
        healthy_room.stop()
    print(f"\ncgroup limits: memory {manifest_memory_limit() >> 20} MiB, pids {unit_setting('TasksMax')}")
    print(mix.report())
    seconds = [p.seconds for p in mix.healthy]
    assert mix.alive, mix.stderr[-4000:]
    assert mix.limit_hits == 0, "the exporter reached its memory limit"
    assert len(mix.healthy) >= ATTACK_SECONDS / HEALTHY_EVERY / 2, "the healthy Room was probed"
    assert all(p.status == 200 and p.up == 1 for p in mix.healthy), mix.healthy
    assert max(seconds) < HEALTHY_SLOWEST, sorted(seconds)
    assert statistics.median(seconds) < HEALTHY_MEDIAN, sorted(seconds)
    assert mix.rss_after <= mix.rss_before + RSS_RETURN_MIB * MIB
    assert "Traceback" not in mix.stderr


@pytest.mark.parametrize("rooms", [16, 32])
def test_rooms_of_ten_thousand_entries_probed_at_once_fit_the_memory_limit(exporter_in_cgroup, rooms):
    """16 and 32 such Rooms at once stay inside the shipped memory limit."""
    big_entries = frame(entries_reply(10_000))
    with raw_rooms([answering_room(big_room_answer(big_entries)) for _ in range(rooms)]) as targets:
        exporter, cgroup = exporter_in_cgroup()
        port, pid = exporter.ports["http"], exporter.popen.pid
        rss_before = memory_of(pid)[0]
        rounds = []
        for _ in range(3):
            with ThreadPoolExecutor(rooms) as pool:
                rounds.append(list(pool.map(lambda t: probe(port, t), targets)))
        alive = exporter.alive()
        _, hwm, _ = memory_of(pid) if alive else (0, 0, 0)
        cgroup_peak = int(cgroup.peak.read_text()) if cgroup.peak.exists() else 0
        print(
            f"\n{rooms} Rooms of 10 000 entries at once, 3 rounds: RSS before {rss_before / MIB:.0f} MiB, "
            f"peak RSS {hwm / MIB:.0f} MiB, cgroup peak {cgroup_peak / MIB:.0f} MiB; "
            + "; ".join(summary(r) for r in rounds)
        )
        assert alive, exporter.stderr[-4000:]
        assert cgroup.limit_hit_count() == 0
        assert all(p.up == 1 for r in rounds for p in r), rounds
