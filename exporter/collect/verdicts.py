"""What the status page calls a Room, by the alerting rules' own numbers: down, in need of attention for
one or more reasons, or ok.

The thresholds are prometheus/alerts.yml's, kept here once for the code: tests/test_verdicts.py reads that
file and fails when a number there and here differ. The page judges a Room's latest result as it stands;
an alert also waits out its `for:` (1m to 15m), so a Room may show a problem on the page a little before
its alert fires, and a Room whose problem lasted less than the `for:` never alerts.

Pure and free of I/O: plain values in, a verdict out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WAITING_TOO_LONG_SECONDS = 900.0
"""TrueconfFileRequestWaitingTooLong: the oldest outgoing request waiting longer than this (`> 900`)."""
DOWNLOADING_TOO_LONG_SECONDS = 600.0
"""TrueconfFileTransferTooLong: the oldest outgoing request downloading longer than this (`> 600`)."""
NEW_FAILURES_WINDOW_SECONDS = 900.0
"""TrueconfFileRequestsFailed: a request failed within this window, outgoing or incoming (the `[15m]` of
`increase(trueconf_*_file_requests_finished_total{status="failed"}[15m]) > 0`)."""
MALFORMED_AT_LEAST = 1
"""TrueconfMalformedEntries: this many malformed entries or more (`>= 1`)."""

AVAILABLE = "available"
"""The one `trueconf_file_transfer_availability` state that is not a problem (TrueconfFileTransferUnavailable
fires on any other, `unknown` included)."""

WAITING_TOO_LONG = "transfer waiting too long"
DOWNLOADING_TOO_LONG = "transfer taking too long"
NEW_FAILURES = "new failures"
UNAVAILABLE = "file transfer unavailable"
MALFORMED = "malformed entries"
OK = "ok"
PROBLEMS: tuple[str, ...] = (WAITING_TOO_LONG, DOWNLOADING_TOO_LONG, NEW_FAILURES, UNAVAILABLE, MALFORMED)
"""Every problem a Room may have, in the order a verdict names them."""


class Group(enum.IntEnum):
    """The page's order: the Rooms that are down, then those with other problems, then the rest."""

    DOWN = 0
    ATTENTION = 1
    OK = 2


@dataclass(frozen=True)
class Verdict:
    group: Group
    words: str
    """`down (connect)`; the problems in the order of PROBLEMS, joined by ', '; or `ok`."""


def judge(
    *,
    up: bool,
    reason: str = "",
    waiting_age: float | None = None,
    downloading_age: float | None = None,
    failures_rose_at: float | None = None,
    availability: str | None = None,
    malformed: int | None = None,
    now: float,
) -> Verdict:
    """A Room's verdict from its latest result. An age, the availability or the malformed count is None when
    the result does not say (no such request, the method not asked or failed); `failures_rose_at` is when
    its failed counter was last seen to rise (`failures_rose`), None when never."""
    if not up:
        return Verdict(Group.DOWN, f"down ({reason})" if reason else "down")
    problems = [
        word
        for word, present in (
            (WAITING_TOO_LONG, waiting_age is not None and waiting_age > WAITING_TOO_LONG_SECONDS),
            (
                DOWNLOADING_TOO_LONG,
                downloading_age is not None and downloading_age > DOWNLOADING_TOO_LONG_SECONDS,
            ),
            (
                NEW_FAILURES,
                failures_rose_at is not None and now - failures_rose_at <= NEW_FAILURES_WINDOW_SECONDS,
            ),
            (UNAVAILABLE, availability is not None and availability != AVAILABLE),
            (MALFORMED, malformed is not None and malformed >= MALFORMED_AT_LEAST),
        )
        if present
    ]
    if not problems:
        return Verdict(Group.OK, OK)
    return Verdict(Group.ATTENTION, ", ".join(problems))


def failures_rose(previous: int | None, previous_at: float | None, failed: int, at: float) -> bool:
    """Whether a reading of a Room's failed counter (`failed`, read at `at`: its
    `trueconf_*_file_requests_finished_total{status="failed"}`, both directions, what the alert reads) is
    new failures: above the reading before it, when that one was read within the window.

    A rise is a failure counted, as `increase()` sees it. A reading below the one before is the counter
    starting again at 0 (the exporter forgot the Room after its session idle timeout), no failure by
    itself, as `increase()` reads a reset; the counter starts at 0 at the Room's first scrape, so a failure
    after a reset is a rise from there. A reading seen first, or after a gap longer than the window, is no
    rise: the alert would not know either."""
    if previous is None or previous_at is None:
        return False
    return failed > previous and 0 <= at - previous_at <= NEW_FAILURES_WINDOW_SECONDS
