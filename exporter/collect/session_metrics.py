"""The exporter's own metrics about its Room sessions, on `/metrics` in both modes: how many are open, how
many wait for the memory the Rooms' messages share, and how many times it has logged in to a Room (each
`auth` costs the Room tokens: reference §7)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.room.sessions import SessionPool


class SessionCollector(Collector):
    """`trueconf_exporter_room_sessions`, `..._sessions_waiting_for_memory` and `..._logins_total` of one
    pool."""

    def __init__(self, pool: SessionPool) -> None:
        self._pool = pool

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "trueconf_exporter_room_sessions",
            "Room sessions open now: authorised WebSockets kept between scrapes.",
            value=self._pool.open_sessions(),
        )
        yield GaugeMetricFamily(
            "trueconf_exporter_room_sessions_waiting_for_memory",
            "Room sessions whose next message waits, unread, for the memory all Rooms' messages share; "
            "a scrape of one may time out saying so.",
            value=self._pool.reader.paused(),
        )
        yield CounterMetricFamily(
            "trueconf_exporter_room_logins",
            "Logins (auth requests accepted) to Rooms since the exporter started; each issues Room tokens.",
            value=self._pool.logins,
        )
