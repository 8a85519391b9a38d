"""Property-based tests of the reply parsers: whatever JSON a Room sends, the parser never raises (except the
documented ReplyShapeError for a list that is not a list), its counts always add up to the entries, the fast
aggregation always equals the per-entry rules, and the metrics built from a snapshot or a whole picture of
the Room (incoming requests, availability, app state, version) can always be written out.

Examples Hypothesis found that once failed are kept as `@example`s, so they run on every test run.
Budgets are modest for a 2-core CI machine: 150 examples per property, no per-example deadline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collect.collection import Collection
from exporter.collect.families import collection_metrics
from exporter.methods import OPTIONAL_METHODS, OUTGOING_METHOD
from exporter.room import parse_target, protocol
from exporter.room.errors import CollectionError, Reason
from exporter.room.file_requests import (
    DESTINATIONS,
    INCOMING_LIST_KEY,
    REPLY_LIST_KEY,
    STATUSES,
    ReplyShapeError,
    Snapshot,
    aggregate,
    parse_incoming_reply,
    parse_outgoing_reply,
)
from exporter.room.picture import (
    APP_STATES,
    AVAILABILITY_STATES,
    RoomPicture,
    parse_room,
)
from tests.entry_rules import reference

OPTIONAL_NAMES = tuple(method.name for method in OPTIONAL_METHODS)

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
    "fileSize",
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
def replies(draw: st.DrawFn, key: str = REPLY_LIST_KEY) -> dict[str, Any]:
    """A reply object: a list of entries most of the time, otherwise a missing, null or wrongly typed list."""
    reply: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), JUNK, max_size=3))
    reply.update({"method": "getOutgoingFilesRequests", "result": draw(st.sampled_from([True, 1, "true"]))})
    shape = draw(st.integers(0, 9))
    if shape == 0:
        reply.pop(key, None)
    elif shape == 1:
        reply[key] = draw(JUNK.filter(lambda value: not isinstance(value, list)))
    else:
        reply[key] = draw(st.lists(entries(), max_size=12))
    return reply


def metrics_text(snapshot: Any, picture: RoomPicture | None = None) -> str:
    """The exposition a scrape would send for this snapshot (and this picture of the Room, when given)."""
    collection = Collection(
        parse_target("ws://127.0.0.1:8765"), 0.01, 1_700_000_000.0, snapshot=snapshot, picture=picture
    )

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
    check_counts_add_up(reply, REPLY_LIST_KEY, parse_outgoing_reply)


@PROPERTY_SETTINGS
@given(replies(INCOMING_LIST_KEY))
@example({INCOMING_LIST_KEY: None})
@example({INCOMING_LIST_KEY: [{"status": 1, "timestamp": 10**400, "fileSize": 10**308}]})
def test_incoming_parser_never_raises_and_counts_add_up(reply: dict[str, Any]) -> None:
    check_counts_add_up(reply, INCOMING_LIST_KEY, parse_incoming_reply)


def check_counts_add_up(reply: dict[str, Any], key: str, parse: Callable[[dict[str, Any]], Snapshot]) -> None:
    listed = reply.get(key)
    try:
        snapshot = parse(reply)
    except ReplyShapeError:
        assert listed is not None and not isinstance(listed, list)
        return
    if listed is None:  # a null or missing list on a success is zero requests (reference §7)
        assert snapshot == Snapshot()
        return
    assert isinstance(listed, list)
    assert snapshot == reference(listed)
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
@given(st.lists(entries() | st.deferred(lambda: VALID_ENTRIES), max_size=40))
@example([{"status": 2, "size": None, "fileSize": 2**63 - 1}, {"status": 2, "fileSize": 2**63}])
@example([{"status": 1, "timestamp": 100_000_000_001}, {"status": 1, "timestamp": 100_000_000_000.5}])
@example([{"status": 1, "timestamp": True}, {"status": 4, "confId": 0}, {"status": 3, "confId": ""}])
def test_the_fast_aggregation_always_equals_the_per_entry_rules(listed: list[Any]) -> None:
    assert aggregate(listed) == reference(listed)


@PROPERTY_SETTINGS
@given(entries())
@example({"status": True, "size": True, "timestamp": True})
@example({"status": 2.0, "size": -1, "timestamp": 0})
@example({"status": "2", "size": "3200", "timestamp": "1659251271"})
@example({"status": float("nan"), "size": float("inf"), "timestamp": float("-inf")})
@example({"confId": "", "peerId": None})
def test_an_entry_is_always_classified(entry: Any) -> None:
    snapshot = aggregate([entry])
    assert snapshot.entries == 1
    assert set(snapshot.counts) == {(status, side) for status in STATUSES for side in DESTINATIONS}
    assert snapshot.total == (1 if isinstance(entry, dict) else 0)
    assert snapshot.malformed <= 1 and (snapshot.malformed == 1 or isinstance(entry, dict))
    assert all(size >= 0 for size in snapshot.size_bytes.values())
    ages = snapshot.oldest_pending_created_at.values()
    assert all(at is None or (math.isfinite(at) and at > 0) for at in ages)


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


OPTIONAL_REPLIES: dict[str, Any] = {
    "getIncomingFilesRequests": replies(INCOMING_LIST_KEY),
    "getFileTransferAvailability": st.fixed_dictionaries(
        {}, optional={"availability": SCALARS | JUNK, "available": SCALARS | JUNK}
    ),
    "getAppState": st.fixed_dictionaries({}, optional={"appState": SCALARS | JUNK}),
    "getSystemInfo": st.fixed_dictionaries(
        {},
        optional={
            "productInfo": st.fixed_dictionaries(
                {},
                optional={
                    part: SCALARS | JUNK | st.integers(0, 99)
                    for part in ("major", "minor", "revision", "build")
                },
            )
            | JUNK
        },
    ),
}


@st.composite
def scrapes(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], tuple[str, ...]]:
    """What a scrape asked and what came back: a good outgoing reply, and any optional method asked may be
    unanswered, refused, or answered with anything at all."""
    asked = (OUTGOING_METHOD, *draw(st.lists(st.sampled_from(OPTIONAL_NAMES), unique=True)))
    answers: dict[str, dict[str, Any]] = {
        OUTGOING_METHOD: {"result": True, REPLY_LIST_KEY: draw(st.lists(VALID_ENTRIES, max_size=5))}
    }
    for method in asked[1:]:
        fate = draw(st.integers(0, 5))
        if fate == 0:
            continue  # no reply in time
        reply = dict(draw(OPTIONAL_REPLIES[method]))
        reply.update(
            {"method": method, "result": True if fate > 1 else draw(SCALARS | st.just(False))},
        )
        if draw(st.booleans()):
            reply["error"] = draw(SCALARS)
        answers[method] = reply
    return answers, asked


@PROPERTY_SETTINGS
@given(scrapes(), st.none() | st.just("4.3.0.1"))
@example(
    (
        {
            OUTGOING_METHOD: {"result": True},
            "getSystemInfo": {
                "result": True,
                "productInfo": {"major": 10**400, "minor": 1, "revision": 1, "build": 1},
            },
            "getAppState": {"result": True, "appState": float("nan")},
            "getFileTransferAvailability": {"result": True, "availability": 1e308},
        },
        (OUTGOING_METHOD, "getSystemInfo", "getAppState", "getFileTransferAvailability"),
    ),
    None,
)
def test_optional_methods_never_fail_the_scrape_and_their_metrics_can_be_written(
    scrape: tuple[dict[str, dict[str, Any]], tuple[str, ...]], known_version: str | None
) -> None:
    answers, asked = scrape
    picture = parse_room(answers, asked, 1_700_000_000.0, known_version=known_version)
    assert list(picture.method_success) == list(asked)
    assert picture.method_success[OUTGOING_METHOD] is True
    for method, succeeded in picture.method_success.items():
        if succeeded:
            assert method in answers and answers[method].get("result") is True
    assert picture.availability is None or picture.availability in AVAILABILITY_STATES
    assert picture.app_state is None or picture.app_state in APP_STATES
    if picture.version is not None and picture.version != known_version:
        assert all(part.isdigit() and len(part) <= 9 for part in picture.version.split("."))
        assert len(picture.version.split(".")) == 4
    text = metrics_text(picture.outgoing, picture)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in ("trueconf_file_transfer_availability", "trueconf_room_app_state"):
        if name in families:
            assert sum(sample.value for sample in families[name].samples) == 1, text
    values = [sample.value for family in families.values() for sample in family.samples]
    assert all(math.isfinite(v) and v >= 0 for v in values), text
