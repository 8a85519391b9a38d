"""The pure parser: every quirk of reference §4 and §6, in microseconds, without a socket."""

from __future__ import annotations

import json
import logging
from importlib import resources

import pytest

from exporter.room.file_requests import (
    DESTINATIONS,
    STATUSES,
    ReplyShapeError,
    Snapshot,
    aggregate,
    parse_incoming_reply,
    parse_outgoing_reply,
)
from tests.entry_rules import reference


def doc_example_reply() -> dict:
    scenario = json.loads(
        resources.files("exporter.emulator").joinpath("scenarios/doc-example.json").read_text()
    )
    return {
        "method": "getOutgoingFilesRequests",
        "requestId": "1",
        "result": True,
        "outgoingFilesRequests": scenario["outgoingFilesRequests"],
    }


def reply_of(*entries: object) -> dict:
    return {"method": "getOutgoingFilesRequests", "result": True, "outgoingFilesRequests": list(entries)}


def test_documented_example_gives_exactly_the_documented_numbers():
    snapshot = parse_outgoing_reply(doc_example_reply())
    nonzero = {key: n for key, n in snapshot.counts.items() if n}
    assert nonzero == {("downloading", "peer"): 1, ("downloading", "conference"): 1}
    assert snapshot.size_bytes[("downloading", "peer")] == 3200
    assert snapshot.size_bytes[("downloading", "conference")] == 3200
    assert sum(snapshot.size_bytes.values()) == 6400
    assert snapshot.oldest_pending_created_at == {"waiting": None, "downloading": 1659251271}
    assert snapshot.malformed == 0


def test_every_status_and_destination_pair_is_present_even_when_empty():
    snapshot = parse_outgoing_reply(reply_of())
    assert set(snapshot.counts) == {(s, d) for s in STATUSES for d in DESTINATIONS}
    assert set(snapshot.size_bytes) == set(snapshot.counts)
    assert snapshot.total == 0


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (0, "failed"),
        (1, "waiting"),
        (2, "downloading"),
        (3, "processed"),
        (4, "unknown"),
        (-1, "unknown"),
        (2.0, "downloading"),
    ],
)
def test_status_codes_map_to_labels(code, status):
    snapshot = aggregate([{"status": code, "size": 1, "timestamp": 1659251271}])
    assert snapshot.counts[(status, "peer")] == 1
    assert snapshot.malformed == 0


def test_milliseconds_timestamps_are_normalised_to_seconds():
    snapshot = aggregate([{"status": 1, "size": 10, "timestamp": 1659251271123}])
    assert snapshot.oldest_pending_created_at["waiting"] == pytest.approx(1659251271.123)
    assert snapshot.malformed == 0


def test_conference_entry_has_conference_destination_and_peer_entry_has_peer():
    conference = aggregate([{"status": 1, "size": 1, "timestamp": 1, "confId": "c@s#vcs"}])
    peer = aggregate([{"status": 1, "size": 1, "timestamp": 1, "peerId": "p@s"}])
    assert (conference.counts[("waiting", "conference")], conference.counts[("waiting", "peer")]) == (1, 0)
    assert (peer.counts[("waiting", "conference")], peer.counts[("waiting", "peer")]) == (0, 1)


@pytest.mark.parametrize(
    "entry",
    [
        {"size": 10, "timestamp": 1659251271},  # status missing
        {"status": "2", "size": 10, "timestamp": 1659251271},  # status a string
        {"status": True, "size": 10, "timestamp": 1659251271},  # a boolean is not a number
        {"status": 2.5, "size": 10, "timestamp": 1659251271},  # not a whole number
    ],
)
def test_a_bad_status_is_unknown_and_malformed(entry):
    snapshot = aggregate([entry])
    assert (snapshot.counts[("unknown", "peer")], snapshot.malformed) == (1, 1)


@pytest.mark.parametrize(
    ("entry", "size", "malformed"),
    [
        ({"status": 1, "timestamp": 1659251271}, None, True),  # size missing
        ({"status": 1, "size": "3200", "timestamp": 1659251271}, None, True),  # size a string
        ({"status": 1, "size": -5, "timestamp": 1659251271}, None, False),  # negative: no bytes, not a defect
        ({"status": 1, "size": 12.0, "timestamp": 1659251271}, 12, False),
    ],
)
def test_sizes(entry, size, malformed):
    snapshot = aggregate([entry])
    assert (snapshot.size_bytes[("waiting", "peer")], snapshot.malformed) == (size or 0, malformed)


@pytest.mark.parametrize(
    ("timestamp", "created_at", "malformed"),
    [
        (None, None, True),
        ("1659251271", None, True),
        (float("nan"), None, True),
        (0, None, False),
        (-3, None, False),
    ],
)
def test_invalid_timestamps_are_left_out_of_ages(timestamp, created_at, malformed):
    entry = {"status": 1, "size": 1}
    if timestamp is not None:
        entry["timestamp"] = timestamp
    snapshot = aggregate([entry])
    assert (snapshot.oldest_pending_created_at["waiting"], snapshot.malformed) == (created_at, malformed)
    assert snapshot.counts[("waiting", "peer")] == 1


def test_one_bad_entry_never_spoils_the_others():
    snapshot = parse_outgoing_reply(
        reply_of(
            "not an object",
            None,
            [1, 2],
            {"status": 1, "size": 100, "timestamp": 1000},
            {"status": "x", "size": "y"},
            {"status": 1, "size": 50, "timestamp": 2000, "confId": "c"},
        )
    )
    assert snapshot.entries == 6
    assert snapshot.malformed == 4  # three non-objects and the entry with a bad status and size
    assert snapshot.counts[("waiting", "peer")] == 1
    assert snapshot.counts[("waiting", "conference")] == 1
    assert snapshot.counts[("unknown", "peer")] == 1
    assert snapshot.total == 3  # entries that are not objects are counted only as malformed
    assert snapshot.size_bytes[("waiting", "peer")] == 100
    assert snapshot.oldest_pending_created_at["waiting"] == 1000


def test_oldest_pending_is_the_minimum_per_status_and_ignores_finished_requests():
    snapshot = parse_outgoing_reply(
        reply_of(
            {"status": 1, "size": 1, "timestamp": 5000},
            {"status": 1, "size": 1, "timestamp": 3000},
            {"status": 2, "size": 1, "timestamp": 4000},
            {"status": 3, "size": 1, "timestamp": 1000},
            {"status": 0, "size": 1, "timestamp": 1000},
        )
    )
    assert snapshot.oldest_pending_created_at == {"waiting": 3000, "downloading": 4000}
    assert snapshot.pending == 3
    assert snapshot.oldest_pending_age("waiting", now=3600) == 600


def test_a_room_clock_ahead_of_ours_never_gives_a_negative_age():
    snapshot = parse_outgoing_reply(reply_of({"status": 1, "size": 1, "timestamp": 2_000_000_000}))
    assert snapshot.oldest_pending_age("waiting", now=1_900_000_000) == 0.0
    assert snapshot.oldest_pending_age("downloading", now=1_900_000_000) == 0.0


@pytest.mark.parametrize(
    "reply",
    [
        {"result": True, "outgoingFilesRequests": {"a": 1}},
        {"result": True, "outgoingFilesRequests": "[]"},
        {"result": True, "outgoingFilesRequests": 0},
        {"result": True, "outgoingFilesRequests": False},
    ],
)
def test_a_list_that_is_not_a_list_is_a_shape_error_not_zero_requests(reply):
    with pytest.raises(ReplyShapeError, match="not a list"):
        parse_outgoing_reply(reply)


@pytest.mark.parametrize(
    "reply",
    [
        {"method": "getOutgoingFilesRequests", "result": True},
        {"method": "getOutgoingFilesRequests", "result": True, "outgoingFilesRequests": None},
    ],
    ids=["missing", "null"],
)
def test_a_null_or_missing_list_on_a_success_is_zero_requests_logged_at_debug(reply, caplog):
    """Reference §7: an idle Room may send its empty list so; it must not look down."""
    with caplog.at_level(logging.DEBUG, logger="exporter.room.file_requests"):
        snapshot = parse_outgoing_reply(reply)
    assert snapshot == Snapshot()
    assert snapshot.total == snapshot.entries == snapshot.malformed == 0
    assert set(snapshot.counts) == {(s, d) for s in STATUSES for d in DESTINATIONS}
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert "outgoingFilesRequests" in record.detail  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("entry", "size", "malformed"),
    [
        ({"status": 1, "fileSize": 700, "timestamp": 1659251271}, 700, False),
        ({"status": 1, "size": None, "fileSize": 700, "timestamp": 1659251271}, 700, False),
        ({"status": 1, "size": 5, "fileSize": 700, "timestamp": 1659251271}, 5, False),  # size wins
        ({"status": 1, "size": "x", "fileSize": 700, "timestamp": 1659251271}, None, True),  # no fallback
        ({"status": 1, "fileSize": "700", "timestamp": 1659251271}, None, True),
    ],
)
def test_a_missing_size_falls_back_to_file_size(entry, size, malformed):
    """Reference §6 and §7: `size` in the lists, `fileSize` everywhere else; read `size`, then `fileSize`."""
    snapshot = aggregate([entry])
    assert snapshot.size_bytes[("waiting", "peer")] == (size or 0)
    assert snapshot.malformed == int(malformed)


def test_incoming_requests_are_read_by_the_same_rules_with_milliseconds():
    """Reference §5: entries like the outgoing ones, timestamps in milliseconds, no fileId."""
    snapshot = parse_incoming_reply(
        {
            "method": "getIncomingFilesRequests",
            "result": True,
            "incomingFilesRequests": [
                {"fileRequestId": "a", "fileName": "1.jpg", "status": 1, "size": 500,
                 "timestamp": 1659251271123, "peerId": "820_1@some.server", "peerDn": "820_1"},
                {"fileRequestId": "b", "fileName": "2.jpg", "status": 2, "size": 3200,
                 "timestamp": 1659251384000, "confId": "000001703e81e38e@some.server#vcs"},
            ],
        }
    )  # fmt: skip
    assert snapshot.counts[("waiting", "peer")] == 1
    assert snapshot.counts[("downloading", "conference")] == 1
    assert snapshot.size_bytes[("downloading", "conference")] == 3200
    assert snapshot.oldest_pending_created_at == {
        "waiting": pytest.approx(1659251271.123),
        "downloading": pytest.approx(1659251384.0),
    }
    assert parse_incoming_reply({"result": True}).total == 0
    with pytest.raises(ReplyShapeError):
        parse_incoming_reply({"result": True, "incomingFilesRequests": {}})


def test_the_fast_path_agrees_with_the_per_entry_rules_on_every_odd_value():
    odd = [None, True, False, -1, 0, 1, 2, 3, 4, 2.0, 2.5, "2", 10**400, float("nan"), float("inf"), -(2**63)]
    odd += [2**63 - 1, 2**63, 1e11, 1e11 + 1, 10**11 + 1, 1659251271, 1659251271123, "", [], {}]
    entries = [{"status": v, "size": 1, "timestamp": 1000} for v in odd]
    entries += [{"status": 1, "size": v, "timestamp": 1000} for v in odd]
    entries += [{"status": 1, "fileSize": v, "timestamp": 1000} for v in odd]
    entries += [{"status": 2, "size": 1, "timestamp": v} for v in odd]
    entries += [{"status": 1, "size": 1, "timestamp": 5, "confId": v} for v in odd]
    entries += [*odd, "entry", [1]]
    assert aggregate(entries) == reference(entries)
