"""Scrapes of the same Room at the same time share one collection.

Scrapes of one Room take turns on its session, so 100 clients looping `/probe?target=R` queued every
legitimate scrape behind them: each took the whole deadline and some timed out. Here a scrape that finds a
collection of the same Room (same target, module and settings) in flight waits for it and answers with its
result, as Go's singleflight does: a flood of probes costs one collection at a time, and a scrape is
answered in about the Room's own time. A waiter never waits past its own deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

from exporter.collect.collection import Collection
from exporter.room import CollectionError, Reason, RoomTarget


class _Flight:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Collection | None = None


class SharedCollections:
    """Thread-safe. Holds only the collections in flight: nothing is cached once a collection is done."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()

    def collect(
        self, key: Hashable, target: RoomTarget, timeout: float, collect: Callable[[], Collection]
    ) -> tuple[Collection, bool]:
        """The result of the collection of `key` in flight, or of `collect()` run now; and whether this
        call ran it (the one that records it). A waiter that runs out of `timeout` gets a timeout failure."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            try:
                flight.result = collect()
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
            assert flight.result is not None
            return flight.result, True
        started = time.monotonic()
        if flight.done.wait(timeout) and flight.result is not None:
            return flight.result, False
        error = CollectionError(
            Reason.TIMEOUT, f"{target} did not answer within {timeout:g}s (a scrape already in flight)"
        )
        return Collection(target, time.monotonic() - started, time.time(), error=error), False
