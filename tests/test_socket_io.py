"""The two pieces under every Room exchange, on real sockets: the read-ahead socket, the deadline reaper."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.room import Deadline, fetch_outgoing_requests, parse_target
from exporter.room import connection as room_connection
from exporter.room.deadline import COMPACT_AT_LEAST, SocketWatchdog, _Reaper, _reaper
from exporter.room.readahead import READ_AHEAD_BYTES, ReadAheadSocket
from tests import raw_servers
from tests.raw_servers import frame, reply_of_size, websocket_room


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(2.0)
    yield ours, theirs
    ours.close()
    theirs.close()


class CountingSocket:
    """A real socket that counts the reads it passes to the kernel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        return self.sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


# --- the read-ahead socket ---


def test_small_reads_are_served_from_one_kernel_read(pair) -> None:
    ours, theirs = pair
    counted = CountingSocket(ours)
    buffered = ReadAheadSocket(counted)  # type: ignore[arg-type]
    theirs.sendall(b"abcdefgh")
    assert buffered.recv(2) == b"ab"
    assert buffered.buffered == 6
    assert buffered.recv(3) == b"cde"
    assert buffered.recv(100) == b"fgh", "a short read, as socket.recv gives, never a wait for more"
    assert counted.reads == 1
    theirs.sendall(b"ij")
    assert buffered.recv(1) == b"i"
    assert counted.reads == 2
    theirs.close()
    assert buffered.recv(5) == b"j", "what was read ahead is handed out before the end of the stream"
    assert buffered.recv(5) == b""


def test_a_timeout_is_the_sockets_and_comes_only_when_nothing_is_buffered(pair) -> None:
    ours, theirs = pair
    buffered = ReadAheadSocket(ours)
    theirs.sendall(b"xy")
    buffered.settimeout(0.05)  # every other attribute is the socket's own
    assert ours.gettimeout() == 0.05
    assert buffered.recv(1) == b"x"
    assert buffered.recv(1) == b"y"
    with pytest.raises(TimeoutError):
        buffered.recv(1)


def test_a_large_read_goes_to_the_socket_directly(pair) -> None:
    ours, theirs = pair
    counted = CountingSocket(ours)
    buffered = ReadAheadSocket(counted)  # type: ignore[arg-type]
    theirs.sendall(b"z" * 1000)
    assert len(buffered.recv(READ_AHEAD_BYTES)) == 1000
    assert buffered.buffered == 0


def test_the_upgrade_answer_and_the_replies_after_it_take_one_kernel_read(monkeypatch) -> None:
    """websocket-client reads the upgrade answer a byte at a time and each frame in three reads or more;
    here the answer, the auth reply and the request's reply arrive in one write and are read in one."""
    counted: list[CountingSocket] = []

    def read_ahead_counted(sock: socket.socket) -> ReadAheadSocket:
        counted.append(CountingSocket(sock))
        return ReadAheadSocket(counted[-1])  # type: ignore[arg-type]

    monkeypatch.setattr(room_connection, "ReadAheadSocket", read_ahead_counted)
    with raw_servers.tcp_server(websocket_room(frame(reply_of_size(2_000)), one_write=True)) as port:
        target = parse_target(f"ws://127.0.0.1:{port}")
        reply = fetch_outgoing_requests(target, None, Deadline(5.0))
    assert reply["result"] is True
    # one read for all of it, then at most one more while closing (the hand-made Room never acks the close)
    assert counted[0].reads <= 2, f"{counted[0].reads} kernel reads"


# --- the deadline reaper ---


def test_a_watched_socket_is_shut_down_when_its_deadline_passes(pair) -> None:
    ours, _ = pair
    ours.settimeout(None)  # a blocking read: only the watchdog can end it
    started = time.monotonic()
    with SocketWatchdog(Deadline(0.2), ours) as watchdog:
        assert ours.recv(1) == b"", "the reaper's shutdown ends the blocked read"
    assert 0.15 < time.monotonic() - started < 1.5
    assert watchdog.fired, "the one who watched is told the socket was shut down"


def test_a_forgotten_socket_is_left_alone(pair) -> None:
    ours, theirs = pair
    with SocketWatchdog(Deadline(0.05), ours) as watchdog:
        pass
    assert not watchdog.fired
    time.sleep(0.2)
    theirs.sendall(b"still open")
    assert ours.recv(100) == b"still open"


def test_an_earlier_deadline_watched_after_a_later_one_still_comes_on_time(pair) -> None:
    ours, _ = pair
    other_ours, other_theirs = socket.socketpair()
    try:
        with SocketWatchdog(Deadline(30.0), other_ours):
            time.sleep(0.05)  # the reaper is now waiting for the 30 s deadline
            started = time.monotonic()
            with SocketWatchdog(Deadline(0.2), ours):
                assert ours.recv(1) == b""
            assert time.monotonic() - started < 1.5, "the reaper woke for the earlier deadline"
    finally:
        other_ours.close()
        other_theirs.close()


def test_a_reaper_that_could_not_start_fails_the_watch_and_starts_at_the_next(pair, monkeypatch) -> None:
    """Reads block until the reaper shuts their socket: a watch it cannot guard must fail, never wait."""
    ours, _ = pair
    ours.settimeout(3.0)  # far past the deadline: a reaper that never runs fails the test, never hangs it
    reaper = _Reaper()
    real_start = threading.Thread.start

    def no_thread_left(thread: threading.Thread) -> None:
        monkeypatch.setattr(threading.Thread, "start", real_start)  # only the first start fails
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread_left)
    with pytest.raises(RuntimeError):
        reaper.watch(time.monotonic() + 0.1, ours)
    reaper.watch(time.monotonic() + 0.2, ours)
    started = time.monotonic()
    assert ours.recv(1) == b""
    assert time.monotonic() - started < 1.5


def test_forgotten_entries_of_long_deadlines_do_not_pile_up(pair) -> None:
    ours, _ = pair
    for _ in range(COMPACT_AT_LEAST * 5):
        with SocketWatchdog(Deadline(600.0), ours):
            pass
    assert _reaper.pending() <= COMPACT_AT_LEAST * 2 + 1
