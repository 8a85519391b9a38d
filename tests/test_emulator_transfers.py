"""The emulated Room's transfers as a client that counts them sees them: a notification in the reference's
shape (§8) for every transition of the living Room, the Room's own record of what it did (the truth an
exporter's counters are compared with) equal to what its notifications said, and the notification faults.

Everything runs against a fast living Room (`fast_living_room`: hundreds of transfers a minute) over real
loopback WebSocket, read by a plain websocket-client connection that authorises and reads.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket

from exporter.emulator.faults import NOTIFICATION_REPEATS, STORM_BURST, Fault
from exporter.emulator.living import (
    DOWNLOADING,
    FAILED,
    PROCESSED,
    WAITING,
    LivingRoom,
    fast_living_room,
)
from exporter.emulator.server import RunningEmulator

pytestmark = pytest.mark.loopback

MILLISECONDS = 1e11
"""A timestamp above this is milliseconds (reference §6)."""
SENT = "outgoingFileRequestSent"
SENT_TO_CONFERENCE = "outgoingFileRequestSentToConference"
RECEIVED = "receivedFileRequest"
STATUS = "fileRequestStatusChanged"
CREATIONS = (SENT, SENT_TO_CONFERENCE, RECEIVED)
PROGRESS = ("outgoingFileRequestUploadingProgress", "incomingFileRequestDownloadingProgress")
FINISHED = {PROCESSED: "processed", FAILED: "failed"}
DEADLINE_SECONDS = 20.0
"""Bound of every wait below; each is over in a few seconds."""

BASE = {"method", "event", "fileRequestId"}
SHAPES = {
    SENT: BASE | {"peerId", "peerDn", "fileName", "timestamp", "fileSize", "fileId"},
    SENT_TO_CONFERENCE: BASE | {"fileName", "timestamp", "fileSize", "confId", "fileId"},
    RECEIVED: BASE | {"peerId", "peerDn", "fileName", "fileSize", "timestamp"},
    ("status", "outgoing", "peer"): BASE
    | {"status", "directionType", "fileName", "fileId", "peerId", "peerDisplayName", "timestamp", "fileSize"},
    ("status", "outgoing", "conference"): BASE
    | {"status", "directionType", "fileName", "fileId", "timestamp", "confId", "fileSize"},
    ("status", "incoming", "peer"): BASE
    | {"status", "directionType", "fileName", "peerId", "peerDisplayName", "timestamp", "fileSize"},
}
"""The fields of each notification as reference §8 lists them (`confId` on top for an incoming request
from a conference)."""


class Reader:
    """A raw client that authorises and then reads: notifications go to `events` in arrival order."""

    def __init__(self, emulator: RunningEmulator) -> None:
        assert emulator.ports is not None
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{emulator.ports.websocket}", timeout=5)
        self.events: list[dict[str, Any]] = []
        self.seen: Counter[Any] = Counter()
        """Of `events`: how many of each notification, and of each status `("status", N)`."""
        self.asked = 0

    def keep(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.seen[event["event"]] += 1
        if event["event"] == STATUS:
            self.seen["status", event["status"]] += 1

    @property
    def creations(self) -> int:
        return sum(self.seen[name] for name in CREATIONS)

    @property
    def finishes(self) -> int:
        return sum(self.seen["status", status] for status in FINISHED)

    def ask(self, method: str) -> dict[str, Any]:
        """Send one request and read until its reply; the notifications before it go to `events`."""
        self.asked += 1
        request_id = f"r{self.asked}"
        self.ws.send(json.dumps({"method": method, "requestId": request_id}))
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("method") == "event":
                assert "requestId" not in message and "result" not in message, message
                self.keep(message)
            elif message.get("requestId") == request_id:
                return message
        raise AssertionError(f"no reply to {method} within {DEADLINE_SECONDS} s")

    def auth(self) -> None:
        self.ws.send(json.dumps({"method": "auth", "type": "unsecured", "requestId": "auth"}))
        assert json.loads(self.ws.recv())["result"] is True

    def read_until(self, done: Callable[[], bool]) -> None:
        """Read notifications until `done()` (checked after each), within DEADLINE_SECONDS."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not done():
            assert time.monotonic() < deadline, f"not done within {DEADLINE_SECONDS} s"
            message = json.loads(self.ws.recv())
            assert message.get("method") == "event", message
            self.keep(message)

    def take(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        self.seen.clear()
        return events


@pytest.fixture
def reader() -> Iterator[Callable[[RunningEmulator], Reader]]:
    readers: list[Reader] = []

    def make(emulator: RunningEmulator) -> Reader:
        client = Reader(emulator)
        client.auth()
        readers.append(client)
        return client

    yield make
    for client in readers:
        client.ws.abort()


@pytest.fixture
def fast_room(room: Callable[..., RunningEmulator]) -> Callable[..., RunningEmulator]:
    """`fast_room(living=None, **EmulatorSettings fields)`: a fast living Room (a new request each way every
    0.05 s on average) served on loopback."""

    def make(living: LivingRoom | None = None, **fields: Any) -> RunningEmulator:
        return room(living=living or fast_living_room(0.05), **fields)

    return make


def direction(event: dict[str, Any]) -> str:
    if event["event"] == STATUS:
        return "incoming" if event["directionType"] == 0 else "outgoing"
    return "incoming" if event["event"] == RECEIVED else "outgoing"


def side(event: dict[str, Any]) -> str:
    return "conference" if "confId" in event else "peer"


def count(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client that counts transfers makes of a stream of notifications, in the shape of
    `RunningEmulator.transfers()`: creations, and each request's first processed or failed status once."""
    totals: dict[str, Any] = {
        d: {
            "created": {"peer": 0, "conference": 0},
            "finished": {(s, w): 0 for s in ("processed", "failed") for w in ("peer", "conference")},
            "processed_bytes": {"peer": 0, "conference": 0},
        }
        for d in ("outgoing", "incoming")
    }
    finished: set[str] = set()
    for event in events:
        where = totals[direction(event)]
        if event["event"] in CREATIONS:
            where["created"][side(event)] += 1
        elif event["event"] == STATUS and event["status"] in FINISHED:
            if event["fileRequestId"] in finished:
                continue
            finished.add(event["fileRequestId"])
            where["finished"][FINISHED[event["status"]], side(event)] += 1
            if event["status"] == PROCESSED:
                where["processed_bytes"][side(event)] += event["fileSize"]
    return totals


def transitions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] in (*CREATIONS, STATUS)]


def created(totals: dict[str, Any]) -> int:
    return sum(sum(totals[d]["created"].values()) for d in ("outgoing", "incoming"))


def finished(totals: dict[str, Any]) -> int:
    return sum(sum(totals[d]["finished"].values()) for d in ("outgoing", "incoming"))


def lived(emulator: RunningEmulator, client: Reader, transfers: int) -> list[dict[str, Any]]:
    """Pause the Room, mark, let it live until it has created `transfers` requests, pause it again: the
    notifications the client read in between (everything the Room said after the mark and before the
    second pause: a reply on the same connection comes after every notification sent before it)."""
    emulator.pause()
    emulator.mark()
    client.ask("getAppState")
    client.take()
    emulator.resume()
    client.read_until(lambda: client.creations >= transfers)
    emulator.pause()
    client.ask("getAppState")
    return client.take()


# --- the shapes ---------------------------------------------------------------------------------------------


def test_every_transition_is_announced_in_the_references_shape(fast_room, reader):
    emulator = fast_room()
    client = reader(emulator)
    kinds: set[Any] = set()
    looked = 0

    def kind(event: dict[str, Any]) -> Any:
        if event["event"] == STATUS:
            return (direction(event), side(event), event["status"])
        return (event["event"], side(event))

    wanted = {
        (SENT, "peer"),
        (SENT_TO_CONFERENCE, "conference"),
        (RECEIVED, "peer"),
        (RECEIVED, "conference"),
    }
    wanted |= {(d, w, s) for d in ("outgoing", "incoming") for w in ("peer", "conference") for s in (0, 2, 3)}

    def seen_all() -> bool:
        nonlocal looked
        kinds.update(kind(e) for e in client.events[looked:] if e["event"] in (*CREATIONS, STATUS))
        looked = len(client.events)
        return wanted <= kinds and bool(client.seen[PROGRESS[0]] and client.seen[PROGRESS[1]])

    client.read_until(seen_all)
    now = time.time()
    creations: dict[str, dict[str, Any]] = {}
    statuses: dict[str, list[int]] = {}
    for event in client.events:
        name, identifier = event["event"], event["fileRequestId"]
        if name in CREATIONS:
            assert name != RECEIVED or "peerDisplayName" not in event
            expected = SHAPES[name] | ({"confId"} if name == RECEIVED and "confId" in event else set())
            assert event.keys() == expected, event
            assert identifier not in creations, "one creation per request"
            creations[identifier] = event
            statuses[identifier] = [WAITING]
        elif name == STATUS:
            where = (direction(event), side(event))
            shape = SHAPES["status", where[0], "peer" if where[0] == "incoming" else where[1]]
            assert event.keys() == shape | ({"confId"} if where == ("incoming", "conference") else set()), (
                event
            )
            if identifier not in creations:
                continue  # created before the client authorised
            origin = creations[identifier]
            assert direction(origin) == where[0] and side(origin) == where[1]
            for key in ("fileName", "fileSize", "timestamp", "fileId", "peerId", "confId"):
                assert event.get(key) == origin.get(key), key
            assert event.get("peerDisplayName") == origin.get("peerDn")
            statuses[identifier].append(event["status"])
        elif name in PROGRESS:
            assert event.keys() == BASE | {"processedPercents", "fileSize"}, event
            assert 0 <= event["processedPercents"] < 100
        if "timestamp" in event:
            incoming = direction(event) == "incoming"
            timestamp = event["timestamp"] / 1000 if incoming else event["timestamp"]
            assert (event["timestamp"] > MILLISECONDS) is incoming, event
            assert now - 60 < timestamp <= now + 1, event
    lives = {tuple(path) for path in statuses.values()}
    assert lives <= {
        (WAITING,),
        (WAITING, DOWNLOADING),
        (WAITING, DOWNLOADING, PROCESSED),
        (WAITING, DOWNLOADING, FAILED),
        (WAITING, FAILED),
    }, "each request: created, accepted, then one end, each announced once"
    assert {(WAITING, DOWNLOADING, PROCESSED), (WAITING, DOWNLOADING, FAILED), (WAITING, FAILED)} <= lives


def test_the_lists_agree_with_the_notifications(fast_room, reader):
    """What the notifications said is what the lists show: each listed request was announced with its
    size, name and status."""
    living = fast_living_room(0.05, keep_finished_seconds=60)
    emulator = fast_room(living)
    client = reader(emulator)
    client.read_until(lambda: client.finishes >= 20)
    emulator.pause()
    outgoing = client.ask("getOutgoingFilesRequests")["outgoingFilesRequests"]
    incoming = client.ask("getIncomingFilesRequests")["incomingFilesRequests"]
    latest: dict[str, dict[str, Any]] = {}
    for event in client.events:
        if event["event"] in (*CREATIONS, STATUS):
            latest.setdefault(event["fileRequestId"], {}).update(event)
    announced = 0
    for entry in (*outgoing, *incoming):
        if entry["fileRequestId"] not in latest:
            continue  # listed before the client authorised, nothing changed since
        said = latest[entry["fileRequestId"]]
        announced += 1
        assert (said["fileSize"], said["fileName"], said["timestamp"]) == (
            entry["size"],
            entry["fileName"],
            entry["timestamp"],
        )
        assert said.get("status", WAITING) == entry["status"]
    assert announced >= 20


# --- the truth ----------------------------------------------------------------------------------------------


def test_the_rooms_record_equals_what_its_notifications_said(fast_room, reader):
    emulator = fast_room(fast_living_room(0.01))
    client = reader(emulator)
    events = lived(emulator, client, transfers=300)
    truth = emulator.transfers_since_mark()
    assert truth == count(events)
    assert created(truth) >= 300
    for d in ("outgoing", "incoming"):
        assert all(truth[d]["created"].values()), "both sides"
        assert all(truth[d]["finished"].values()), "both statuses, both sides"
        assert all(truth[d]["processed_bytes"].values())
    since_start = emulator.transfers()
    assert created(since_start) >= created(truth) and finished(since_start) >= finished(truth)


def test_a_paused_room_does_nothing_and_counts_nothing(fast_room, reader):
    emulator = fast_room()
    client = reader(emulator)
    client.read_until(lambda: client.creations >= 10)
    emulator.pause()
    client.ask("getAppState")
    before = emulator.transfers()
    client.take()
    client.ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        client.read_until(lambda: False)
    assert transitions(client.events) == []
    assert emulator.transfers() == before
    emulator.resume()
    client.ws.settimeout(5)
    client.read_until(lambda: client.creations >= 1)


def test_the_history_of_a_started_room_is_not_counted():
    """`start` fills the Room with requests of every status; none of them is a transition to count."""
    living = fast_living_room(0.05)
    t0 = 1_700_000_000.0
    living.start(t0)
    assert living.outgoing_requests() and living.incoming_requests()
    assert created(living.transitions.as_dicts()) == 0
    assert finished(living.transitions.as_dicts()) == 0


def test_the_record_counts_each_transition_of_a_long_life_once():
    """An hour of the demo's living Room moved on second by second, no sockets: the record equals the events
    it returned."""
    living = LivingRoom()
    t0 = 1_700_000_000.0
    living.start(t0)
    events: list[dict[str, Any]] = []
    now = t0
    while now < t0 + 3600:
        now += 1.0
        events += living.advance(now)
    truth = living.transitions.as_dicts()
    assert truth == count(events)
    assert created(truth) > 300
    assert Counter(e["event"] for e in events if e["event"] in CREATIONS).keys() == set(CREATIONS)


def test_a_fast_room_makes_hundreds_of_transfers_a_minute(fast_room, reader):
    emulator = fast_room(fast_living_room(0.1))
    client = reader(emulator)
    started = time.monotonic()
    client.read_until(lambda: client.finishes >= 40)
    per_minute = 40 * 60 / (time.monotonic() - started)
    assert per_minute >= 300, f"{per_minute:.0f} transfers finished a minute"


# --- the notification faults --------------------------------------------------------------------------------


def test_no_notifications_the_room_lives_and_says_nothing(fast_room, reader):
    emulator = fast_room(fault=Fault.NO_NOTIFICATIONS)
    client = reader(emulator)
    client.ask("getOutgoingFilesRequests")
    deadline = time.monotonic() + DEADLINE_SECONDS
    while finished(emulator.transfers()) < 20:
        assert time.monotonic() < deadline
        client.ask("getAppState")  # a round trip: what the Room would have sent before it has arrived
    client.ask("getOutgoingFilesRequests")
    assert client.events == []
    assert emulator.room.records[-1].notifications == 0


def test_repeated_notifications_each_is_sent_three_times(fast_room, reader):
    emulator = fast_room(fault=Fault.REPEATED_NOTIFICATIONS)
    client = reader(emulator)
    events = lived(emulator, client, transfers=50)
    runs = [events[i : i + NOTIFICATION_REPEATS] for i in range(0, len(events), NOTIFICATION_REPEATS)]
    assert all(len(run) == NOTIFICATION_REPEATS and run.count(run[0]) == len(run) for run in runs), runs
    once = [run[0] for run in runs]
    told = transitions(once)
    assert len(told) == len({(e["event"], e["fileRequestId"], e.get("status")) for e in told}), "once each"
    assert emulator.transfers_since_mark() == count(once)
    assert created(count(events)) == NOTIFICATION_REPEATS * created(count(once))
    client.ask("getOutgoingFilesRequests")
    before_reply = client.take()
    assert len(before_reply) == 2 * NOTIFICATION_REPEATS, "the notifications before a reply too"


def test_fleeting_requests_leave_the_lists_as_they_finish(fast_room, reader):
    living = fast_living_room(0.05, keep_finished_seconds=600)
    emulator = fast_room(living, fault=Fault.FLEETING_REQUESTS)
    client = reader(emulator)
    client.read_until(lambda: client.finishes >= 30)
    emulator.pause()
    client.ask("getAppState")
    ended = {e["fileRequestId"] for e in client.events if e["event"] == STATUS and e["status"] in FINISHED}
    lists = [
        client.ask(method)[key]
        for method, key in (
            ("getOutgoingFilesRequests", "outgoingFilesRequests"),
            ("getIncomingFilesRequests", "incomingFilesRequests"),
        )
    ]
    listed = [entry for entries in lists for entry in entries]
    assert listed, "waiting and downloading requests are listed"
    assert {entry["status"] for entry in listed} <= {WAITING, DOWNLOADING}
    assert ended.isdisjoint(entry["fileRequestId"] for entry in listed)
    emulator.room.settings.fault = Fault.NONE
    shown = {
        entry["fileRequestId"] for entry in client.ask("getOutgoingFilesRequests")["outgoingFilesRequests"]
    }
    shown |= {
        entry["fileRequestId"] for entry in client.ask("getIncomingFilesRequests")["incomingFilesRequests"]
    }
    assert ended <= shown, "without the fault the same Room lists them"


STORM = 10_000


def eventually(condition: Callable[[], bool]) -> None:
    """Wait for something the emulator's thread does after the client saw its effect."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)  # the poll interval of this bounded wait


def test_a_notification_storm_floods_every_authorised_connection_and_still_answers(room, reader):
    emulator = room("doc-example", fault=Fault.NOTIFICATION_STORM, storm_notifications=STORM)
    first, second = reader(emulator), reader(emulator)
    assert first.ask("getAppState")["result"] is True
    # answered between bursts, or after the last one on a busy machine (the endless storm of the next test
    # shows the answers within a storm for certain)
    assert 0 < len(first.events) <= STORM
    first.read_until(lambda: len(first.events) >= STORM)
    second.read_until(lambda: len(second.events) >= STORM)
    for client in (first, second):
        assert client.seen.keys() == {PROGRESS[0]}, "progress only: nothing to count"
    records = [r for r in emulator.room.records if r.logins]
    eventually(lambda: [len(r.storms) for r in records] == [1, 1])
    assert [r.notifications for r in records] == [STORM, STORM]
    first.take()
    first.ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        first.read_until(lambda: False)
    assert first.events == [], "one storm, then quiet until the next scrape"
    first.ws.settimeout(5)
    first.ask("getOutgoingFilesRequests")
    first.read_until(lambda: len(first.events) >= STORM + 2)
    eventually(lambda: len(records[0].storms) == 2)
    unauthorised = Reader(emulator)
    try:
        assert unauthorised.ask("getAppState")["result"] is False
        assert unauthorised.events == []
    finally:
        unauthorised.ws.abort()


def test_a_storm_ends_when_the_fault_is_switched_off(room, reader):
    emulator = room("doc-example", fault=Fault.NOTIFICATION_STORM, storm_notifications=10**9)
    client = reader(emulator)
    client.read_until(lambda: len(client.events) >= 2000)
    emulator.room.settings.fault = Fault.NONE
    client.ask("getAppState")
    client.take()
    client.ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        client.read_until(lambda: False)
    assert len(client.events) <= STORM_BURST, "at most the rest of the burst under way"
