"""Load: fifty scrapes at once against one exporter process, repeated; every answer must be right.

Each scrape opens its own WebSocket to the Room, so fifty concurrent scrapes are fifty concurrent
conversations; a reply matched to the wrong request, a shared registry or a dropped connection would show
up as a wrong count, a failed scrape or a non-200 answer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter.emulator.scenario import Scenario
from tests.exposition import samples
from tests.processes import http_get

pytestmark = pytest.mark.process

CONCURRENT_SCRAPES = 50
ROUNDS = 5

ENTRIES = [
    {"status": 0, "size": 100, "_ageSeconds": 900, "peerId": "a@x", "peerDn": "A"},
    {"status": 1, "size": 200, "_ageSeconds": 600, "peerId": "b@x", "peerDn": "B"},
    {"status": 1, "size": 300, "_ageSeconds": 30, "confId": "c1@x#vcs"},
    {"status": 2, "size": 400, "_ageSeconds": 300, "peerId": "c@x"},
    {"status": 2, "size": 500, "_ageSeconds": 20, "confId": "c2@x#vcs"},
    {"status": 2, "size": 600, "_ageSeconds": 10, "confId": "c2@x#vcs"},
    {"status": 3, "size": 700, "_ageSeconds": 1200, "peerId": "d@x"},
    {"status": 7, "size": 800, "_ageSeconds": 5, "peerId": "e@x"},
    {"status": "2", "size": 900, "_ageSeconds": 5, "peerId": "f@x"},
    "not an object",
]
EXPECTED_COUNTS = {
    ("failed", "peer"): 1,
    ("waiting", "peer"): 1,
    ("waiting", "conference"): 1,
    ("downloading", "peer"): 1,
    ("downloading", "conference"): 2,
    ("processed", "peer"): 1,
    ("unknown", "peer"): 2,
}
EXPECTED_SIZES = {("downloading", "conference"): 1100, ("unknown", "peer"): 1700}
EXPECTED_MALFORMED = 2  # the string status and the entry that is not an object


def check(text: str) -> None:
    """The scenario's figures, read from one parse of the exposition."""
    found = samples(text)

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    assert value("trueconf_up") == 1, text
    for status in ("failed", "waiting", "downloading", "processed", "unknown"):
        for destination in ("peer", "conference"):
            labels = {"status": status, "destination": destination}
            expected = EXPECTED_COUNTS.get((status, destination), 0)
            assert value("trueconf_outgoing_file_requests", **labels) == expected, (labels, text)
    for (status, destination), size in EXPECTED_SIZES.items():
        assert (
            value("trueconf_outgoing_file_requests_size_bytes", status=status, destination=destination)
            == size
        )
    assert value("trueconf_outgoing_file_requests_malformed") == EXPECTED_MALFORMED
    age = value("trueconf_outgoing_file_requests_oldest_pending_age_seconds", status="waiting")
    assert 590 <= age <= 700, age


def test_fifty_concurrent_scrapes_repeated_are_all_correct(room, processes) -> None:
    emulator = room(Scenario(entries=ENTRIES, notifications_before_reply=20))
    exporter = processes["exporter"](
        "--target", f"ws://127.0.0.1:{emulator.ports.websocket}", "--timeout", "20"
    )
    url = f"http://127.0.0.1:{exporter.ports['http']}/metrics"
    check(http_get(url)[2].decode())

    for round_number in range(ROUNDS):
        start = threading.Barrier(CONCURRENT_SCRAPES)

        def one_scrape(barrier: threading.Barrier) -> tuple[int, str, float]:
            barrier.wait(timeout=30)
            began = time.monotonic()
            status, _, body = http_get(url, timeout=60)
            return status, body.decode(), time.monotonic() - began

        with ThreadPoolExecutor(CONCURRENT_SCRAPES) as pool:
            results = list(pool.map(one_scrape, [start] * CONCURRENT_SCRAPES))
        assert len(results) == CONCURRENT_SCRAPES
        for status, text, _ in results:
            assert status == 200, text
            check(text)
        slowest = max(elapsed for _, _, elapsed in results)
        print(f"round {round_number}: slowest of {CONCURRENT_SCRAPES} concurrent scrapes {slowest:.2f}s")
        assert exporter.alive(), exporter.stderr
