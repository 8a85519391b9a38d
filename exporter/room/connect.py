"""Where a Room is and the TCP connection to it: one name lookup per collection, inside its deadline.

A collection looks its host name up once (`addresses_for`) and connects only to the addresses that lookup
gave, for port discovery and for the WebSocket alike: no library is handed the name to look up again, and a
name whose answer changes between two connections (DNS rebinding) cannot send the second one elsewhere. An IP
literal never touches the resolver.

`getaddrinfo` cannot be cancelled and no socket timeout bounds it, so each lookup runs in a thread of its own
and the collection stops waiting for it when its deadline passes (the thread ends when the resolver gives
up). One probe's slow lookup therefore never delays another's: there is no shared pool to queue behind.
Two bounds keep the threads few: a name already being looked up is not looked up again (every collection
asking for it waits for the same answer), and at most `MAX_LOOKUPS_IN_FLIGHT` different names are looked up
at once; past that, a lookup waits for a free place within its own deadline.

A `CheckedTarget` is a name target that `/probe` looked up and checked against the allow-list's IP entries
before answering: its collection connects to exactly the addresses that were checked.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.room.deadline import Deadline, DeadlineSocket
from exporter.room.errors import CollectionError, Reason, describe
from exporter.room.target import RoomTarget, host_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SocketAddress = tuple[str, int] | tuple[str, int, int, int]
GetAddrInfo = Callable[..., Sequence[tuple[Any, ...]]]

MAX_LOOKUPS_IN_FLIGHT = 64
"""Different names the collections look up at the same time, a thread each; lookups of one name share one.
(/probe's checks of names against the allow-list have places of their own: exporter.fleet.probe.)"""


@dataclass(frozen=True)
class Address:
    """One address a host has: what the allow-list is checked against and what a socket connects to."""

    ip: IPAddress
    scope_id: int = 0
    """An IPv6 link-local address's interface, as getaddrinfo gives it; 0 otherwise."""

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.ip.version == 6 else socket.AF_INET

    def socket_address(self, port: int) -> SocketAddress:
        if self.ip.version == 6:
            return (str(self.ip), port, 0, self.scope_id)
        return (str(self.ip), port)

    def __str__(self) -> str:
        return str(self.ip)


def ip_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal stands for; None for a name. Never asks a resolver."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class Lookup:
    """The outcome of the one lookup of a probe's name: its addresses, or why there are none."""

    addresses: tuple[Address, ...]
    started: float
    """The monotonic time the probe's deadline started at, before the lookup."""
    error: CollectionError | None = None


@dataclass(frozen=True)
class CheckedTarget(RoomTarget):
    """A name target whose addresses `/probe` looked up once and checked against the allow-list.

    Its collection connects to exactly these addresses and never looks the name up again. It belongs to the
    one probe it was checked for: that probe's deadline started before the lookup, so the collection's
    deadline is counted from the same moment (`addresses_for`).
    """

    lookup: Lookup = field(compare=False, repr=False)


class _Job:
    """One `getaddrinfo` of one name, in a thread of its own; every collection asking for the name waits."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.done = threading.Event()
        self.addresses: tuple[Address, ...] = ()
        self.error: str | None = None


class Resolver:
    """Name lookups, a thread per name in flight, at most `limit` names at once; see the module docstring."""

    def __init__(self, limit: int = MAX_LOOKUPS_IN_FLIGHT, getaddrinfo: GetAddrInfo | None = None) -> None:
        self.limit = limit
        self._getaddrinfo = getaddrinfo
        self._changed = threading.Condition()
        self._in_flight: dict[str, _Job] = {}

    def resolve(self, host: str, deadline: Deadline, phase: str) -> tuple[Address, ...]:
        """The addresses of `host`, within the deadline; an IP literal is its own address (no resolver)."""
        literal = ip_literal(host)
        if literal is not None:
            return (Address(literal),)
        job = self._join(host, deadline, phase)
        if not job.done.wait(timeout=max(0.0, deadline.left())):
            raise CollectionError(Reason.TIMEOUT, f"resolving {host} did not finish in time")
        if job.error is not None:
            raise CollectionError(Reason.CONNECT, f"cannot resolve {host}: {job.error}")
        if not job.addresses:
            raise CollectionError(Reason.CONNECT, f"cannot resolve {host}: no IPv4 or IPv6 address")
        return job.addresses

    def _join(self, host: str, deadline: Deadline, phase: str) -> _Job:
        """The lookup of `host` in flight, started now if there is none and a place is free."""
        key = host.lower()
        with self._changed:
            while key not in self._in_flight and len(self._in_flight) >= self.limit:
                left = deadline.left()
                if left <= 0:
                    raise CollectionError(
                        Reason.TIMEOUT,
                        f"resolving {host} could not start in time: {self.limit} other names are being "
                        f"looked up (during {phase})",
                    )
                self._changed.wait(left)
            job = self._in_flight.get(key)
            if job is not None:
                return job
            job = _Job(host)
            thread = threading.Thread(
                target=self._run, args=(key, job), name=f"lookup {key}"[:64], daemon=True
            )
            try:
                thread.start()
            except RuntimeError as error:  # no thread to be had (pids limit): fail one lookup, not all
                raise CollectionError(
                    Reason.CONNECT, f"cannot start resolving {host}: {describe(error)}"
                ) from None
            self._in_flight[key] = job
            return job

    def _run(self, key: str, job: _Job) -> None:
        try:
            getaddrinfo = self._getaddrinfo or socket.getaddrinfo  # looked up late: tests may replace it
            infos = getaddrinfo(job.host, None, 0, socket.SOCK_STREAM)
            job.addresses = _addresses(infos)
        except OSError as error:
            job.error = error.strerror or str(error)
        except Exception as error:  # noqa: BLE001 - e.g. UnicodeError for a label IDNA cannot encode
            job.error = f"not a name that can be looked up ({type(error).__name__})"
        finally:
            with self._changed:
                del self._in_flight[key]
                self._changed.notify_all()
            job.done.set()


def _addresses(infos: Sequence[tuple[Any, ...]]) -> tuple[Address, ...]:
    """getaddrinfo's answer as addresses, in its order, each once; families but IPv4 and IPv6 dropped."""
    found: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ip_literal(str(sockaddr[0]).split("%", 1)[0])
        if ip is None:
            continue
        address = Address(ip, int(sockaddr[3]) if family == socket.AF_INET6 else 0)
        if address not in found:
            found.append(address)
    return tuple(found)


def addresses_for(target: RoomTarget, deadline: Deadline, resolver: Resolver) -> tuple[Address, ...]:
    """The addresses a collection of `target` may connect to: looked up once, here, within the deadline.

    A name is looked up by `resolver` (the session pool's: one for all the collections of a process). A
    CheckedTarget brings the addresses /probe checked (or the failure of that lookup); its deadline is
    moved back to when the probe's lookup started, so lookup and collection share one deadline.
    """
    if isinstance(target, CheckedTarget):
        lookup = target.lookup
        if lookup.started < deadline.started:
            deadline.started = lookup.started
            deadline.expires = min(deadline.expires, lookup.started + deadline.seconds)
        if lookup.error is not None:
            raise lookup.error
        deadline.remaining("lookup")
        return lookup.addresses
    return resolver.resolve(target.host, deadline, "lookup")


ROOM_RECEIVE_BUFFER_BYTES = 128 * 1024
"""A Room socket's kernel receive buffer, fixed (Linux counts twice it). Left to itself Linux grows an unread
socket's buffer to 6 MiB, and a session paused for the shared budget leaves what its Room sends there: 300
such sessions held 173 MiB of kernel memory (58 MiB at this size), which cgroup v2 charges to the exporter."""


def open_tcp(
    host: str, addresses: Sequence[Address], port: int, deadline: Deadline, phase: str
) -> tuple[DeadlineSocket, Address]:
    """A socket connected to `port` on the first of `addresses` that accepts, and that address.

    Opened by us rather than by websocket-client or http.client, so no proxy variable can reroute it and no
    library looks `host` up again; `host` only names the Room in messages.
    """
    where = host_port(host, port)
    last_error: OSError | None = None
    for address in addresses:
        sock = DeadlineSocket(address.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ROOM_RECEIVE_BUFFER_BYTES)  # before connect
            sock.bind_deadline(deadline, phase)
            sock.settimeout(deadline.remaining(phase))
            sock.connect(address.socket_address(port))
        except TimeoutError:
            sock.close()
            raise CollectionError(Reason.TIMEOUT, f"TCP connect to {where} timed out") from None
        except OSError as error:
            sock.close()
            last_error = error
            continue
        except BaseException:
            sock.close()
            raise
        return sock, address
    detail = (last_error.strerror or str(last_error)) if last_error else "no address"
    raise CollectionError(Reason.CONNECT, f"cannot connect to {where}: {detail}")
