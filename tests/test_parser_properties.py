"""Property-based tests of the reply parser: whatever JSON a Room sends, the parser never raises (except the
documented ReplyShapeError for a missing list), its counts always add up to the entries, and the metrics
built from its snapshot can always be written out.

Examples Hypothesis found that once failed are kept as `@example`s, so they run on every test run.
Budgets are modest for a 2-core CI machine: 150 examples per property, no per-example deadline.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collect.collection import Collection
from exporter.collect.families import collection_metrics
from exporter.room import parse_target, protocol
from exporter.room.errors import CollectionError, Reason
from exporter.room.file_requests import (
    DESTINATIONS,
    REPLY_LIST_KEY,
    STATUSES,
    ReplyShapeError,
    parse_entry,
    parse_outgoing_reply,
)

PROPERTY_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""How many examples comes from the Hypothesis profile conftest.py loads: 150 in the full suite."""

NAN_LIKE = st.sampled_from(
    [
        "NaN",
        "nan",
        "-nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1e999",
        "0x10",
        "1_000",
        " 2 ",
        "",
        "null",
        "true",
        "\uff12",  # fullwidth two
        "\u0663",  # Arabic-Indic three
        "3.0",
        "-0",
        "1659251271",
        "1659251271000",
    ]
)
"""Strings a sloppy Room (or a sloppy JSON encoder) might send where a number belongs."""

HUGE_NUMBERS = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1, 10**308, 1.7976931348623157e308, -1e308, 5e-324]),
)
"""Integers beyond any machine type (JSON has no limit, Python parses them exactly) and extreme floats."""

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.integers(),
    HUGE_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    NAN_LIKE,
)

JUNK = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
"""Any JSON-ish value, nested."""

FIELD_KEYS = [
    "status",
    "size",
    "timestamp",
    "confId",
    "peerId",
    "peerDn",
    "fileRequestId",
    "fileName",
    "fileId",
]


@st.composite
def entries(draw: st.DrawFn) -> Any:
    """One list entry: usually an object with some of the documented keys holding anything, sometimes junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JUNK)
    keys = draw(st.lists(st.sampled_from(FIELD_KEYS), unique=True, max_size=len(FIELD_KEYS)))
    entry = {key: draw(SCALARS | JUNK) for key in keys}
    entry.update(draw(st.dictionaries(st.text(max_size=8), JUNK, max_size=2)))
    return entry


@st.composite
def replies(draw: st.DrawFn) -> dict[str, Any]:
    """A reply object: a list of entries most of the time, otherwise a missing or wrongly typed list."""
    reply: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), JUNK, max_size=3))
    reply.update({"method": "getOutgoingFilesRequests", "result": draw(st.sampled_from([True, 1, "true"]))})
    shape = draw(st.integers(0, 9))
    if shape == 0:
        reply.pop(REPLY_LIST_KEY, None)
    elif shape == 1:
        reply[REPLY_LIST_KEY] = draw(JUNK.filter(lambda value: not isinstance(value, list)))
    else:
        reply[REPLY_LIST_KEY] = draw(st.lists(entries(), max_size=12))
    return reply


def metrics_text(snapshot: Any) -> str:
    """The exposition a scrape would send for this snapshot."""
    collection = Collection(parse_target("ws://127.0.0.1:8765"), 0.01, 1_700_000_000.0, snapshot=snapshot)

    class One:
        def collect(self) -> Any:
            return collection_metrics(collection)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


@PROPERTY_SETTINGS
@given(replies())
@example({REPLY_LIST_KEY: [{"status": 1, "timestamp": 10**400}]})
@example({REPLY_LIST_KEY: [{"status": 2, "size": 10**308}, {"status": 2, "size": 10**308}]})
@example({REPLY_LIST_KEY: [{"status": 2, "size": 1.7976931348623157e308}, {"status": 2, "size": 1e308}]})
@example({REPLY_LIST_KEY: [{"status": 1, "timestamp": 1.7976931348623157e308}]})
def test_parser_never_raises_and_counts_add_up(reply: dict[str, Any]) -> None:
    listed = reply.get(REPLY_LIST_KEY)
    try:
        snapshot = parse_outgoing_reply(reply)
    except ReplyShapeError:
        assert not isinstance(listed, list)
        return
    assert isinstance(listed, list)
    not_objects = sum(1 for entry in listed if not isinstance(entry, dict))
    assert snapshot.entries == len(listed)
    assert snapshot.total + not_objects == len(listed)
    assert not_objects <= snapshot.malformed <= snapshot.entries
    assert all(count >= 0 for count in snapshot.counts.values())
    assert all(size >= 0 for size in snapshot.size_bytes.values())
    for created_at in snapshot.oldest_pending_created_at.values():
        assert created_at is None or (math.isfinite(created_at) and created_at > 0)


@PROPERTY_SETTINGS
@given(replies())
@example({REPLY_LIST_KEY: [{"status": 2, "size": 10**308}, {"status": 2, "size": 10**308}]})
@example({REPLY_LIST_KEY: [{"status": 1, "timestamp": 10**400}]})
def test_metrics_of_any_snapshot_can_be_written_and_read_back(reply: dict[str, Any]) -> None:
    """A value the exposition cannot format (an int beyond float range) would fail the whole scrape."""
    try:
        snapshot = parse_outgoing_reply(reply)
    except ReplyShapeError:
        return
    text = metrics_text(snapshot)
    values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples]
    assert all(math.isfinite(v) and v >= 0 for v in values), text


@PROPERTY_SETTINGS
@given(entries())
@example({"status": True, "size": True, "timestamp": True})
@example({"status": 2.0, "size": -1, "timestamp": 0})
@example({"status": "2", "size": "3200", "timestamp": "1659251271"})
@example({"status": float("nan"), "size": float("inf"), "timestamp": float("-inf")})
@example({"confId": "", "peerId": None})
def test_an_entry_is_always_classified(entry: Any) -> None:
    request = parse_entry(entry)
    if not isinstance(entry, dict):
        assert request is None
        return
    assert request is not None
    assert request.status in STATUSES
    assert request.destination in DESTINATIONS
    assert request.size_bytes is None or request.size_bytes >= 0
    assert request.created_at is None or (math.isfinite(request.created_at) and request.created_at > 0)


VALID_ENTRIES = st.fixed_dictionaries(
    {
        "status": st.integers(min_value=0, max_value=3),
        "size": st.integers(min_value=0, max_value=2**40),
        "timestamp": st.integers(min_value=1, max_value=4_102_444_800),
    },
    optional={"confId": st.text(min_size=1, max_size=20), "peerId": st.text(max_size=20)},
)


@PROPERTY_SETTINGS
@given(st.lists(VALID_ENTRIES | JUNK, max_size=30))
def test_counts_match_a_tally_by_status_and_destination(listed: list[Any]) -> None:
    """For documented entries the counts are exact per label pair, whatever junk sits between them."""
    expected = {(s, d): 0 for s in STATUSES for d in DESTINATIONS}
    for entry in listed:
        documented = isinstance(entry, dict) and set(entry) <= {
            "status",
            "size",
            "timestamp",
            "confId",
            "peerId",
        }
        if documented and type(entry.get("status")) is int:
            status = STATUSES[entry["status"]] if 0 <= entry["status"] <= 3 else "unknown"
            destination = "conference" if entry.get("confId") not in (None, "") else "peer"
            expected[(status, destination)] += 1
    snapshot = parse_outgoing_reply({REPLY_LIST_KEY: listed})
    for key, count in expected.items():
        assert snapshot.counts[key] >= count
    assert snapshot.total == sum(1 for entry in listed if isinstance(entry, dict))


@PROPERTY_SETTINGS
@given(st.lists(VALID_ENTRIES, max_size=30))
def test_documented_entries_are_counted_exactly_and_never_malformed(listed: list[dict[str, Any]]) -> None:
    expected = {(s, d): 0 for s in STATUSES for d in DESTINATIONS}
    sizes = dict.fromkeys(expected, 0)
    for entry in listed:
        key = (STATUSES[entry["status"]], "conference" if entry.get("confId") else "peer")
        expected[key] += 1
        sizes[key] += entry["size"]
    snapshot = parse_outgoing_reply(json.loads(json.dumps({REPLY_LIST_KEY: listed})))
    assert snapshot.counts == expected
    assert snapshot.size_bytes == sizes
    assert snapshot.malformed == 0


@PROPERTY_SETTINGS
@given(st.text(max_size=40) | JUNK.map(json.dumps) | st.integers(1, 5000).map(lambda n: "[" * n + "]" * n))
def test_any_text_decodes_to_an_object_or_a_protocol_error(text: str) -> None:
    """The client's decoder turns any text into an object or a protocol error; nothing else escapes."""
    try:
        message = protocol.decode(text)
    except CollectionError as error:
        assert error.reason is Reason.PROTOCOL
        return
    assert isinstance(message, dict)
