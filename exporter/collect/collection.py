"""One collection of one Room: the fetch, the parse and the timing, with every failure caught and classified.

The result is plain data, shared by the metrics collector and by `check`'s verdict, so neither repeats the
other's error handling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from exporter.room import CollectionError, Deadline, Reason, RoomTarget, fetch_outgoing_requests
from exporter.room.file_requests import ReplyShapeError, Snapshot, parse_outgoing_reply
from exporter.room.frames import DEFAULT_MAX_MESSAGE_BYTES
from exporter.room.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collection:
    """What one scrape learnt about one Room: a snapshot when it answered, otherwise the failure."""

    target: RoomTarget
    duration_seconds: float
    collected_at: float
    snapshot: Snapshot | None = None
    error: CollectionError | None = None

    @property
    def up(self) -> bool:
        return self.snapshot is not None


def collect_room(
    target: RoomTarget,
    pin: str | None,
    timeout_seconds: float,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    trace: Trace | None = None,
) -> Collection:
    """Talk to the Room once; never raises, whatever the Room, the network or a bug in the exporter does.

    `trace`, when given, records every phase and the outcome (the debug probe shows it).
    """
    deadline = Deadline(timeout_seconds)
    trace = trace or Trace(deadline.started)
    try:
        reply = fetch_outgoing_requests(target, pin, deadline, max_message_bytes, trace)
        snapshot = parse_outgoing_reply(reply)
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
    summary = (
        f"{snapshot.total} outgoing requests, {snapshot.pending} pending, {snapshot.malformed} malformed"
    )
    trace.step("parse", summary)
    collection = Collection(
        target=target,
        duration_seconds=time.monotonic() - deadline.started,
        collected_at=time.time(),
        snapshot=snapshot,
    )
    log.debug(
        "collection succeeded",
        extra={"target": str(target), "detail": f"{collection.duration_seconds * 1000:.1f} ms: {summary}"},
    )
    return collection


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
        error=error,
    )
