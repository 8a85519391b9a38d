"""The `demo` Room: outgoing file requests that are created, accepted, progress, finish, fail or get stuck
over minutes, so that a dashboard has something to show and alerts have something to fire on.

Time is passed in, never read here, so the life cycle is testable without waiting.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

FAILED, WAITING, DOWNLOADING, PROCESSED = 0, 1, 2, 3

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


@dataclass
class LivingRequest:
    """One request and the plan for its life."""

    entry: dict[str, Any]
    fate: str
    accept_at: float
    finish_at: float
    finished_at: float | None = None
    progress: int = 0


@dataclass
class LivingRoom:
    """The requests of a Room that lives; `advance(now)` moves it on and returns the events it sent."""

    rng: random.Random = field(default_factory=lambda: random.Random(1))
    mean_seconds_between_requests: float = 9.0
    fates: tuple[tuple[str, float], ...] = FATES
    """How new requests end, with weights: the demo's failing Room fails most of them."""
    requests: list[LivingRequest] = field(default_factory=list)
    next_creation: float | None = None

    def start(self, now: float) -> None:
        """Fill the Room with a history, so the first scrape already shows every status."""
        for age in (1300, 900, 420, 240, 120, 60, 30, 10):
            self._create(now - age)
        self.advance(now)

    def outgoing_requests(self) -> list[dict[str, Any]]:
        return [dict(request.entry) for request in self.requests]

    def advance(self, now: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.next_creation is None:
            self.next_creation = now
        while self.next_creation <= now:
            self._create(self.next_creation)
            self.next_creation += self.rng.expovariate(1.0 / self.mean_seconds_between_requests)
        for request in self.requests:
            events.extend(self._step(request, now))
        self.requests = [
            r for r in self.requests if r.finished_at is None or now - r.finished_at < KEEP_FINISHED_SECONDS
        ]
        return events

    def _create(self, created: float) -> None:
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
        accept_at = created + self.rng.uniform(3, 60)
        finish_at = accept_at + self.rng.uniform(5, 120)
        self.requests.append(LivingRequest(entry, fate, accept_at, finish_at))

    def _step(self, request: LivingRequest, now: float) -> list[dict[str, Any]]:
        entry = request.entry
        if request.finished_at is not None:
            return []
        created = entry["timestamp"]
        status = entry["status"]
        if request.fate.startswith("stuck") and now - created > STUCK_SECONDS:
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
                return [progress_event(entry, progress)]
        return []

    def _set_status(self, request: LivingRequest, status: int, now: float) -> list[dict[str, Any]]:
        request.entry["status"] = status
        if status in (FAILED, PROCESSED):
            request.finished_at = now
        return [status_event(request.entry)]


def status_event(entry: dict[str, Any]) -> dict[str, Any]:
    """`fileRequestStatusChanged`, as the Room sends it for an outgoing request (reference §5)."""
    return {
        "method": "event",
        "event": "fileRequestStatusChanged",
        "fileRequestId": entry.get("fileRequestId"),
        "status": entry.get("status"),
        "directionType": 1,
        "fileSize": entry.get("size"),
        "timestamp": entry.get("timestamp"),
    }


def progress_event(entry: dict[str, Any], percent: int) -> dict[str, Any]:
    """`outgoingFileRequestUploadingProgress` (reference §5): note `fileSize`, not `size`."""
    return {
        "method": "event",
        "event": "outgoingFileRequestUploadingProgress",
        "fileRequestId": entry.get("fileRequestId"),
        "processedPercents": percent,
        "fileSize": entry.get("size"),
    }
