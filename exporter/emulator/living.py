"""The `demo` Room: outgoing and incoming file requests that are created, accepted, progress, finish, fail or
get stuck over minutes, and a Room that makes calls, sits in conferences and now and then loses its server
or its login (so file transfer is unavailable for a few minutes), so that a dashboard has something to show
and alerts have something to fire on.

Every transition is announced as the Room announces it (reference §8): `outgoingFileRequestSent` (or
`outgoingFileRequestSentToConference`) and `receivedFileRequest` when a request is created,
`fileRequestStatusChanged` at every status change, progress events while it downloads. And every transition
is counted (`Transitions`), so a test can compare what an exporter counted with what the Room did.

Time is passed in, never read here, so the life cycle is testable without waiting.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypedDict

from exporter.emulator.scenario import DEFAULT_AUTH_INFO, DEFAULT_PRODUCT_INFO, LOGGED_IN_APP_STATES

FAILED, WAITING, DOWNLOADING, PROCESSED = 0, 1, 2, 3
NO_SERVER, CONNECTING, LOGIN_REQUIRED, READY, CALLING, IN_CONFERENCE, ENDING_CONFERENCE = range(7)
"""`getAppState` values (reference §5)."""
UNTIL_LOGGED_IN, AVAILABLE = 2, 3
"""`getFileTransferAvailability` values the living Room takes: it is never forbidden by server or licence."""

PEERS = (
    ("820_1@demo.trueconf", "Reception"),
    ("821_7@demo.trueconf", "Board room"),
    ("904@demo.trueconf", "Ann"),
)
CONFERENCES = ("000001703e81e38e@demo.trueconf#vcs", "00000170aa12bc44@demo.trueconf#vcs")
FILE_NAMES = ("agenda.pdf", "slides.pptx", "minutes.docx", "photo.jpg", "budget.xlsx", "recording.mp4")

FATES = (
    ("delivered", 0.62),
    ("failed", 0.12),
    ("stuck-waiting", 0.14),
    ("stuck-downloading", 0.06),
    ("declined-late", 0.06),
)
"""How a new request will end, with its probability."""

KEEP_FINISHED_SECONDS = 600
"""Processed and failed requests stay listed this long; a real Room keeps them longer."""
STUCK_SECONDS = 1500
"""A stuck request is finally given up (fails) after this long, so the list stays bounded."""
WARM_UP_SECONDS = 240
"""How much of its recent life a starting Room has already lived: longer than any request that is not stuck
takes (at most 90 s to be accepted and 120 s to finish)."""

APP_STATE_LIFE: Mapping[int, tuple[tuple[float, float], tuple[tuple[int, float], ...]]] = MappingProxyType(
    {
        READY: ((120, 480), ((CALLING, 0.75), (NO_SERVER, 0.15), (LOGIN_REQUIRED, 0.10))),
        CALLING: ((5, 40), ((IN_CONFERENCE, 0.8), (READY, 0.2))),
        IN_CONFERENCE: ((120, 900), ((ENDING_CONFERENCE, 1.0),)),
        ENDING_CONFERENCE: ((1, 4), ((READY, 1.0),)),
        NO_SERVER: ((20, 120), ((CONNECTING, 1.0),)),
        CONNECTING: ((3, 20), ((READY, 1.0),)),
        LOGIN_REQUIRED: ((60, 300), ((READY, 1.0),)),
    }
)
"""Each app state: how long the Room stays in it (seconds, uniform) and where it goes next, with weights. The
Room is never off its server or logged out for more than about five minutes at a time, so the demo's living
Rooms never look like a Room whose file transfer is down for good."""

ON_SERVER_LIFE: Mapping[int, tuple[tuple[float, float], tuple[tuple[int, float], ...]]] = MappingProxyType(
    {
        **APP_STATE_LIFE,
        READY: ((120, 480), ((CALLING, 1.0),)),
    }
)
"""A Room that makes calls and sits in conferences but never leaves its server: file transfer stays available
(the demo's healthy Room, which must not show even a pending TrueconfFileTransferUnavailable)."""


DIRECTIONS = ("outgoing", "incoming")
SIDES = ("peer", "conference")
"""A request's side: `conference` when it carries a `confId`, `peer` otherwise (the exporter's `destination`
label of outgoing requests and `source` label of incoming ones)."""
FINISHED_NAMES = MappingProxyType({PROCESSED: "processed", FAILED: "failed"})
"""The finished statuses by the names of the counters' `status` label."""


class DirectionTotals(TypedDict):
    """One direction's transitions, every key present (0 until counted), in the shape of the exporter's
    `ledger.TransferTotals` (`dataclasses.asdict` of one compares equal to this)."""

    created: dict[str, int]
    """side -> requests created."""
    finished: dict[tuple[str, str], int]
    """(`processed` or `failed`, side) -> requests that reached that status."""
    processed_bytes: dict[str, int]
    """side -> the sizes of the requests that reached `processed`."""


@dataclass
class Transitions:
    """What a living Room did, counted: requests created, requests finished and the bytes processed, per
    direction and side. Each request counts once when it is created and once when it finishes (a request
    finishes once: processed or failed), whether or not anyone was told."""

    created: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(direction, side) -> requests created."""
    finished: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(direction, status name, side) -> requests finished."""
    processed_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(direction, side) -> bytes of the requests processed."""

    def copy(self) -> Transitions:
        return Transitions(Counter(self.created), Counter(self.finished), Counter(self.processed_bytes))

    def since(self, earlier: Transitions) -> Transitions:
        """What happened after `earlier` (a copy taken before) was taken."""
        return Transitions(
            self.created - earlier.created,
            self.finished - earlier.finished,
            self.processed_bytes - earlier.processed_bytes,
        )

    def as_dicts(self) -> dict[str, DirectionTotals]:
        """`{"outgoing": DirectionTotals, "incoming": DirectionTotals}`, plain dicts, zeros included."""
        return {
            direction: DirectionTotals(
                created={side: self.created[direction, side] for side in SIDES},
                finished={
                    (status, side): self.finished[direction, status, side]
                    for status in FINISHED_NAMES.values()
                    for side in SIDES
                },
                processed_bytes={side: self.processed_bytes[direction, side] for side in SIDES},
            )
            for direction in DIRECTIONS
        }


def side_of(entry: dict[str, Any]) -> str:
    return "conference" if entry.get("confId") not in (None, "") else "peer"


@dataclass
class LivingRequest:
    """One request and the plan for its life."""

    entry: dict[str, Any]
    fate: str
    accept_at: float
    finish_at: float
    finished_at: float | None = None
    progress: int = 0
    incoming: bool = False
    """Sent to the Room (timestamps in milliseconds, no fileId) rather than by it."""

    @property
    def created(self) -> float:
        timestamp = float(self.entry["timestamp"])
        return timestamp / 1000 if self.incoming else timestamp

    @property
    def direction(self) -> str:
        return "incoming" if self.incoming else "outgoing"


@dataclass
class LivingRoom:
    """A Room that lives; `advance(now)` moves it on and returns the events it sent."""

    rng: random.Random = field(default_factory=lambda: random.Random(1))
    """Drives the outgoing requests (its own generator, so they do not depend on the rest)."""
    mean_seconds_between_requests: float = 9.0
    fates: tuple[tuple[str, float], ...] = FATES
    """How new requests, outgoing and incoming, end, with weights: the demo's failing Room fails most of them,
    its healthy Rooms none."""
    requests: list[LivingRequest] = field(default_factory=list)
    next_creation: float | None = None
    incoming_rng: random.Random = field(default_factory=lambda: random.Random(2))
    mean_seconds_between_incoming: float = 20.0
    incoming: list[LivingRequest] = field(default_factory=list)
    next_incoming: float | None = None
    state_rng: random.Random = field(default_factory=lambda: random.Random(3))
    app_state_life: dict[int, tuple[tuple[float, float], tuple[tuple[int, float], ...]]] = field(
        default_factory=lambda: dict(APP_STATE_LIFE)
    )
    """How long each app state lasts and where it goes next (APP_STATE_LIFE, or ON_SERVER_LIFE)."""
    app_state: int = READY
    state_until: float | None = None
    """When the app state changes next."""
    product_info: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRODUCT_INFO))
    auth_info: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_AUTH_INFO))
    accept_seconds: tuple[float, float] = (3.0, 60.0)
    """How long an outgoing request waits for its recipient before it is accepted (uniform)."""
    incoming_accept_seconds: tuple[float, float] = (5.0, 90.0)
    """How long an incoming request waits before the Room accepts it (uniform)."""
    finish_seconds: tuple[float, float] = (5.0, 120.0)
    """How long an accepted request takes to end, either way (uniform)."""
    keep_finished_seconds: float = KEEP_FINISHED_SECONDS
    stuck_seconds: float = STUCK_SECONDS
    warm_up_seconds: float = WARM_UP_SECONDS
    """How much of its life `start` makes up; the history's older requests are as old in proportion."""
    tick_seconds: float = 1.0
    """How often the emulator moves the Room on (and sends what happened)."""
    transitions: Transitions = field(default_factory=Transitions)
    """Every transition since `start` (or, without it, since the first `advance`): the truth to compare an
    exporter's counters with."""

    def start(self, now: float) -> None:
        """Fill the Room with a history, as if it had been living for a while: older requests of every kind,
        and the last `warm_up_seconds` of requests at its own pace, each already where its plan puts it at
        `now`. So the first scrape shows every status, and what changes next changes at the Room's usual
        pace: no burst of transitions in its first seconds that a scraper starting a moment later misses.
        The history is not counted in `transitions`."""
        scale = self.warm_up_seconds / WARM_UP_SECONDS
        for age in (1300, 900, 420, 240, 120, 60, 30, 10):
            self._create(now - age * scale)
        for age in (1200, 500, 180, 90, 40, 15):
            self._receive(now - age * scale)
        self.next_creation = self.next_incoming = now - self.warm_up_seconds
        for _ in range(8):  # each call moves a request on by at most one status; three suffice
            if not self.advance(now):
                break
        self.transitions = Transitions()

    @property
    def availability(self) -> int:
        """File transfer is available while the Room is logged in to its server, and until then not."""
        return AVAILABLE if self.app_state in LOGGED_IN_APP_STATES else UNTIL_LOGGED_IN

    def outgoing_requests(self) -> list[dict[str, Any]]:
        return [dict(request.entry) for request in self.requests]

    def incoming_requests(self) -> list[dict[str, Any]]:
        return [dict(request.entry) for request in self.incoming]

    def advance(self, now: float) -> list[dict[str, Any]]:
        """Everything that happened up to `now`, in time order: app state changes, and new requests, which
        only come while file transfer is available."""
        events: list[dict[str, Any]] = []
        if self.next_creation is None:
            self.next_creation = now
        if self.next_incoming is None:
            self.next_incoming = now
        if self.state_until is None:
            self.state_until = now + self.state_rng.uniform(*self.app_state_life[self.app_state][0])
        while min(self.state_until, self.next_creation, self.next_incoming) <= now:
            if self.state_until <= min(self.next_creation, self.next_incoming):
                events.extend(self._change_state(self.state_until))
            elif self.next_creation <= self.next_incoming:
                if self.availability == AVAILABLE:
                    events.append(sent_event(self._create(self.next_creation)))
                self.next_creation += self.rng.expovariate(1.0 / self.mean_seconds_between_requests)
            else:
                if self.availability == AVAILABLE:
                    events.append(received_event(self._receive(self.next_incoming)))
                self.next_incoming += self.incoming_rng.expovariate(1.0 / self.mean_seconds_between_incoming)
        for request in (*self.requests, *self.incoming):
            events.extend(self._step(request, now))
        self.requests = [r for r in self.requests if self._kept(r, now)]
        self.incoming = [r for r in self.incoming if self._kept(r, now)]
        return events

    def progress_events(self) -> list[dict[str, Any]]:
        """What the Room may send at any moment without anything having changed: the progress of each
        request downloading now, or, when none is, its app state. No creation, no status: nothing a counter
        counts."""
        events = [
            progress_event(r.entry, r.progress, incoming=r.incoming)
            for r in (*self.requests, *self.incoming)
            if r.entry["status"] == DOWNLOADING
        ]
        return events or [{"method": "event", "event": "appStateChanged", "appState": self.app_state}]

    def _kept(self, request: LivingRequest, now: float) -> bool:
        return request.finished_at is None or now - request.finished_at < self.keep_finished_seconds

    def _change_state(self, at: float) -> list[dict[str, Any]]:
        was_available = self.availability
        was = self.app_state
        next_states = self.app_state_life[was][1]
        self.app_state = self.state_rng.choices([s for s, _ in next_states], [w for _, w in next_states])[0]
        self.state_until = at + self.state_rng.uniform(*self.app_state_life[self.app_state][0])
        events = [{"method": "event", "event": "appStateChanged", "appState": self.app_state}]
        if self.app_state == NO_SERVER:
            events.append({"method": "event", "event": "serverDisconnected"})
        elif self.app_state == LOGIN_REQUIRED:
            events.append({"method": "event", "event": "authorizationNeeded"})
        elif was in (NO_SERVER, CONNECTING) and self.app_state == READY:
            events.append({"method": "event", "event": "serverConnected"})
        if self.availability != was_available:
            events.append(
                {
                    "method": "event",
                    "event": "fileTransferAvailabilityChanged",
                    "availability": self.availability,
                }
            )
        return events

    def _create(self, created: float) -> dict[str, Any]:
        fate = self.rng.choices([f for f, _ in self.fates], [w for _, w in self.fates])[0]
        size = int(self.rng.lognormvariate(13, 1.5))
        entry: dict[str, Any] = {
            "fileRequestId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "fileName": self.rng.choice(FILE_NAMES),
            "status": WAITING,
            "size": size,
            "timestamp": int(created),
            "fileId": self.rng.randrange(10**8, 10**9),
        }
        if self.rng.random() < 0.3:
            entry["confId"] = self.rng.choice(CONFERENCES)
        else:
            entry["peerId"], entry["peerDn"] = self.rng.choice(PEERS)
        accept_at = created + self.rng.uniform(*self.accept_seconds)
        finish_at = accept_at + self.rng.uniform(*self.finish_seconds)
        self.requests.append(LivingRequest(entry, fate, accept_at, finish_at))
        self.transitions.created["outgoing", side_of(entry)] += 1
        return entry

    def _receive(self, created: float) -> dict[str, Any]:
        """A request sent to the Room: from a peer, or from a peer in a conference (then with `confId` too);
        timestamp in milliseconds and no fileId, as the reference's incoming example."""
        rng = self.incoming_rng
        fate = rng.choices([f for f, _ in self.fates], [w for _, w in self.fates])[0]
        entry: dict[str, Any] = {
            "fileRequestId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "fileName": rng.choice(FILE_NAMES),
            "status": WAITING,
            "size": int(rng.lognormvariate(12.5, 1.5)),
            "timestamp": int(created * 1000),
        }
        entry["peerId"], entry["peerDn"] = rng.choice(PEERS)
        if rng.random() < 0.3:
            entry["confId"] = rng.choice(CONFERENCES)
        accept_at = created + rng.uniform(*self.incoming_accept_seconds)
        finish_at = accept_at + rng.uniform(*self.finish_seconds)
        self.incoming.append(LivingRequest(entry, fate, accept_at, finish_at, incoming=True))
        self.transitions.created["incoming", side_of(entry)] += 1
        return entry

    def _step(self, request: LivingRequest, now: float) -> list[dict[str, Any]]:
        entry = request.entry
        if request.finished_at is not None:
            return []
        status = entry["status"]
        if request.fate.startswith("stuck") and now - request.created > self.stuck_seconds:
            return self._set_status(request, FAILED, now)
        if status == WAITING and now >= request.accept_at:
            if request.fate == "declined-late":
                return self._set_status(request, FAILED, now)
            if request.fate != "stuck-waiting":
                return self._set_status(request, DOWNLOADING, now)
        if status == DOWNLOADING:
            if now >= request.finish_at and request.fate == "delivered":
                return self._set_status(request, PROCESSED, now)
            if now >= request.finish_at and request.fate == "failed":
                return self._set_status(request, FAILED, now)
            span = max(request.finish_at - request.accept_at, 1.0)
            progress = min(99, int(100 * (now - request.accept_at) / span))
            if request.fate == "stuck-downloading":
                progress = min(progress, 37)
            if progress != request.progress:
                request.progress = progress
                return [progress_event(entry, progress, incoming=request.incoming)]
        return []

    def _set_status(self, request: LivingRequest, status: int, now: float) -> list[dict[str, Any]]:
        request.entry["status"] = status
        if status in FINISHED_NAMES:
            request.finished_at = now
            where = (request.direction, side_of(request.entry))
            self.transitions.finished[request.direction, FINISHED_NAMES[status], where[1]] += 1
            if status == PROCESSED:
                self.transitions.processed_bytes[where] += int(request.entry["size"])
        return [status_event(request.entry, incoming=request.incoming)]


def fast_living_room(
    seconds_between_requests: float = 0.1,
    *,
    seed: int = 1,
    fates: tuple[tuple[str, float], ...] = FATES,
    keep_finished_seconds: float = 2.0,
    tick_seconds: float = 0.02,
) -> LivingRoom:
    """A living Room fast enough for hundreds of transfers a minute: a new request each way every
    `seconds_between_requests` on average (0.1: about 600 outgoing and 600 incoming a minute), accepted
    within 0.5-5 times that and finished within 0.5-5 times that again, stuck ones given up after 30 times
    that, finished ones listed for `keep_finished_seconds`; moved on every `tick_seconds`. It never leaves its
    server (ON_SERVER_LIFE), so it never stops creating requests. Not started: serve it as it is (empty lists,
    counting from its first move) or call `start(now)` for a history, which is not counted."""
    pace = seconds_between_requests
    return LivingRoom(
        rng=random.Random(seed),
        mean_seconds_between_requests=pace,
        fates=fates,
        incoming_rng=random.Random(seed + 100),
        mean_seconds_between_incoming=pace,
        state_rng=random.Random(seed + 200),
        app_state_life=dict(ON_SERVER_LIFE),
        accept_seconds=(pace / 2, pace * 5),
        incoming_accept_seconds=(pace / 2, pace * 5),
        finish_seconds=(pace / 2, pace * 5),
        keep_finished_seconds=keep_finished_seconds,
        stuck_seconds=pace * 30,
        warm_up_seconds=pace * 12,
        tick_seconds=tick_seconds,
    )


def status_event(entry: dict[str, Any], incoming: bool = False) -> dict[str, Any]:
    """`fileRequestStatusChanged` (reference §8): `directionType` 0 incoming, 1 outgoing; `fileSize`, and
    `fileName`, `fileId`, `peerId` and `peerDisplayName` (the list's `peerDn`), `confId` when the entry has
    them (a conference request has no peer; an incoming one from a conference has both)."""
    event: dict[str, Any] = {
        "method": "event",
        "event": "fileRequestStatusChanged",
        "fileRequestId": entry.get("fileRequestId"),
        "status": entry.get("status"),
        "directionType": 0 if incoming else 1,
        "fileSize": entry.get("size"),
        "timestamp": entry.get("timestamp"),
    }
    for name, key in (("fileName", "fileName"), ("fileId", "fileId"), ("peerId", "peerId")):
        if name in entry:
            event[key] = entry[name]
    if "peerDn" in entry:
        event["peerDisplayName"] = entry["peerDn"]
    if "confId" in entry:
        event["confId"] = entry["confId"]
    return event


def sent_event(entry: dict[str, Any]) -> dict[str, Any]:
    """`outgoingFileRequestSent`, or `outgoingFileRequestSentToConference` for a request with a `confId`
    (reference §8): no `status`, no `directionType`; `fileSize`; timestamp in seconds as the list's."""
    event: dict[str, Any] = {"method": "event", "fileRequestId": entry.get("fileRequestId")}
    if "confId" in entry:
        event["event"] = "outgoingFileRequestSentToConference"
    else:
        event.update(event="outgoingFileRequestSent", peerId=entry.get("peerId"), peerDn=entry.get("peerDn"))
    event.update(fileName=entry.get("fileName"), timestamp=entry.get("timestamp"), fileSize=entry.get("size"))
    if "confId" in entry:
        event["confId"] = entry["confId"]
    event["fileId"] = entry.get("fileId")
    return event


def progress_event(entry: dict[str, Any], percent: int, incoming: bool = False) -> dict[str, Any]:
    """`outgoingFileRequestUploadingProgress` or `incomingFileRequestDownloadingProgress` (reference §5): note
    `fileSize`, not `size`."""
    return {
        "method": "event",
        "event": "incomingFileRequestDownloadingProgress"
        if incoming
        else "outgoingFileRequestUploadingProgress",
        "fileRequestId": entry.get("fileRequestId"),
        "processedPercents": percent,
        "fileSize": entry.get("size"),
    }


def received_event(entry: dict[str, Any]) -> dict[str, Any]:
    """`receivedFileRequest`: someone sent the Room a file (reference §8): `peerId`, `peerDn`, `fileSize`,
    the timestamp in milliseconds as the incoming list's, and `confId` for a file sent in a conference."""
    event: dict[str, Any] = {
        "method": "event",
        "event": "receivedFileRequest",
        "fileRequestId": entry.get("fileRequestId"),
        "peerId": entry.get("peerId"),
        "peerDn": entry.get("peerDn"),
        "fileName": entry.get("fileName"),
        "fileSize": entry.get("size"),
        "timestamp": entry.get("timestamp"),
    }
    if "confId" in entry:
        event["confId"] = entry["confId"]
    return event
