"""The transfers a Room made while the exporter watched it, counted once each: the counters' bookkeeping.

(Skeleton: the types are fixed; the implementation is being written.)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.room.file_requests import DESTINATIONS, Snapshot

FINISHED_STATUSES: tuple[str, ...] = ("processed", "failed")
"""Every value of the counters' `status` label."""


class Direction(enum.StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


@dataclass(frozen=True)
class TransferTotals:
    """The counters of one direction of one Room, every label value present (at 0 until counted).

    The side is `peer` or `conference` (file_requests.DESTINATIONS): the `destination` label of outgoing
    requests, the `source` label of incoming ones."""

    created: dict[str, int]
    """side -> requests first seen after the exporter began watching the Room."""
    finished: dict[tuple[str, str], int]
    """(status in FINISHED_STATUSES, side) -> requests seen reaching that status."""
    processed_bytes: dict[str, int]
    """side -> the sizes of the requests counted processed."""

    @staticmethod
    def zero() -> TransferTotals:
        return TransferTotals(
            created=dict.fromkeys(DESTINATIONS, 0),
            finished={(status, side): 0 for status in FINISHED_STATUSES for side in DESTINATIONS},
            processed_bytes=dict.fromkeys(DESTINATIONS, 0),
        )


@dataclass(frozen=True)
class RoomTransfers:
    """What the ledger of one Room has counted, both directions."""

    outgoing: TransferTotals
    incoming: TransferTotals
    tracked: int
    """Request ids the ledger remembers now (both directions)."""


def listing(entries: Iterable[Any]) -> Snapshot:
    """A request list read entry by entry: its aggregate, carrying what the ledger needs of each entry."""
    raise NotImplementedError


class Ledger:
    """One Room's bookkeeping (a Room is a target read with one set of credentials). Thread-safe."""

    def observe_list(self, direction: Direction, snapshot: Snapshot, sequence: int) -> None:
        raise NotImplementedError

    def notify(self, message: dict[str, Any], sequence: int) -> None:
        raise NotImplementedError

    def totals(self) -> RoomTransfers:
        raise NotImplementedError
