"""Probes of one Room at the same time share its collection: a flood of probes is not a queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from exporter.collect.collection import Collection
from exporter.collect.inflight import SharedCollections
from exporter.emulator.faults import Fault
from exporter.fleet.reload import ConfigHolder
from exporter.room import Reason, RoomTarget, parse_target
from exporter.web.app import ExporterApp
from exporter.web.settings import ExporterSettings
from tests.exposition import value
from tests.processes import http_get

ROOM_SECONDS = 0.25
FLOODERS = 40


def test_a_probe_flood_of_one_room_leaves_its_real_scrapes_at_the_rooms_own_pace(room, serve_app, tmp_path):
    """100 clients looping /probe on a Room answering in 250 ms made every real scrape take the whole 5 s
    deadline with sessions on (3 of 8 down): they queued on its session, one collection each."""
    slow = room("doc-example", fault=Fault.SLOW_REPLY, slow_reply_seconds=ROOM_SECONDS)
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  default:\n    timeout: 5s\nallowed_targets: [127.0.0.1]\n")
    settings = ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 5.0)
    base = serve_app(ExporterApp(settings, ConfigHolder(config, default_timeout=5.0)))
    url = f"{base}/probe?target=127.0.0.1:{slow.ports.websocket}"
    assert http_get(url)[0] == 200  # the session is open
    stop = threading.Event()

    def flood() -> int:
        sent = 0
        while not stop.is_set() and sent < 200:
            http_get(url)
            sent += 1
        return sent

    latencies: list[float] = []
    with ThreadPoolExecutor(FLOODERS) as pool:
        flooding = [pool.submit(flood) for _ in range(FLOODERS)]
        try:
            for _ in range(6):
                started = time.monotonic()
                status, _, body = http_get(url)
                latencies.append(time.monotonic() - started)
                assert status == 200
                assert value(body.decode(), "trueconf_up") == 1, body
        finally:
            stop.set()
        sent = sum(f.result() for f in flooding)
    # a scrape joins the collection in flight or starts the next one: at most two Room round trips
    assert max(latencies) < 4 * ROOM_SECONDS + 0.5, latencies
    assert sent > FLOODERS, "the flood ran"


class HeldCollection:
    """A collection that runs until `release` is set, counting how often it ran (`started`: it runs)."""

    def __init__(self, target: RoomTarget) -> None:
        self.target = target
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0

    def __call__(self) -> Collection:
        self.runs += 1
        self.started.set()
        self.release.wait(5)
        return Collection(self.target, 0.1, time.time())


def lead(pool: ThreadPoolExecutor, shared: SharedCollections, held: HeldCollection) -> Future:
    """Start `held` as the collection in flight of "room", and wait until it is."""
    leader = pool.submit(shared.collect, "room", held.target, 5.0, held)
    assert held.started.wait(5), "the collection started"
    return leader


def test_the_first_caller_collects_and_the_others_share_its_result() -> None:
    shared = SharedCollections()
    held = HeldCollection(parse_target("ws://127.0.0.1:1"))
    with ThreadPoolExecutor(5) as pool:
        leader = lead(pool, shared, held)
        followers = [pool.submit(shared.collect, "room", held.target, 5.0, held) for _ in range(4)]
        held.release.set()
        results = [leader.result(), *(f.result() for f in followers)]
    assert held.runs == 1
    assert [ran for _, ran in results] == [True, False, False, False, False]
    assert len({id(collection) for collection, _ in results}) == 1
    later, ran = shared.collect("room", held.target, 5.0, held)
    assert ran and held.runs == 2 and later is not results[0][0], "nothing is kept once it is done"


def test_a_waiter_never_waits_past_its_own_deadline() -> None:
    shared = SharedCollections()
    held = HeldCollection(parse_target("ws://127.0.0.1:1"))
    with ThreadPoolExecutor(2) as pool:
        leader = lead(pool, shared, held)
        started = time.monotonic()
        waited, ran = shared.collect("room", held.target, 0.2, held)
        assert time.monotonic() - started < 1.0
        held.release.set()
        leader.result()
    assert not ran and waited.error is not None and waited.error.reason is Reason.TIMEOUT


def test_different_rooms_do_not_share() -> None:
    shared = SharedCollections()
    target = parse_target("ws://127.0.0.1:1")
    first, ran_first = shared.collect("a", target, 1.0, lambda: Collection(target, 0.0, 1.0))
    second, ran_second = shared.collect("b", target, 1.0, lambda: Collection(target, 0.0, 2.0))
    assert ran_first and ran_second and first is not second
