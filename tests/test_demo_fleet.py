"""The demo fleet keeps the banner's promises: each Room reports the name the banner gives it, the healthy
Rooms never meet an alert's condition over a day of their life, the failing Room fails all along, and the
banner's alerts and times are the rules' own (tests/test_demo_alerts.py runs them in a real Prometheus).

The lives are advanced with explicit times (no waiting): the emulated Rooms are the demo's own objects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from exporter.cli.demo import banner
from exporter.emulator.fleet import ROOMS, DemoRoom, alert_schedule, emulated_room
from exporter.emulator.living import AVAILABLE, DOWNLOADING, FAILED, WAITING, LivingRoom
from exporter.emulator.server import RunningEmulator
from exporter.methods import SYSTEM_INFO_METHOD
from tests import dashboard_queries as dq
from tests.test_emulator_methods import Client

pytestmark = pytest.mark.loopback

WAITING_THRESHOLD_SECONDS = 900
"""TrueconfFileRequestWaitingTooLong's threshold in prometheus/alerts.yml (checked below)."""
DOWNLOADING_THRESHOLD_SECONDS = 600
"""TrueconfFileTransferTooLong's threshold."""
SCRAPE_SECONDS = 15.0
"""prometheus/prometheus.yml's scrape_interval: how often Prometheus looks at a Room."""


def demo_room(name: str) -> DemoRoom:
    [room] = [r for r in ROOMS if r.name == name]
    return room


@contextlib.contextmanager
def running(room: DemoRoom) -> Iterator[RunningEmulator]:
    emulated = emulated_room(room)
    emulated.settings.websocket_port = 0  # the demo's own port may be taken by a running demo
    emulator = RunningEmulator(emulated)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def living(name: str) -> tuple[LivingRoom, float]:
    """The demo Room's own living Room, and the time it started at."""
    life = emulated_room(demo_room(name)).living
    assert life is not None
    started = max(int(r.created) for r in life.requests)  # its newest request is from its start, or before
    return life, float(started)


@pytest.mark.parametrize("room", [r for r in ROOMS if r.listening], ids=lambda r: r.name)
def test_each_demo_room_reports_the_name_the_banner_gives_it(room: DemoRoom) -> None:
    with running(room) as emulator:
        client = Client(emulator)
        try:
            client.auth()
            [reply] = client.ask(SYSTEM_INFO_METHOD).values()
        finally:
            client.close()
    text = banner("http://127.0.0.1:18765", 18801, 15)
    if room.reports_name:
        assert reply["result"] is True, reply
        assert reply["authInfo"] == {"peerId": f"{room.name}@demo.trueconf", "peerDn": room.display_name}
        assert f"{room.display_name} ({room.name}@demo.trueconf), 127.0.0.1:{room.port()}" in text
    else:  # old-room: getSystemInfo is one of the optional methods it does not know
        assert reply["result"] is False, reply
        assert f"{room.display_name}, 127.0.0.1:{room.port()}" in text


def scrapes(life: LivingRoom, start: float, seconds: float) -> Iterator[float]:
    """Advance `life` one scrape interval at a time, as Prometheus looks at it."""
    now = start
    while now < start + seconds:
        now += SCRAPE_SECONDS
        life.advance(now)
        yield now


def oldest_age(life: LivingRoom, status: int, now: float) -> float:
    ages = [now - float(e["timestamp"]) for e in life.outgoing_requests() if e["status"] == status]
    return max(ages, default=0.0)


@pytest.mark.parametrize("name", ["reception", "old-room"])
def test_the_healthy_rooms_meet_no_alerts_condition_over_a_day(name: str) -> None:
    """No outgoing request fails, none waits 15 minutes or downloads 10, file transfer stays available: so
    neither TrueconfFileRequestsFailed, the two age alerts nor TrueconfFileTransferUnavailable can go off."""
    life, started = living(name)
    assert all(e["status"] != FAILED for e in life.outgoing_requests())
    worst_waiting = worst_downloading = 0.0
    for now in scrapes(life, started, 24 * 3600):
        assert all(e["status"] != FAILED for e in life.outgoing_requests()), now - started
        assert life.availability == AVAILABLE, now - started
        worst_waiting = max(worst_waiting, oldest_age(life, WAITING, now))
        worst_downloading = max(worst_downloading, oldest_age(life, DOWNLOADING, now))
    assert 0 < worst_waiting < WAITING_THRESHOLD_SECONDS
    assert 0 < worst_downloading < DOWNLOADING_THRESHOLD_SECONDS
    assert life.incoming_requests(), "files both ways"
    assert len(life.requests) < 200, "finished requests leave the list"


def test_the_failing_room_fails_within_seconds_and_never_pauses_two_minutes() -> None:
    """TrueconfFileRequestsFailed fires at the first failure Prometheus sees: one usually comes within seconds
    and always within about two minutes of any moment, from the start on (the banner says so; a day of this
    seeded life has 121 s at the worst)."""
    life, started = living("training")
    failed = {e["fileRequestId"] for e in life.outgoing_requests() if e["status"] == FAILED}
    last_new = started
    longest_gap = 0.0
    gaps: list[float] = []
    now = started
    while now < started + 24 * 3600:
        now += 1.0
        life.advance(now)
        new = {e["fileRequestId"] for e in life.outgoing_requests() if e["status"] == FAILED} - failed
        if new:
            gaps.append(now - last_new)
            longest_gap, last_new = max(longest_gap, now - last_new), now
            failed |= new
    assert longest_gap <= 130, longest_gap
    assert sorted(gaps)[len(gaps) // 2] <= 15, "usually within seconds"
    assert len(failed) > 24 * 3600 / 60


def test_a_starting_living_room_has_already_settled() -> None:
    """After `start` the Room's history is where its plans put it: nothing changes at the next moment, so a
    scraper that starts a second later misses no failure (before, the history moved on over the first
    seconds, one status at a time)."""
    life, _ = living("training")
    now = max(float(e["timestamp"]) for e in life.outgoing_requests())
    assert [e for e in life.advance(now) if e["event"] == "fileRequestStatusChanged"] == []


def test_the_banner_names_each_rooms_alert_with_the_rules_own_for() -> None:
    rules = {rule["alert"]: rule for rule in dq.load_alert_rules()}
    assert (
        rules["TrueconfFileRequestWaitingTooLong"]["expr"].rstrip().endswith(f"> {WAITING_THRESHOLD_SECONDS}")
    )
    assert (
        rules["TrueconfFileTransferTooLong"]["expr"].rstrip().endswith(f"> {DOWNLOADING_THRESHOLD_SECONDS}")
    )
    alerting = [room for room in ROOMS if room.alert is not None]
    assert {room.name for room in ROOMS} - {room.name for room in alerting} == {"reception", "old-room"}
    for room in alerting:
        assert room.alert in rules, room
        assert room.fires_after == rules[room.alert].get("for", ""), room
        assert room.fires_after or room.expected, room
    schedule = alert_schedule()
    assert [line.split()[0] for line in schedule[:-1]] == ["training", "board-room", "lobby", "forbidden"]
    assert schedule[-1] == "reception, old-room: no alert"
    text = banner("http://127.0.0.1:18765", 18801, 15)
    for room in ROOMS:
        assert f"alerts: {room.alert_text}" in text
