"""Name lookups that never leave loopback: a tiny DNS server and an exporter in a private mount namespace.

`LoopbackDns` answers A queries from a table, on UDP port 53 of an address in 127.0.0.0/8, optionally after
a delay per name (a slow resolver), and stops by itself after `lifetime_seconds`. AAAA queries get an empty
answer, unknown names NXDOMAIN. It records every query, so a test can count lookups.

`start_namespaced_exporter` runs `trueconf-exporter serve` under `unshare -m` with /etc/hosts,
/etc/resolv.conf and /etc/nsswitch.conf bind-mounted over, so every lookup of that process goes to the
hosts file given or to the LoopbackDns, and never to the machine's real resolver. Needs root.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import LISTENING, Process, exporter_command, wait_for

TYPE_A = 1
TYPE_AAAA = 28
NXDOMAIN = 3


@dataclass
class Answer:
    """What the server says about one name: its IPv4 addresses, after `delay_seconds`."""

    addresses: tuple[str, ...]
    delay_seconds: float = 0.0


@dataclass
class LoopbackDns:
    """A DNS server on `address`:53 answering from `names` (lower-case, no trailing dot)."""

    address: str
    names: dict[str, Answer | Callable[[int], Answer]]
    """A name's answer, or a function of how many A queries for it came before (0 for the first)."""
    lifetime_seconds: float = 60.0
    queries: list[tuple[float, str, int]] = field(default_factory=list)
    """(monotonic time, name, query type) of every query received."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def __enter__(self) -> LoopbackDns:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.address, 53))
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def lookups(self, name: str, qtype: int = TYPE_A) -> int:
        """How many queries of `qtype` for `name` arrived."""
        return sum(1 for _, asked, kind in self.queries if asked == name and kind == qtype)

    def resolv_conf(self, timeout_seconds: int = 5) -> str:
        return f"nameserver {self.address}\noptions timeout:{timeout_seconds} attempts:1\n"

    def _serve(self) -> None:
        assert self._sock is not None
        due: list[tuple[float, bytes, tuple[str, int]]] = []
        ends = time.monotonic() + self.lifetime_seconds
        while not self._stop.is_set() and time.monotonic() < ends:
            now = time.monotonic()
            for item in [d for d in due if d[0] <= now]:
                due.remove(item)
                self._sock.sendto(item[1], item[2])
            wait = min([0.05] + [d[0] - now for d in due])
            readable, _, _ = select.select([self._sock], [], [], max(0.0, wait))
            if not readable:
                continue
            query, client = self._sock.recvfrom(512)
            answer = self._answer(query)
            if answer is not None:
                due.append((time.monotonic() + answer[0], answer[1], client))

    def _answer(self, query: bytes) -> tuple[float, bytes] | None:
        try:
            ident, _, _ = struct.unpack("!HHH", query[:6])
            name, end = _read_name(query, 12)
            qtype, _ = struct.unpack("!HH", query[end : end + 4])
        except (struct.error, IndexError, UnicodeDecodeError):
            return None
        question = query[12 : end + 4]
        self.queries.append((time.monotonic(), name, qtype))
        entry = self.names.get(name)
        if entry is None:
            return 0.0, struct.pack("!HHHHHH", ident, 0x8180 | NXDOMAIN, 1, 0, 0, 0) + question
        answer = entry(self.lookups(name) - 1 if qtype == TYPE_A else 0) if callable(entry) else entry
        records = b""
        count = 0
        if qtype == TYPE_A:
            for address in answer.addresses:
                rdata = socket.inet_aton(address)
                records += struct.pack("!HHHIH", 0xC00C, TYPE_A, 1, 0, len(rdata)) + rdata
                count += 1
        header = struct.pack("!HHHHHH", ident, 0x8180, 1, count, 0, 0)
        return answer.delay_seconds, header + question + records


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while True:
        length = message[offset]
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), offset
        labels.append(message[offset : offset + length].decode("ascii"))
        offset += length


def start_namespaced_exporter(
    workdir: Path, hosts: str, resolv_conf: str, *args: str, env: dict[str, str] | None = None
) -> Process:
    """`trueconf-exporter serve ARGS` whose /etc/hosts and /etc/resolv.conf are `hosts` and `resolv_conf`."""
    files = {"hosts": hosts, "resolv.conf": resolv_conf, "nsswitch.conf": "hosts: files dns\n"}
    mounts = []
    for name, text in files.items():
        path = workdir / f"ns-{name}"
        path.write_text(text)
        mounts.append(f"mount --bind {shlex.quote(str(path))} /etc/{name}")
    command = [*exporter_command(), "serve", "--web.listen-address", "127.0.0.1:0", *args]
    script = " && ".join([*mounts, "exec " + shlex.join(command)])
    stdout_path = workdir / f"exporter.{time.monotonic_ns()}.out"
    stderr_path = workdir / f"exporter.{time.monotonic_ns()}.err"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script],
            stdout=out,
            stderr=err,
            env=full_env,
            stdin=subprocess.DEVNULL,
        )
    process = Process(popen, stdout_path, stderr_path)
    match = wait_for(process, "stderr", LISTENING)
    process.ports = {"http": int(match.group(1))}
    return process
