"""One collection of one Room: the fetch, the parse and the timing, with every failure caught and classified.

The result is plain data, shared by the metrics collector and by `check`'s verdict, so neither repeats the
other's error handling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from exporter.room import CollectionError, Deadline, Reason, RoomRequest, RoomTarget
from exporter.room.client import fetch_room
from exporter.room.file_requests import ReplyShapeError, Snapshot
from exporter.room.ledger import RoomTransfers
from exporter.room.picture import RoomPicture, identity_of, parse_room, version_of
from exporter.room.sessions import SessionPool
from exporter.room.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collection:
    """What one scrape learnt about one Room: a snapshot when it answered, otherwise the failure.

    `snapshot` is the outgoing requests (what decides `trueconf_up`); `picture` is everything the scrape
    learnt, that snapshot included, when it came from `parse_room` (None when down, and in collections made
    by hand from a snapshot alone).
    """

    target: RoomTarget
    duration_seconds: float
    collected_at: float
    snapshot: Snapshot | None = None
    error: CollectionError | None = None
    picture: RoomPicture | None = None
    transfers: RoomTransfers | None = None
    """The Room's transfer counters as its ledger holds them after this scrape, up or down (None when no
    ledger was kept: a Room read without a session pool)."""

    @property
    def up(self) -> bool:
        return self.snapshot is not None


def collect_room(
    request: RoomRequest,
    timeout_seconds: float,
    *,
    pool: SessionPool | None = None,
    trace: Trace | None = None,
) -> Collection:
    """Talk to the Room once; never raises, whatever the Room, the network or a bug in the exporter does.

    With a `pool` the Room's session is reused (request.keep_session) and its transfer counters kept.
    `trace`, when given, records every phase and the outcome (the debug probe shows it).
    """
    deadline = Deadline(timeout_seconds)
    trace = trace or Trace(deadline.started, detailed=False)
    collection = _collect(request, deadline, trace, pool)
    if pool is None:
        return collection
    return replace(collection, transfers=pool.transfers(pool.key(str(request.target), request.pin)))


def _collect(request: RoomRequest, deadline: Deadline, trace: Trace, pool: SessionPool | None) -> Collection:
    target = request.target
    try:
        answered = fetch_room(request, deadline, trace=trace, pool=pool)
        known = answered.system_info
        picture = parse_room(
            answered.replies,
            answered.asked,
            time.time(),
            known_version=version_of(known),
            known_identity=identity_of(known),
        )
    except CollectionError as error:
        trace.step("failed", f"reason {error.reason}: {error.message}")
        return _failed(target, deadline, error)
    except ReplyShapeError as error:
        trace.step("failed", f"reason {Reason.PROTOCOL}: {error}")
        return _failed(target, deadline, CollectionError(Reason.PROTOCOL, str(error)))
    except Exception:  # noqa: BLE001 - the last resort: a bug is trueconf_up 0, not the exporter's HTTP 500
        log_internal_error("collection", target)
        trace.step("failed", f"reason {Reason.INTERNAL}: {INTERNAL_ERROR.message}")
        return _failed(target, deadline, INTERNAL_ERROR, logged=True)
    summary = picture_summary(picture)
    trace.step("parse", summary)
    collection = Collection(
        target=target,
        duration_seconds=time.monotonic() - deadline.started,
        collected_at=picture.collected_at,
        snapshot=picture.outgoing,
        picture=picture,
    )
    log.debug(
        "collection succeeded",
        extra={"target": str(target), "detail": f"{collection.duration_seconds * 1000:.1f} ms: {summary}"},
    )
    return collection


def picture_summary(picture: RoomPicture) -> str:
    """One line for the trace and the debug log: the requests, then whatever optional parts are known."""
    outgoing = picture.outgoing
    parts = [
        f"{outgoing.total} outgoing requests, {outgoing.pending} pending, {outgoing.malformed} malformed"
    ]
    if picture.incoming is not None:
        parts.append(f"{picture.incoming.total} incoming requests, {picture.incoming.pending} pending")
    if picture.availability is not None:
        parts.append(f"file transfer {picture.availability}")
    if picture.app_state is not None:
        parts.append(f"app state {picture.app_state}")
    if picture.version is not None:
        parts.append(f"version {picture.version}")
    failed = [method for method, succeeded in picture.method_success.items() if not succeeded]
    if failed:
        parts.append("no answer read from " + ", ".join(failed))
    return "; ".join(parts)


INTERNAL_ERROR = CollectionError(Reason.INTERNAL, "an unexpected error inside the exporter; see its log")


def log_internal_error(stage: str, target: RoomTarget) -> None:
    """One error-level line with the traceback of the exception being handled, through the project's log."""
    log.error(
        f"internal error during {stage}; please report it with this traceback",
        exc_info=True,
        extra={"target": str(target), "reason": str(Reason.INTERNAL)},
    )


def _failed(
    target: RoomTarget, deadline: Deadline, error: CollectionError, logged: bool = False
) -> Collection:
    if not logged:
        log.warning(
            "collection failed",
            extra={"target": str(target), "reason": str(error.reason), "detail": error.message},
        )
    return Collection(
        target=target,
        duration_seconds=time.monotonic() - deadline.started,
        collected_at=time.time(),
        # A fresh error, without the raised one's traceback: its frames hold whatever the failing step had
        # (a refused 4 MiB message and its text), kept alive for as long as the result is remembered.
        error=CollectionError(error.reason, error.message),
    )
