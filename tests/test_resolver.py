"""Name lookups (exporter.room.connect): a thread per name, bounded by each caller's deadline, never queued
behind another probe's slow lookup; one lookup per name in flight; IP literals never reach a resolver.

The resolver is replaced by a function of the test's own (no test here asks a real resolver); the real one,
on a private loopback DNS server, is in test_name_lookup.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from exporter.room import CollectionError, Deadline, Reason, parse_target
from exporter.room.connect import (
    ROOM_RECEIVE_BUFFER_BYTES,
    Address,
    CheckedTarget,
    Lookup,
    Resolver,
    addresses_for,
    ip_literal,
    open_tcp,
)


class FakeResolver:
    """A getaddrinfo stand-in: names map to IPv4 addresses; a name in `slow` blocks until `release()`."""

    def __init__(self, names: dict[str, list[str]], slow: frozenset[str] | set[str] = frozenset()) -> None:
        self.names = names
        self.slow = set(slow)
        self.calls: Counter[str] = Counter()
        self.released = threading.Event()
        self.changed = threading.Condition()
        self.running = 0
        """Calls entered and not yet returned: the lookup threads alive."""

    def __call__(self, host: str, port: object, family: int = 0, kind: int = 0) -> list[tuple[object, ...]]:
        with self.changed:
            self.calls[host] += 1
            self.running += 1
            self.changed.notify_all()
        try:
            return self._answer(host)
        finally:
            with self.changed:
                self.running -= 1
                self.changed.notify_all()

    def _answer(self, host: str) -> list[tuple[object, ...]]:
        if host in self.slow:
            self.released.wait(timeout=20)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in self.names[host]]

    def release(self) -> None:
        self.released.set()

    def wait_running(self, count: int) -> bool:
        """Whether exactly `count` calls are running within 5 s."""
        with self.changed:
            return self.changed.wait_for(lambda: self.running == count, timeout=5)


@pytest.fixture
def fake() -> Iterator[FakeResolver]:
    resolver = FakeResolver({"fast.test": ["127.0.0.1"]}, slow={f"slow-{i}.test" for i in range(16)})
    for name in resolver.slow:
        resolver.names[name] = ["127.0.0.1"]
    yield resolver
    resolver.release()


def in_thread(function, *args):
    """Run `function(*args)` in a thread; returns (thread, results) where results gets its return or error."""
    results: list[object] = []

    def run() -> None:
        try:
            results.append(function(*args))
        except CollectionError as error:
            results.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def test_an_ip_literal_asks_no_resolver():
    def refuse(*_: object) -> list[tuple[object, ...]]:
        raise AssertionError("an IP literal reached the resolver")

    resolver = Resolver(getaddrinfo=refuse)
    for host in ("127.0.0.1", "::1", "fd00::5"):
        (address,) = resolver.resolve(host, Deadline(1), "lookup")
        assert address.ip == ip_literal(host)


def test_a_slow_lookup_does_not_delay_another_names_lookup(fake):
    """Sixteen lookups that never finish, then one of another name: it is answered at once."""
    resolver = Resolver(getaddrinfo=fake)
    slow = [in_thread(resolver.resolve, f"slow-{i}.test", Deadline(10), "lookup") for i in range(16)]
    assert fake.wait_running(16)
    started = time.monotonic()
    (address,) = resolver.resolve("fast.test", Deadline(5), "lookup")
    elapsed = time.monotonic() - started
    print(f"fast lookup with 16 slow ones in flight: {elapsed * 1000:.1f} ms")
    assert str(address) == "127.0.0.1"
    assert elapsed < 0.5
    fake.release()
    for thread, results in slow:
        thread.join(timeout=5)
        assert isinstance(results[0], tuple)


def test_a_lookup_is_bounded_by_its_callers_deadline_and_then_abandoned(fake):
    resolver = Resolver(getaddrinfo=fake)
    started = time.monotonic()
    with pytest.raises(CollectionError) as caught:
        resolver.resolve("slow-1.test", Deadline(0.3), "lookup")
    elapsed = time.monotonic() - started
    assert caught.value.reason is Reason.TIMEOUT
    assert "resolving slow-1.test did not finish in time" in caught.value.message
    assert 0.25 < elapsed < 0.8
    assert fake.running == 1  # getaddrinfo cannot be cancelled: its thread ends when it returns
    fake.release()
    assert fake.wait_running(0)


def test_a_name_being_looked_up_is_not_looked_up_again(fake):
    """Ten callers ask while the name is in flight, each giving up before it ends: every one waited for
    that lookup (its timeout says so) and none started another; the first caller gets the answer."""
    resolver = Resolver(getaddrinfo=fake)
    first = in_thread(resolver.resolve, "slow-3.test", Deadline(5), "lookup")
    assert fake.wait_running(1)
    impatient = [in_thread(resolver.resolve, "slow-3.test", Deadline(0.2), "lookup") for _ in range(10)]
    for thread, results in impatient:
        thread.join(timeout=5)
        [error] = results
        assert isinstance(error, CollectionError) and error.reason is Reason.TIMEOUT
        assert "resolving slow-3.test did not finish in time" in error.message
    assert fake.calls["slow-3.test"] == 1
    fake.release()
    first[0].join(timeout=5)
    assert [str(a) for a in first[1][0]] == ["127.0.0.1"]
    assert fake.calls["slow-3.test"] == 1
    resolver.resolve("slow-3.test", Deadline(5), "lookup")  # done lookups are not cached: a new one
    assert fake.calls["slow-3.test"] == 2


class AskedDeadline(Deadline):
    """A Deadline that tells when its caller first asks how long it may wait: a lookup past the cap asks
    before it waits for a place, holding the resolver's lock, so a place freed after that reaches it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.asked = threading.Event()

    def left(self) -> float:
        self.asked.set()
        return super().left()


def test_past_the_cap_a_lookup_waits_for_a_place_within_its_deadline(fake):
    resolver = Resolver(limit=2, getaddrinfo=fake)
    first = in_thread(resolver.resolve, "slow-1.test", Deadline(10), "lookup")
    second = in_thread(resolver.resolve, "slow-2.test", Deadline(10), "lookup")
    assert fake.wait_running(2)  # both places are taken
    with pytest.raises(CollectionError) as caught:
        resolver.resolve("fast.test", Deadline(0.2), "lookup")
    assert caught.value.reason is Reason.TIMEOUT
    assert "could not start in time: 2 other names are being looked up" in caught.value.message
    with pytest.raises(CollectionError) as caught:  # a name in flight needs no place: it waits for its lookup
        resolver.resolve("slow-1.test", Deadline(0.2), "lookup")
    assert "resolving slow-1.test did not finish in time" in caught.value.message
    deadline = AskedDeadline(5)
    waiting = in_thread(resolver.resolve, "fast.test", deadline, "lookup")
    assert deadline.asked.wait(timeout=5)  # it waits for a place
    assert not waiting[1] and fake.calls["fast.test"] == 0
    fake.release()
    for thread, results in (first, second, waiting):
        thread.join(timeout=5)
        assert results and [str(a) for a in results[0]] == ["127.0.0.1"], results
    assert fake.calls["fast.test"] == 1
    assert deadline.left() > 3  # it got its place when one freed, not at its deadline


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "Name or service not known"),
        (UnicodeError("label too long"), "not a name that can be looked up (UnicodeError)"),
    ],
)
def test_a_failed_lookup_is_a_connect_failure(error, message):
    def failing(*_: object) -> list[tuple[object, ...]]:
        raise error

    with pytest.raises(CollectionError) as caught:
        Resolver(getaddrinfo=failing).resolve("nowhere.test", Deadline(1), "lookup")
    assert caught.value.reason is Reason.CONNECT
    assert f"cannot resolve nowhere.test: {message}" == caught.value.message


def test_the_answer_is_each_address_once_ipv4_and_ipv6_only():
    answer = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%lo", 0, 0, 1)),
        (socket.AF_UNIX, socket.SOCK_STREAM, 0, "", "/tmp/x"),
    ]
    addresses = Resolver(getaddrinfo=lambda *_: answer).resolve("many.test", Deadline(1), "lookup")
    assert [str(a) for a in addresses] == ["10.0.0.1", "fe80::1"]
    assert addresses[1].socket_address(8765) == ("fe80::1", 8765, 0, 1)


@pytest.mark.loopback  # a listener and real connections on loopback
def test_tcp_goes_only_to_the_addresses_given():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    refused = Address(ip_literal("127.0.0.9"))
    good = Address(ip_literal("127.0.0.1"))
    sock, address = open_tcp("room.test", (refused, good), port, Deadline(2), "connect")
    assert address == good and sock.getpeername() == ("127.0.0.1", port)
    sock.close()
    listener.close()
    with pytest.raises(CollectionError) as caught:
        open_tcp("room.test", (refused,), port, Deadline(2), "connect")
    assert (
        caught.value.reason is Reason.CONNECT
        and f"cannot connect to room.test:{port}" in caught.value.message
    )


@pytest.mark.loopback  # a listener and a real connection on loopback
def test_a_room_socket_has_a_small_fixed_receive_buffer():
    """Fixed before connect (so the window is agreed with it), not grown by the kernel to 6 MiB: what a Room
    sends to a paused session waits in at most this much kernel memory."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock, _ = open_tcp(
            "room.test",
            (Address(ip_literal("127.0.0.1")),),
            listener.getsockname()[1],
            Deadline(2),
            "connect",
        )
        with sock:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * ROOM_RECEIVE_BUFFER_BYTES


def test_a_checked_target_brings_its_addresses_and_its_deadlines_start(monkeypatch):
    """The collection of a CheckedTarget looks nothing up, and its deadline counts from the probe's lookup."""
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_: pytest.fail("looked up again"))
    plain = parse_target("room.test:8765")
    address = Address(ip_literal("127.0.0.1"))
    lookup = Lookup((address,), time.monotonic() - 0.4)
    target = CheckedTarget(plain.host, plain.port, plain.discover, lookup)
    deadline = Deadline(1.0)
    assert addresses_for(target, deadline, Resolver()) == (address,)
    assert deadline.started == lookup.started
    assert 0.5 < deadline.left() < 0.65
    failed = CheckedTarget(plain.host, plain.port, plain.discover, Lookup((), time.monotonic(), TIMEOUT))
    with pytest.raises(CollectionError) as caught:
        addresses_for(failed, Deadline(1.0), Resolver())
    assert caught.value is TIMEOUT
    assert str(target) == str(plain) == "ws://room.test:8765"


TIMEOUT = CollectionError(Reason.TIMEOUT, "resolving room.test did not finish in time")
