"""The transfer ledger (exporter/room/ledger.py), pure: what a Room's lists and notifications count once each.

Every test drives a Ledger with lists read through `listing` and notifications as the reader thread hands them
over, each with its place in the session's stream (`sequence`); time is an injected clock.
"""

from __future__ import annotations

import threading
import tracemalloc
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.room import protocol
from exporter.room.file_requests import (
    DESTINATIONS,
    REPLY_LIST_KEY,
    STATUSES,
    Snapshot,
    aggregate,
)
from exporter.room.ledger import (
    FINISHED_STATUSES,
    FORGET_SLACK_SECONDS,
    MAX_TRACKED_IDS,
    PENDING_NOTIFICATIONS,
    Direction,
    Ledger,
    RoomTransfers,
    TransferTotals,
    listing,
)
from tests.entry_rules import classify
from tests.test_parser_properties import JUNK, PROPERTY_SETTINGS, SCALARS, entries

OUT, IN = Direction.OUTGOING, Direction.INCOMING
FAILED, WAITING, DOWNLOADING, PROCESSED = 0, 1, 2, 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(request_id: str, status: Any, size: Any = 100, conf: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"fileRequestId": request_id, "fileName": "a.jpg", "status": status, "size": size}
    entry["timestamp"] = 1_659_251_271
    if conf is None:
        entry.update(peerId="820_1@some.server", peerDn="820_1")
    else:
        entry["confId"] = conf
    return entry


def listed(*requests: dict[str, Any]) -> Snapshot:
    return listing(iter(requests))


def changed(
    request_id: Any, status: Any, direction_type: Any = 1, size: Any = 100, **more: Any
) -> dict[str, Any]:
    return {
        "method": "event",
        "event": "fileRequestStatusChanged",
        "fileRequestId": request_id,
        "status": status,
        "directionType": direction_type,
        "fileSize": size,
        **more,
    }


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"method": "event", "event": name, **fields}


def counts(ledger: Ledger, direction: Direction = OUT, side: str = "peer") -> tuple[int, int, int, int]:
    """(created, processed, failed, processed bytes) of one direction and side."""
    totals = ledger.totals()
    of = totals.outgoing if direction is OUT else totals.incoming
    return (
        of.created[side],
        of.finished[("processed", side)],
        of.finished[("failed", side)],
        of.processed_bytes[side],
    )


def test_totals_carry_every_label_value_at_zero_from_the_start() -> None:
    totals = Ledger().totals()
    assert totals == RoomTransfers(TransferTotals.zero(), TransferTotals.zero(), tracked=0, untracked=0)
    for direction in (totals.outgoing, totals.incoming):
        assert set(direction.created) == set(direction.processed_bytes) == set(DESTINATIONS)
        assert set(direction.finished) == {(s, d) for s in FINISHED_STATUSES for d in DESTINATIONS}


def test_the_first_list_is_history_and_counts_nothing() -> None:
    ledger = Ledger()
    history = listed(request("a", WAITING), request("b", PROCESSED), request("c", FAILED, conf="c@x#vcs"))
    ledger.observe_list(OUT, history, 1)
    ledger.observe_list(OUT, history, 5)
    assert ledger.totals() == RoomTransfers(TransferTotals.zero(), TransferTotals.zero(), tracked=3)
    ledger.notify(changed("b", PROCESSED), 6)  # already processed in history
    ledger.notify(changed("c", FAILED, confId="c@x#vcs"), 7)
    assert counts(ledger) == counts(ledger, side="conference") == (0, 0, 0, 0)


def test_a_request_created_then_processed_counts_once_each_however_often_reported() -> None:
    ledger = Ledger()
    ledger.observe_list(OUT, listed(), 1)
    sequence = 2
    for _ in range(5):
        ledger.notify(event("outgoingFileRequestSent", fileRequestId="r", fileSize=4000), sequence)
        ledger.notify(
            event("outgoingFileRequestUploadingProgress", fileRequestId="r", fileSize=4000), sequence + 1
        )
        sequence += 2
    ledger.observe_list(OUT, listed(request("r", DOWNLOADING, 4000)), sequence)
    assert counts(ledger) == (1, 0, 0, 0)
    for _ in range(5):
        ledger.notify(changed("r", PROCESSED, size=4000), sequence + 1)
        ledger.observe_list(OUT, listed(request("r", PROCESSED, 4000)), sequence + 2)
        sequence += 2
    assert counts(ledger) == (1, 1, 0, 4000)
    assert counts(ledger, IN) == (0, 0, 0, 0)


def test_a_failure_that_comes_and_goes_between_two_lists_counts_when_notified() -> None:
    ledger = Ledger()
    ledger.observe_list(OUT, listed(request("old", PROCESSED)), 1)
    ledger.notify(event("outgoingFileRequestSentToConference", fileRequestId="f", confId="c@x#vcs"), 2)
    ledger.notify(changed("f", FAILED, confId="c@x#vcs"), 3)
    ledger.observe_list(OUT, listed(request("old", PROCESSED)), 4)  # "f" already cleared from the list
    assert counts(ledger, side="conference") == (1, 0, 1, 0)
    assert counts(ledger) == (0, 0, 0, 0)


def test_without_notifications_comparing_lists_counts() -> None:
    ledger = Ledger()
    ledger.observe_list(IN, listed(request("a", WAITING, 10)), 1)
    ledger.observe_list(IN, listed(request("a", PROCESSED, 10), request("b", WAITING, 20)), 2)
    ledger.observe_list(IN, listed(request("a", PROCESSED, 10), request("b", FAILED, 20)), 3)
    ledger.observe_list(IN, listed(request("b", FAILED, 20), request("c", PROCESSED, 30, conf="k@x#vcs")), 4)
    assert counts(ledger, IN) == (1, 1, 1, 10)
    assert counts(ledger, IN, "conference") == (1, 1, 0, 30)
    assert counts(ledger, OUT) == (0, 0, 0, 0)


def test_a_request_that_fails_and_is_then_processed_counts_in_both_statuses() -> None:
    ledger = Ledger()
    ledger.observe_list(OUT, listed(request("a", WAITING)), 1)
    for sequence, status in enumerate([FAILED, FAILED, PROCESSED, FAILED, PROCESSED], 2):
        ledger.notify(changed("a", status), sequence)
    assert counts(ledger) == (0, 1, 1, 100)


def test_notifications_before_the_first_list_are_history_if_they_precede_it_and_count_after() -> None:
    ledger = Ledger()
    ledger.notify(event("outgoingFileRequestSent", fileRequestId="before", fileSize=5), 1)
    ledger.notify(changed("before", PROCESSED, size=5), 2)
    ledger.notify(changed("gone", FAILED), 3)  # failed and cleared before the list: history
    # The reply at 4 was read before 5 and 6, but the scrape applies it after the reader applied them.
    ledger.notify(event("outgoingFileRequestSent", fileRequestId="after", fileSize=7), 5)
    ledger.notify(changed("after", PROCESSED, size=7), 6)
    assert counts(ledger) == (0, 0, 0, 0)
    ledger.observe_list(OUT, listed(request("before", PROCESSED, 5)), 4)
    assert counts(ledger) == (1, 1, 0, 7)
    assert ledger.totals().tracked == 2
    ledger.observe_list(OUT, listed(request("before", PROCESSED, 5), request("after", PROCESSED, 7)), 7)
    assert counts(ledger) == (1, 1, 0, 7)


def test_notifications_held_before_the_first_list_are_bounded() -> None:
    ledger = Ledger()
    extra = 10
    for sequence in range(PENDING_NOTIFICATIONS + extra):
        ledger.notify(event("receivedFileRequest", fileRequestId=f"r{sequence}"), 100 + sequence)
    assert ledger.dropped == extra
    ledger.observe_list(IN, listed(), 0)
    assert counts(ledger, IN)[0] == PENDING_NOTIFICATIONS  # the latest ones, the oldest dropped
    ledger.observe_list(IN, listed(request("r0", WAITING)), 1000)  # the next list still catches r0
    assert counts(ledger, IN)[0] == PENDING_NOTIFICATIONS + 1


def test_a_new_session_keeps_the_counts_and_counts_nothing_twice() -> None:
    ledger = Ledger()
    ledger.observe_list(OUT, listed(request("h", PROCESSED)), 1)
    ledger.notify(event("outgoingFileRequestSent", fileRequestId="a"), 2)
    ledger.notify(changed("a", PROCESSED), 3)
    ledger.notify(event("receivedFileRequest", id="in-1"), 4)  # incoming not listed yet: held
    before = ledger.totals()
    assert counts(ledger) == (1, 1, 0, 100)

    ledger.new_session()  # a replaced session, or a restarted Room: sequences start again
    ledger.observe_list(IN, listed(), 1)  # the old session's held notification (its 4) is not applied
    ledger.notify(changed("a", PROCESSED), 2)
    ledger.notify(changed("h", PROCESSED), 3)
    ledger.observe_list(OUT, listed(request("h", PROCESSED), request("a", PROCESSED)), 4)
    assert ledger.totals() == before
    ledger.notify(event("receivedFileRequest", id="in-2"), 5)
    assert counts(ledger, IN) == (1, 0, 0, 0)


def test_the_id_bound_leaves_new_ids_untracked_and_never_recounts_them() -> None:
    ledger = Ledger(max_ids=3)
    ledger.observe_list(OUT, listed(request("a", WAITING), request("b", WAITING)), 1)
    many = listed(*(request(name, WAITING) for name in "abcdef"))
    for sequence in range(2, 6):
        ledger.observe_list(OUT, many, sequence)
    totals = ledger.totals()
    assert (totals.outgoing.created["peer"], totals.tracked, totals.untracked) == (1, 3, 3)
    ledger.notify(changed("f", PROCESSED), 6)  # new and no room: refused
    ledger.notify(changed("c", PROCESSED), 7)  # tracked: counted
    assert counts(ledger) == (1, 1, 0, 100)
    assert ledger.dropped == 1
    ledger.observe_list(IN, listed(request("x", WAITING)), 8)  # the bound is per direction
    assert ledger.totals().tracked == 4


def test_listing_records_at_most_the_bound_and_counts_the_rest_as_untracked() -> None:
    over = 5
    snapshot = listing(request(f"r{n}", WAITING) for n in range(MAX_TRACKED_IDS + over))
    assert snapshot.listed is not None
    assert (len(snapshot.listed), snapshot.listed.overflow) == (MAX_TRACKED_IDS, over)
    assert snapshot.entries == MAX_TRACKED_IDS + over
    ledger = Ledger(max_ids=MAX_TRACKED_IDS * 2)
    ledger.observe_list(OUT, snapshot, 1)
    assert (ledger.totals().tracked, ledger.totals().untracked) == (MAX_TRACKED_IDS, over)


def test_an_id_not_seen_for_the_forget_time_is_forgotten() -> None:
    clock = Clock()
    ledger = Ledger(forget_after_seconds=600, clock=clock)
    ledger.observe_list(OUT, listed(request("kept", WAITING), request("left", WAITING)), 1)
    for _ in range(3):
        clock.now += 300
        ledger.observe_list(OUT, listed(request("kept", WAITING)), 2)
        assert ledger.totals().tracked == (2 if clock.now - 1000 <= 600 else 1)
    assert ledger.totals().tracked == 1
    clock.now += 400
    ledger.notify(changed("kept", DOWNLOADING), 3)  # a notification is a sighting too
    clock.now += 400
    assert ledger.totals().tracked == 1
    clock.now += 201
    assert ledger.totals().tracked == 0
    ledger.observe_list(OUT, listed(request("left", PROCESSED)), 4)  # forgotten: counts as new
    assert counts(ledger) == (1, 1, 0, 100)


def test_a_full_ledger_makes_room_as_ids_are_forgotten() -> None:
    clock = Clock()
    ledger = Ledger(max_ids=2, forget_after_seconds=60, clock=clock)
    ledger.observe_list(OUT, listed(request("a", PROCESSED), request("b", PROCESSED)), 1)
    ledger.notify(changed("c", FAILED), 2)
    clock.now += 61
    ledger.notify(changed("c", FAILED), 3)
    assert counts(ledger) == (1, 0, 1, 0)
    assert ledger.dropped == 1


def test_older_notification_shapes_count() -> None:
    ledger = Ledger()
    ledger.prime(IN, 0)
    ledger.prime(OUT, 0)
    ledger.notify(event("receivedFileRequest", id="i1", confId="c@x#vcs"), 1)
    ledger.notify(
        event("fileStatus", id="i1", directionType=0, status=PROCESSED, fileSize=9, confId="c@x#vcs"), 2
    )
    ledger.notify(event("fileDownloadingProgress", id="i2", totalSize=50, peerId="p@x"), 3)
    ledger.notify(event("fileStatus", fileRequestId="i2", directionType=0, status=PROCESSED), 4)
    ledger.notify(event("fileUploadingProgress", id="o1", totalSize=70, peerId="p@x"), 5)
    ledger.notify(
        event("incomingFileRequestDownloadingProgress", fileRequestId="i3", fileSize=1, peerId="p"), 6
    )
    # a progress report that says neither side creates nothing: a list may show it on either side
    ledger.notify(event("outgoingFileRequestUploadingProgress", fileRequestId="o2", fileSize=1), 7)
    assert counts(ledger, IN, "conference") == (1, 1, 0, 9)
    assert counts(ledger, IN) == (2, 1, 0, 50)  # the size of the progress report
    assert counts(ledger, OUT) == (1, 0, 0, 0)


HOSTILE_NOTIFICATIONS: list[Any] = [
    None,
    [],
    "event",
    {},
    {"method": "event"},
    {"method": "event", "event": None},
    {"method": "event", "event": ["fileStatus"]},
    {"method": "event", "event": "appStateChanged", "fileRequestId": "x", "directionType": 1, "status": 0},
    {"method": "reply", "event": "fileRequestStatusChanged", "fileRequestId": "x", "directionType": 1},
    changed("", FAILED),
    changed(None, FAILED),
    changed(7, FAILED),
    changed(["x"], FAILED),
    changed("x", FAILED, direction_type=None),
    changed("x", FAILED, direction_type=True),
    changed("x", FAILED, direction_type=1.0),
    changed("x", FAILED, direction_type=2**70),
    changed("x", FAILED, direction_type="1"),
    event("fileRequestStatusChanged", id="x", directionType=1, status=0),  # `id` only in older events
    event("outgoingFileRequestSent", fileRequestId={"a": 1}),
    event("receivedFileRequest"),
]
"""Notifications that name no usable request or direction: each changes nothing."""


@pytest.mark.parametrize("message", HOSTILE_NOTIFICATIONS)
def test_a_notification_without_a_usable_request_changes_nothing(message: Any) -> None:
    ledger = Ledger()
    ledger.prime(OUT, 0)
    ledger.prime(IN, 0)
    ledger.notify(message, 1)
    assert ledger.totals() == RoomTransfers(TransferTotals.zero(), TransferTotals.zero(), tracked=0)


def test_a_usable_request_with_wrong_fields_counts_created_only() -> None:
    ledger = Ledger()
    ledger.prime(OUT, 0)
    odd_statuses = [True, False, 3.5, "3", 2**70, -(2**70), None, [3], float("nan")]
    for n, status in enumerate(odd_statuses):
        ledger.notify(changed(f"r{n}", status, size=[1]), n + 1)
        ledger.notify(changed(f"r{n}", status, size=2**80), n + 1)
    assert counts(ledger) == (len(odd_statuses), 0, 0, 0)
    ledger.notify(changed("r0", 3.0, size=-5), 99)  # a whole float is a status (parse_status); no size
    assert counts(ledger) == (len(odd_statuses), 1, 0, 0)


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.one_of(
            JUNK,
            st.fixed_dictionaries(
                {
                    "method": st.sampled_from(["event", "reply"]) | SCALARS,
                    "event": st.sampled_from(
                        [
                            "fileRequestStatusChanged",
                            "fileStatus",
                            "outgoingFileRequestSent",
                            "outgoingFileRequestSentToConference",
                            "receivedFileRequest",
                            "fileUploadingProgress",
                            "incomingFileRequestDownloadingProgress",
                        ]
                    )
                    | SCALARS,
                },
                optional={
                    key: st.sampled_from(["a", "b", 0, 1, 3]) | SCALARS | JUNK
                    for key in (
                        "fileRequestId",
                        "id",
                        "status",
                        "directionType",
                        "fileSize",
                        "totalSize",
                        "confId",
                    )
                },
            ),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_no_notification_raises_and_the_counts_stay_consistent(messages: list[Any], primed: bool) -> None:
    ledger = Ledger(max_ids=4)
    if primed:
        ledger.prime(OUT, 0)
        ledger.prime(IN, 0)
    for sequence, message in enumerate(messages, 1):
        ledger.notify(message, sequence)
    ledger.observe_list(OUT, listing([{"fileRequestId": "a", "status": 3}]), 0)
    ledger.observe_list(IN, listing([]), 0)
    totals = ledger.totals()
    assert totals.tracked <= 8
    for direction in (totals.outgoing, totals.incoming):
        assert sum(direction.finished.values()) <= 2 * sum(direction.created.values()) + 2
        assert all(value >= 0 for value in (*direction.created.values(), *direction.processed_bytes.values()))


def reference_listed(entries_: list[Any]) -> list[tuple[int, int | None, bool, int]]:
    """What `listing` must record, by the per-entry rules (entry_rules.classify)."""
    recorded = []
    for entry in entries_:
        request_id = entry.get("fileRequestId") if isinstance(entry, dict) else None
        if not isinstance(request_id, str) or not request_id:
            continue
        parsed = classify(entry)
        assert parsed is not None
        code = STATUSES.index(parsed.status)
        recorded.append(
            (
                hash(request_id),
                None if parsed.status == "unknown" else code,
                parsed.destination == "conference",
                parsed.size_bytes or 0,
            )
        )
    return recorded


@PROPERTY_SETTINGS
@given(st.lists(entries(), max_size=12))
def test_listing_is_aggregate_plus_the_entries_the_ledger_needs(entries_: list[Any]) -> None:
    snapshot = listing(iter(entries_))
    assert snapshot == aggregate(entries_)
    assert snapshot.listed is not None
    assert list(snapshot.listed) == reference_listed(entries_)
    assert snapshot.listed.overflow == 0


def test_listing_reads_a_streamed_reply_one_entry_at_a_time() -> None:
    text = '{"result": true, "%s": [{"fileRequestId": "a", "status": 3, "fileSize": 12, "confId": "c"}, 5]}'
    reply = protocol.decode(text % REPLY_LIST_KEY, {REPLY_LIST_KEY: listing})
    snapshot = reply[REPLY_LIST_KEY]
    assert isinstance(snapshot, Snapshot) and snapshot.listed is not None
    assert list(snapshot.listed) == [(hash("a"), PROCESSED, True, 12)]
    assert (snapshot.entries, snapshot.malformed, snapshot.counts[("processed", "conference")]) == (2, 2, 1)


def test_a_snapshot_not_read_through_listing_changes_nothing() -> None:
    ledger = Ledger()
    ledger.observe_list(OUT, aggregate([request("a", WAITING)]), 1)
    ledger.observe_list(OUT, aggregate([request("a", PROCESSED), request("b", FAILED)]), 2)
    ledger.notify(changed("c", FAILED), 3)  # not primed yet: still held
    assert ledger.totals() == RoomTransfers(TransferTotals.zero(), TransferTotals.zero(), tracked=0)


def test_notifications_from_a_reader_thread_and_lists_from_scrapes_count_exactly() -> None:
    ledger = Ledger()
    ledger.observe_list(OUT, listed(), 0)
    requests = 500

    def reader() -> None:
        for n in range(requests):
            ledger.notify(event("outgoingFileRequestSent", fileRequestId=f"r{n}"), 2 * n + 1)
            ledger.notify(changed(f"r{n}", PROCESSED if n % 2 else FAILED), 2 * n + 2)

    thread = threading.Thread(target=reader)
    thread.start()
    sequence = 0
    while thread.is_alive() and sequence < 10_000:
        sequence += 1
        ledger.observe_list(
            OUT, listed(*(request(f"r{n}", WAITING) for n in range(0, requests, 7))), sequence
        )
        ledger.totals()
    thread.join(timeout=30)
    assert not thread.is_alive()
    ledger.observe_list(OUT, listed(*(request(f"r{n}", n % 2 * 3) for n in range(requests))), sequence + 1)
    assert counts(ledger) == (requests, requests // 2, requests // 2, 100 * (requests // 2))


def test_bytes_per_tracked_id(capsys: pytest.CaptureFixture[str]) -> None:
    """The figure the module docstring states (21 bytes an id, about 22 with the arrays' spare room, so about
    90 KiB for a Room at the bound in both directions), measured with tracemalloc."""
    n = MAX_TRACKED_IDS
    ids = [str(uuid.uuid4()) for _ in range(n)]
    snapshot = listing([request(i, k % 4, 3200 + k) for k, i in enumerate(ids)])
    ledger = Ledger()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger.observe_list(OUT, snapshot, 1)
        ledger.observe_list(OUT, snapshot, 2)
        per_id = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    with capsys.disabled():
        print(f"\nledger: {per_id:.0f} bytes per tracked id ({n} ids)")
    assert ledger.totals().tracked == n
    assert 16 < per_id < 32


def test_notifications_alone_give_back_the_memory_of_forgotten_ids() -> None:
    """A Room at the bound whose ids all pass their forget time, then sends only notifications (no scrape
    reads its lists or totals): the ids' memory is given back within FORGET_SLACK_SECONDS."""
    clock = Clock()
    ledger = Ledger(forget_after_seconds=300, clock=clock)
    snapshot = listed(*(request(f"r{n}", WAITING) for n in range(MAX_TRACKED_IDS)))
    ledger.prime(IN, 1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger.observe_list(OUT, snapshot, 2)
        held = tracemalloc.get_traced_memory()[0] - before
        clock.now += 300 + FORGET_SLACK_SECONDS + 1
        ledger.notify(event("receivedFileRequest", fileRequestId="x", peerId="p@x"), 3)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held > MAX_TRACKED_IDS * 16
    assert kept < held // 10  # the one new id, and the arrays of the other direction
    assert ledger.totals().tracked == 1


def test_an_id_past_its_forget_time_counts_again_whether_or_not_its_place_was_given_back() -> None:
    clock = Clock()
    ledger = Ledger(forget_after_seconds=600, clock=clock)
    ledger.prime(OUT, 0)
    ledger.notify(event("outgoingFileRequestSent", fileRequestId="a", fileSize=10), 1)
    ledger.notify(event("outgoingFileRequestSent", fileRequestId="b", fileSize=20), 2)
    clock.now += 601  # within the slack: notifications alone have not given the places back
    ledger.notify(changed("a", PROCESSED, size=None), 3)  # forgotten: new, and its size with it
    assert counts(ledger) == (3, 1, 0, 0)
    clock.now += FORGET_SLACK_SECONDS
    ledger.notify(changed("b", FAILED), 4)  # the places given back by now
    assert counts(ledger) == (4, 1, 1, 0)
    assert ledger.totals().tracked == 2


# The ledger against a model of its rules: a dict of ids per direction, forgotten as soon as they pass their
# forget time, driven by lists, notifications, time and new sessions in any order.

MODEL_IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
MODEL_STATUSES = st.sampled_from([FAILED, WAITING, DOWNLOADING, PROCESSED, None])
MODEL_SIZES = st.sampled_from([None, 0, 7, 100, 2**62])
MODEL_FORGET_AFTER = 30


@dataclass(frozen=True)
class Sighting:
    request_id: str
    status: int | None
    size: int | None
    conference: bool


@dataclass(frozen=True)
class ListOp:
    direction: Direction
    requests: list[Sighting]
    lag: int
    """How many notifications the list's reply came before."""


@dataclass(frozen=True)
class NotifyOp:
    direction: Direction
    request: Sighting


@dataclass(frozen=True)
class Advance:
    seconds: int


@dataclass(frozen=True)
class NewSession:
    pass


@dataclass(frozen=True)
class Check:
    """Read the totals (which also gives back the places of forgotten ids)."""


SIGHTINGS = st.builds(Sighting, MODEL_IDS, MODEL_STATUSES, MODEL_SIZES, st.booleans())
MODEL_OPS = st.lists(
    st.one_of(
        st.builds(ListOp, st.sampled_from(Direction), st.lists(SIGHTINGS, max_size=6), st.integers(0, 3)),
        st.builds(NotifyOp, st.sampled_from(Direction), SIGHTINGS),
        st.builds(Advance, st.sampled_from([0, 1, 29, 30, 31, 59, 61, 100])),
        st.builds(NewSession),
        st.builds(Check),
    ),
    max_size=40,
)
ModelOp = ListOp | NotifyOp | Advance | NewSession | Check


@dataclass
class ModelEntry:
    seen: int
    size: int
    conference: bool
    failed: bool = False
    processed: bool = False


@dataclass
class ModelDirection:
    ids: dict[str, ModelEntry] = field(default_factory=dict)
    primed: bool = False
    pending: list[tuple[int, Sighting]] = field(default_factory=list)
    created: list[int] = field(default_factory=lambda: [0, 0])
    failed: list[int] = field(default_factory=lambda: [0, 0])
    processed: list[int] = field(default_factory=lambda: [0, 0])
    processed_bytes: list[int] = field(default_factory=lambda: [0, 0])
    untracked: int = 0

    def totals(self) -> TransferTotals:
        peer, conference = DESTINATIONS
        return TransferTotals(
            created={peer: self.created[0], conference: self.created[1]},
            finished={
                (status, side): getattr(self, status)[index]
                for status in FINISHED_STATUSES
                for index, side in enumerate(DESTINATIONS)
            },
            processed_bytes={peer: self.processed_bytes[0], conference: self.processed_bytes[1]},
        )


class ModelLedger:
    def __init__(self, max_ids: int) -> None:
        self.max_ids = max_ids
        self.now = 0
        self.dropped = 0
        self.directions = {direction: ModelDirection() for direction in Direction}

    def advance(self, seconds: int) -> None:
        self.now += seconds
        for model in self.directions.values():
            model.ids = {
                key: entry for key, entry in model.ids.items() if self.now - entry.seen <= MODEL_FORGET_AFTER
            }

    def sight(self, model: ModelDirection, request: Sighting, count: bool) -> bool:
        entry = model.ids.get(request.request_id)
        if entry is None:
            if len(model.ids) >= self.max_ids:
                return False
            entry = model.ids[request.request_id] = ModelEntry(self.now, 0, request.conference)
            if count:
                model.created[request.conference] += 1
        entry.seen = self.now
        entry.conference |= request.conference
        if request.size:
            entry.size = request.size
        if request.status == FAILED and not entry.failed:
            entry.failed = True
            model.failed[entry.conference] += count
        elif request.status == PROCESSED and not entry.processed:
            entry.processed = True
            model.processed[entry.conference] += count
            model.processed_bytes[entry.conference] += entry.size if count else 0
        return True

    def observe_list(self, direction: Direction, requests: list[Sighting], sequence: int) -> None:
        model = self.directions[direction]
        history = not model.primed
        model.untracked = sum(not self.sight(model, request, not history) for request in requests)
        if history:
            model.primed = True
            for place, request in model.pending:
                if place > sequence and not self.sight(model, request, True):
                    self.dropped += 1
            model.pending = []

    def notify(self, direction: Direction, request: Sighting, sequence: int) -> None:
        model = self.directions[direction]
        if model.primed:
            self.dropped += not self.sight(model, request, True)
        else:
            model.pending.append((sequence, request))

    def totals(self) -> RoomTransfers:
        outgoing, incoming = self.directions[OUT], self.directions[IN]
        return RoomTransfers(
            outgoing=outgoing.totals(),
            incoming=incoming.totals(),
            tracked=len(outgoing.ids) + len(incoming.ids),
            untracked=outgoing.untracked + incoming.untracked,
        )


def as_entry(sighting: Sighting) -> dict[str, Any]:
    return request(
        sighting.request_id, sighting.status, sighting.size, "c@x#vcs" if sighting.conference else None
    )


def as_notification(direction: Direction, sighting: Sighting) -> dict[str, Any]:
    conference = {"confId": "c@x#vcs"} if sighting.conference else {}
    direction_type = 1 if direction is OUT else 0
    return changed(sighting.request_id, sighting.status, direction_type, sighting.size, **conference)


@PROPERTY_SETTINGS
@given(st.integers(1, 4), MODEL_OPS)
@example(  # an id past its forget time, notified again before its place is given back: new again
    2,
    [
        ListOp(OUT, [], 0),
        NotifyOp(OUT, Sighting("a", WAITING, 5, False)),
        Advance(31),
        NotifyOp(OUT, Sighting("a", PROCESSED, None, False)),
    ],
)
@example(  # a full direction whose ids pass their forget time takes a new one at once
    1,
    [
        ListOp(IN, [Sighting("a", WAITING, 5, False)], 0),
        Advance(31),
        NotifyOp(IN, Sighting("b", FAILED, 1, True)),
    ],
)
def test_the_ledger_counts_as_a_model_of_its_rules(max_ids: int, ops: list[ModelOp]) -> None:
    clock = Clock()
    ledger = Ledger(max_ids=max_ids, forget_after_seconds=MODEL_FORGET_AFTER, clock=clock)
    model = ModelLedger(max_ids)
    sequence = 10
    for op in ops:
        match op:
            case ListOp(direction, requests, lag):
                snapshot = listing(as_entry(sighting) for sighting in requests)
                ledger.observe_list(direction, snapshot, sequence - lag)
                model.observe_list(direction, requests, sequence - lag)
            case NotifyOp(direction, sighting):
                sequence += 1
                ledger.notify(as_notification(direction, sighting), sequence)
                model.notify(direction, sighting, sequence)
            case Advance(seconds):
                clock.now += seconds
                model.advance(seconds)
            case NewSession():
                sequence = 10
                ledger.new_session()
                for of in model.directions.values():
                    of.pending = []
            case Check():
                assert ledger.totals() == model.totals()
        assert ledger.dropped == model.dropped
    assert ledger.totals() == model.totals()
