"""Room sessions kept open between scrapes: one authorised WebSocket per Room and credentials, so a Room sees
one `auth` per session instead of one per scrape (reference §7: each `auth` issues tokens).

Collection stays scrape-triggered: nothing is ever sent to a Room between scrapes (but pongs to its pings);
what the Room sends is read as it arrives, by the pool's one reader thread (room/reader.py). Each slot keeps
the Room's ledger (room/ledger.py): the transfer counters outlive a replaced session, and are forgotten with
the slot. Bounds:
- a session not used for `idle_seconds` is closed by one shared sweeper thread;
- at most `max_sessions` slots (open, opening or failed) are kept; the least recently used leaves first;
- scrapes of one Room (an HA pair of Prometheus servers) take turns on its session, never logging in twice;
- a session whose exchange ended with a reply still pending is closed at once, never reused.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from exporter.lru import LruCache
from exporter.room.budget import DEFAULT_MAX_MESSAGE_BYTES, MessageBudget
from exporter.room.connect import Resolver
from exporter.room.connection import RoomConnection
from exporter.room.deadline import Deadline
from exporter.room.ledger import Ledger, RoomTransfers
from exporter.room.reader import RoomReader

DEFAULT_IDLE_SECONDS = 300.0
DEFAULT_MAX_SESSIONS = 1000
MAX_DIGESTS = 256
"""Credentials whose digests the pool keeps (a few modules' PINs, hashed once each, not at every scrape)."""


@dataclass
class RoomSlot:
    """What the pool keeps for one Room and one set of credentials."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connection: RoomConnection | None = None
    last_used: float = field(default_factory=time.monotonic)
    silent_methods: set[str] = field(default_factory=set)
    """Optional methods this Room has never answered, once asked: not asked again while the slot lives (a
    reload or an idle sweep forgets them)."""
    answered_methods: set[str] = field(default_factory=set)
    """Methods this Room has answered at least once: one late reply never makes them `silent`."""
    system_info: dict[str, Any] | None = None
    """The `getSystemInfo` reply of the open session: the version is asked once per session."""
    evicted: bool = False
    """Out of the pool's table (it was full): closed by the scrape using it when that scrape ends."""
    ledger: Ledger = field(default_factory=Ledger)
    """The Room's transfer counters: they outlive its sessions, and leave with the slot."""

    def detach(self) -> RoomConnection | None:
        """Take the connection off the slot (to be closed by the caller, outside any pool-wide lock)."""
        connection, self.connection, self.system_info = self.connection, None, None
        return connection

    def drop_connection(self) -> None:
        """Close the connection (at once: closing never waits)."""
        connection = self.detach()
        if connection is not None:
            connection.close()


class SessionPool:
    """Thread-safe: any number of scrapes use it at once."""

    def __init__(
        self,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._slots: LruCache[str, RoomSlot] = LruCache(max_sessions)
        self._lock = threading.Lock()
        self._logins = 0
        self._sweeper: threading.Thread | None = None
        self.budget = MessageBudget(max_message_bytes=max_message_bytes)
        """What reading every Room's messages may cost at once (room/budget.py), shared by all collections."""
        self.reader = RoomReader()
        """Reads every open session as its Room sends (room/reader.py)."""
        self._deadlines: weakref.WeakSet[Deadline] = weakref.WeakSet()
        self.resolver = Resolver()
        """Looks up the Rooms' names: every lookup a collection makes goes through it (room/connect.py)."""
        self._digests: LruCache[str | None, str] = LruCache(MAX_DIGESTS)
        self._digests_lock = threading.Lock()

    def key(self, target: str, pin: str | None) -> str:
        """A Room and its credentials; the PIN only as a digest, so the key can be shown without it."""
        with self._digests_lock:
            digest = self._digests.get(pin)
            if digest is None:
                digest = _credentials_digest(pin)
                self._digests.put(pin, digest)
        return f"{target} {digest}"

    def slot(self, key: str) -> RoomSlot:
        """The slot of `key`, made most recently used; when the table is full, the least recently used slot
        leaves it (O(1)): at most `max_sessions` slots, open, opening or failed, are ever kept. An evicted
        slot in use by a scrape is closed by `release` when that scrape ends."""
        evicted = []
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = RoomSlot(ledger=Ledger(forget_after_seconds=self.idle_seconds))
                evicted = [self._evict(old) for _, old in self._slots.put(key, slot)]
            slot.last_used = time.monotonic()  # so the sweeper leaves it alone while this scrape waits for it
            self._start_sweeper()
        _close(evicted)  # outside the pool's lock: closing may take a while, other scrapes need the lock
        return slot

    def release(self, slot: RoomSlot) -> None:
        """End a scrape's turn on `slot` (whose lock it holds); a slot evicted meanwhile is closed now."""
        with self._lock:  # with `_evict` under the same lock, an eviction sees either the turn or its end
            # taken off before the turn ends: once it has, another scrape may be using the slot
            connection = slot.detach() if slot.evicted else None
            slot.lock.release()
        if connection is not None:
            connection.close()

    @staticmethod
    def _evict(slot: RoomSlot) -> RoomConnection | None:
        """Mark `slot` out of the table (the pool's lock held); its connection, when no scrape is using it."""
        slot.evicted = True
        if not slot.lock.acquire(blocking=False):
            return None  # its scrape closes it in `release`
        try:
            return slot.detach()
        finally:
            slot.lock.release()

    def begin(self, deadline: Deadline) -> None:
        """Note a collection's deadline, so that `cancel_all` can end it."""
        with self._lock:
            self._deadlines.add(deadline)

    def cancel_all(self) -> int:
        """End every collection now (a stopping exporter whose drain time is over): every deadline passes,
        the sockets still opening are shut, and every session is closed, so whatever waits on a Room ends
        at once. Returns how many collections were ended."""
        with self._lock:
            deadlines = [deadline for deadline in self._deadlines if not deadline.expired()]
            slots = list(self._slots.values())
        for deadline in deadlines:
            deadline.cancel()
        for slot in slots:
            connection = slot.connection
            if connection is not None:
                connection.close()
        return len(deadlines)

    def transfers(self, key: str) -> RoomTransfers | None:
        """The counters of the Room under `key`, when the pool keeps it (without making it recent)."""
        with self._lock:
            slot = self._slots.peek(key)
        return None if slot is None else slot.ledger.totals()

    def logged_in(self) -> None:
        with self._lock:
            self._logins += 1

    @property
    def logins(self) -> int:
        """Logins (`auth` requests that succeeded) since the process started."""
        return self._logins

    def __len__(self) -> int:
        """Slots kept: open sessions, and Rooms being opened or that failed (at most `max_sessions`)."""
        with self._lock:
            return len(self._slots)

    def open_sessions(self) -> int:
        with self._lock:
            return sum(
                1
                for slot in self._slots.values()
                if slot.connection is not None and not slot.connection.closed
            )

    def close_all(self) -> None:
        """Close every session (a reload changed credentials); the next scrape of each Room logs in again,
        and asks again the methods it never answered. The Rooms' ledgers stay: a reload resets no counter.
        The digests kept are forgotten too: they are keyed by the PINs they were given, and a reload may
        have dropped some."""
        with self._digests_lock:
            self._digests.clear()
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.lock:
                slot.drop_connection()
                slot.silent_methods.clear()
                slot.answered_methods.clear()

    def sweep(self, now: float | None = None) -> None:
        """Close the sessions idle longer than `idle_seconds`, and forget their slots. The table is in order
        of use, so the sweep stops at the first slot used recently."""
        now = time.monotonic() if now is None else now
        idle = []
        with self._lock:
            for key, slot in list(self._slots.items()):
                if now - slot.last_used <= self.idle_seconds:
                    break
                if not slot.lock.acquire(blocking=False):
                    continue
                try:
                    idle.append(slot.detach())
                    self._slots.pop(key)
                finally:
                    slot.lock.release()
        _close(idle)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = threading.Thread(
                target=_sweep_while_alive, args=(weakref.ref(self),), name="session-sweeper", daemon=True
            )
            self._sweeper.start()


def _credentials_digest(pin: str | None) -> str:
    return hashlib.sha256((pin if pin is not None else "\0no-pin").encode()).hexdigest()[:16]


def _sweep_while_alive(pool_ref: weakref.ref[SessionPool]) -> None:
    """The sweeper holds its pool weakly: a pool nobody uses any more is collected and its thread ends."""
    while (pool := pool_ref()) is not None:
        interval = max(1.0, pool.idle_seconds / 4)
        del pool
        time.sleep(interval)
        pool = pool_ref()
        if pool is None:
            return
        pool.sweep()
        del pool


def _close(connections: list[RoomConnection | None]) -> None:
    for connection in connections:
        if connection is not None:
            connection.close()
