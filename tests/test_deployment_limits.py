"""The deployments' bounds hold against hostile clients: real `serve` processes under the shipped limits.

- Under the systemd unit's TasksMax as a pids limit and the Kubernetes manifest's memory limit (a child
  cgroup of the test's own, v2 or v1), 2000 idle connections plus a header flood leave scrapes answering.
- With an open-file limit far below the connections (prlimit), accept() fails with EMFILE: the process backs
  off (its CPU stays low), logs one warning line, and scrapes answer again once the connections close.

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.web.server import MAX_HEADER_BYTES
from tests.exposition import value
from tests.processes import LISTENING, Process, exporter_command, http_get, wait_for, wait_until

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "systemd" / "trueconf-exporter.service"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
IDLE_CONNECTIONS = 2000
FLOOD_CONNECTIONS = 50
UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1024, "M": 1024**2, "G": 1024**3}


def unit_setting(name: str) -> str:
    [setting] = re.findall(rf"^{name}=(\S+)$", UNIT.read_text(), re.MULTILINE)
    return setting


def manifest_memory_limit() -> int:
    [deployment] = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    amount, suffix = re.fullmatch(r"(\d+)([KMG]i?)", container["resources"]["limits"]["memory"]).groups()
    return int(amount) * UNITS[suffix]


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"the hard open-file limit {hard} is below the {needed} needed (run as root)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclass
class Cgroup:
    """A child cgroup limiting pids and memory; `procs` are the files a pid is written to, to join it."""

    directories: list[Path]
    procs: list[Path]
    peak: Path
    limit_hits: Path
    version: int

    def limit_hit_count(self) -> int:
        text = self.limit_hits.read_text()
        if self.version == 1:
            return int(text)
        return sum(
            int(n) for k, n in (line.split() for line in text.splitlines()) if k in ("max", "oom_kill")
        )


def own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path, from /proc/self/cgroup ("" is the v2 unified one)."""
    found = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


@contextlib.contextmanager
def limited_cgroup(pids_max: int, memory_max: int) -> Iterator[Cgroup]:
    """A child cgroup with pids.max and the memory limit, v2 if it can be made, else v1; skip otherwise."""
    name = f"trueconf-exporter-test-{os.getpid()}"
    mine = own_cgroups()
    made: list[Path] = []
    try:
        v2 = Path("/sys/fs/cgroup") / mine.get("", "/").lstrip("/") / name
        if "" in mine and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
            try:
                v2.mkdir()
                made.append(v2)
                (v2 / "pids.max").write_text(f"{pids_max}\n")
                (v2 / "memory.max").write_text(f"{memory_max}\n")
                if (v2 / "memory.swap.max").exists():
                    (v2 / "memory.swap.max").write_text("0\n")
            except OSError:
                pass  # controllers not delegated here: try v1 below
            else:
                yield Cgroup([v2], [v2 / "cgroup.procs"], v2 / "memory.peak", v2 / "memory.events", 2)
                return
        pids = Path("/sys/fs/cgroup/pids") / mine.get("pids", "/").lstrip("/") / name
        memory = Path("/sys/fs/cgroup/memory") / mine.get("memory", "/").lstrip("/") / name
        try:
            for directory in (pids, memory):
                directory.mkdir()
                made.append(directory)
            (pids / "pids.max").write_text(f"{pids_max}\n")
            (memory / "memory.limit_in_bytes").write_text(f"{memory_max}\n")
        except OSError as error:
            pytest.fail(f"no writable cgroup (v2 or v1) with pids and memory controllers: {error}")
        yield Cgroup(
            [pids, memory],
            [pids / "cgroup.procs", memory / "cgroup.procs"],
            memory / "memory.max_usage_in_bytes",
            memory / "memory.failcnt",
            1,
        )
    finally:
        for directory in reversed(made):
            for _ in range(50):  # the process may take a moment to leave
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)  # the poll interval of this bounded retry


def start_serve(tmp_path: Path, args: list[str], prefix: list[str] = (), join: list[Path] = ()) -> Process:
    """`serve` on a free loopback port, optionally under a command prefix (prlimit) or in a cgroup."""
    out, err = tmp_path / f"serve.{time.monotonic_ns()}.out", tmp_path / f"serve.{time.monotonic_ns()}.err"

    def enter_cgroup() -> None:
        for procs in join:
            procs.write_text(f"{os.getpid()}\n")

    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            [*prefix, *exporter_command(), "serve", "--web.listen-address", "127.0.0.1:0", *args],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=enter_cgroup if join else None,  # noqa: PLW1509 - writes one file, before exec
        )
    process = Process(popen, out, err)
    process.ports = {"http": int(wait_for(process, "stderr", LISTENING).group(1))}
    return process


def status_of(pid: int) -> tuple[int, int]:
    """(resident MiB, threads) of a process."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) // 1024
    return rss, int(re.search(r"Threads:\s+(\d+)", text).group(1))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sockets_held(pid: int) -> int:
    """How many sockets the process has open (its listener and Room sessions included)."""
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(fd).startswith("socket:"):
                held += 1
    return held


def open_idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def flood_headers(port: int, count: int) -> list[socket.socket]:
    """`count` connections that each send headers up to just under the cap and never finish them."""
    sockets = open_idle(port, count)
    line = b"X-Flood: " + b"a" * 989 + b"\r\n"
    for sock in sockets:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    for _ in range(MAX_HEADER_BYTES // len(line) - 1):
        for sock in sockets:
            sock.sendall(line)
    return sockets


def scrape(port: int) -> tuple[int, bytes, float]:
    started = time.monotonic()
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    return status, body, time.monotonic() - started


@pytest.fixture
def room_port(room) -> int:
    return room("doc-example").ports.websocket


def test_idle_connections_and_a_header_flood_leave_scrapes_answering_within_the_shipped_limits(
    tmp_path, room_port
):
    tasks_max = int(unit_setting("TasksMax"))
    memory_max = manifest_memory_limit()
    raise_open_files(IDLE_CONNECTIONS + FLOOD_CONNECTIONS + 256)
    with limited_cgroup(tasks_max, memory_max) as cgroup:
        exporter = start_serve(
            tmp_path,
            ["--target", f"ws://127.0.0.1:{room_port}", "--web.read-header-timeout", "30"],
            join=cgroup.procs,
        )
        held: list[socket.socket] = []
        try:
            pid = exporter.popen.pid
            print(f"\ncgroup v{cgroup.version}: pids.max={tasks_max} memory limit={memory_max >> 20} MiB")
            print(
                "before: rss MiB, threads",
                status_of(pid),
                "scrape s",
                round(scrape(exporter.ports["http"])[2], 3),
            )
            held += open_idle(exporter.ports["http"], IDLE_CONNECTIONS)
            held += flood_headers(exporter.ports["http"], FLOOD_CONNECTIONS)
            assert wait_until(lambda: sockets_held(pid) >= len(held), 30), "the exporter accepted them all"
            rss, threads = status_of(pid)
            latencies = []
            for _ in range(5):
                status, body, seconds = scrape(exporter.ports["http"])
                assert status == 200 and value(body.decode(), "trueconf_up") == 1
                latencies.append(seconds)
            assert http_get(f"http://127.0.0.1:{exporter.ports['http']}/healthz", timeout=10)[0] == 200
            peak = int(cgroup.peak.read_text()) if cgroup.peak.exists() else 0
            print(
                f"{IDLE_CONNECTIONS} idle + {FLOOD_CONNECTIONS} flooding: rss {rss} MiB, threads {threads}, "
                f"cgroup peak {peak >> 20} MiB, slowest scrape {max(latencies):.3f} s"
            )
            assert exporter.alive(), exporter.stderr
            assert threads <= 16, "no thread per connection"
            assert cgroup.limit_hit_count() == 0, "the memory limit was never reached"
        finally:
            for sock in held:
                sock.close()
            exporter.stop()


def test_out_of_files_accept_backs_off_logs_one_warning_and_recovers(tmp_path, room_port):
    exporter = start_serve(
        tmp_path,
        ["--target", f"ws://127.0.0.1:{room_port}", "--web.read-header-timeout", "30"],
        prefix=["prlimit", "--nofile=48:48", "--"],  # util-linux, on every Debian
    )
    try:
        check_backoff_and_recovery(exporter)
    finally:
        exporter.stop()


def check_backoff_and_recovery(exporter: Process) -> None:
    port = exporter.ports["http"]
    held = open_idle(port, 80)  # past the limit: the rest wait in the listen backlog
    try:
        wait_for(exporter, "stderr", "cannot accept connections")  # out of files: backing off now
        before = cpu_seconds(exporter.popen.pid)
        time.sleep(3)  # the window whose CPU is measured: time passing is the behaviour here
        used = cpu_seconds(exporter.popen.pid) - before
        print(f"\nCPU while out of files: {used:.2f} s in 3 s")
        assert used < 0.5, "the accept loop backs off instead of spinning"
        assert exporter.alive()
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body, _ = scrape(port)
            if status == 200:
                break
        time.sleep(0.2)  # the poll interval of this bounded wait
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    warnings = [line for line in exporter.stderr.splitlines() if "cannot accept connections" in line]
    assert len(warnings) == 1, exporter.stderr
    assert "level=warning" in warnings[0] and "EMFILE" in warnings[0]
    assert "accepting connections again" in exporter.stderr
    assert "Traceback" not in exporter.stderr
