"""The Room's whole picture from one scrape's replies (reference §5, §7): parse_room, its metric families and
`check`'s verdict, without a socket."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collect.collection import Collection, picture_summary
from exporter.collect.families import collection_metrics
from exporter.collect.verdict import verdict
from exporter.methods import (
    APP_STATE_METHOD,
    AVAILABILITY_METHOD,
    INCOMING_METHOD,
    OPTIONAL_METHODS,
    OUTGOING_METHOD,
    SYSTEM_INFO_METHOD,
)
from exporter.room import parse_target, protocol
from exporter.room.file_requests import ReplyShapeError, Snapshot
from exporter.room.picture import (
    APP_STATES,
    AVAILABILITY_STATES,
    MAX_NAME_CHARS,
    RoomIdentity,
    RoomPicture,
    identity_of,
    parse_app_state,
    parse_availability,
    parse_identity,
    parse_room,
    parse_version,
    version_of,
)
from tests.exposition import names, samples, value

OPTIONAL_NAMES = tuple(method.name for method in OPTIONAL_METHODS)

NOW = 1_659_251_400.0
ALL = (OUTGOING_METHOD, *OPTIONAL_NAMES)


def ok(method: str, **fields: Any) -> dict[str, Any]:
    return {"method": method, "requestId": "1", "result": True, **fields}


def refused(method: str) -> dict[str, Any]:
    return {"method": method, "requestId": "1", "result": False, "error": f"Unknown method: {method}"}


OUTGOING = ok(
    OUTGOING_METHOD,
    outgoingFilesRequests=[
        {"status": 2, "size": 3200, "timestamp": 1659251271, "peerId": "820_1@some.server"},
        {"status": 2, "size": 3200, "timestamp": 1659251384, "confId": "000001703e81e38e@some.server#vcs"},
    ],
)
INCOMING = ok(
    INCOMING_METHOD,
    incomingFilesRequests=[
        {"status": 1, "size": 500, "timestamp": 1659251300000, "peerId": "p@s"},
        {"status": 1, "size": 700, "timestamp": 1659251350000, "peerId": "q@s"},
        {"status": 3, "size": 900, "timestamp": 1659251000000, "confId": "c@s#vcs"},
    ],
)
SYSTEM_INFO = ok(
    SYSTEM_INFO_METHOD,
    productInfo={"major": 5, "minor": 0, "revision": 2, "build": 17},
    authInfo={"peerId": "room@some.server", "peerDn": "Room"},
)


def every_reply() -> dict[str, dict[str, Any]]:
    """A fresh copy each time: tests change it."""
    return copy.deepcopy(
        {
            OUTGOING_METHOD: OUTGOING,
            INCOMING_METHOD: INCOMING,
            AVAILABILITY_METHOD: ok(AVAILABILITY_METHOD, availability=3),
            APP_STATE_METHOD: ok(APP_STATE_METHOD, appState=3, embeddedHttpPort=8766),
            SYSTEM_INFO_METHOD: SYSTEM_INFO,
        }
    )


def exposition(picture: RoomPicture | None, snapshot: Snapshot | None = None) -> str:
    collection = Collection(
        parse_target("ws://127.0.0.1:8765"),
        0.01,
        NOW,
        snapshot=snapshot or (picture.outgoing if picture else None),
        picture=picture,
    )

    class One:
        def collect(self):
            return collection_metrics(collection)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    return generate_latest(registry).decode()


# --- parse_room ---------------------------------------------------------------------------------------------


def test_every_method_answered_gives_the_whole_picture():
    picture = parse_room(every_reply(), ALL, NOW)
    assert picture.outgoing.total == 2
    assert picture.incoming is not None
    assert picture.incoming.counts[("waiting", "peer")] == 2
    assert picture.incoming.counts[("processed", "conference")] == 1
    assert picture.incoming.oldest_pending_created_at["waiting"] == 1659251300.0
    assert picture.availability == "available"
    assert picture.app_state == "ready"
    assert picture.version == "5.0.2.17"
    assert picture.identity == RoomIdentity("Room", "room@some.server")
    assert picture.collected_at == NOW
    assert dict(picture.method_success) == dict.fromkeys(ALL, True)
    assert list(picture.method_success) == list(ALL)


def test_the_one_method_case_is_today_s_scrape():
    picture = parse_room({OUTGOING_METHOD: OUTGOING}, (OUTGOING_METHOD,), NOW)
    assert picture == RoomPicture(
        outgoing=picture.outgoing, collected_at=NOW, method_success={OUTGOING_METHOD: True}
    )
    assert picture.outgoing.counts[("downloading", "conference")] == 1


@pytest.mark.parametrize("method", OPTIONAL_NAMES)
@pytest.mark.parametrize("fate", ["refused", "unanswered", "result-missing", "not-an-object"])
def test_an_optional_method_that_fails_leaves_only_its_own_part_absent(method, fate):
    replies = every_reply()
    if fate == "refused":
        replies[method] = refused(method)
    elif fate == "unanswered":
        del replies[method]
    elif fate == "result-missing":
        del replies[method]["result"]
    else:
        replies[method] = ["not", "an", "object"]  # type: ignore[assignment]
    picture = parse_room(replies, ALL, NOW)
    assert picture.method_success == {m: m != method for m in ALL}
    parts = {
        INCOMING_METHOD: picture.incoming,
        AVAILABILITY_METHOD: picture.availability,
        APP_STATE_METHOD: picture.app_state,
        SYSTEM_INFO_METHOD: picture.version,
    }
    assert [m for m, part in parts.items() if part is None] == [method]
    assert picture.outgoing.total == 2


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        (INCOMING_METHOD, ok(INCOMING_METHOD, incomingFilesRequests={"not": "a list"})),
        (AVAILABILITY_METHOD, ok(AVAILABILITY_METHOD)),
        (AVAILABILITY_METHOD, ok(AVAILABILITY_METHOD, availability=None)),
        (APP_STATE_METHOD, ok(APP_STATE_METHOD, embeddedHttpPort=8766)),
        (SYSTEM_INFO_METHOD, ok(SYSTEM_INFO_METHOD)),
        (SYSTEM_INFO_METHOD, ok(SYSTEM_INFO_METHOD, productInfo={"major": 5, "minor": 0, "revision": 2})),
        (SYSTEM_INFO_METHOD, ok(SYSTEM_INFO_METHOD, productInfo={"major": "5; drop", "minor": 0})),
    ],
)
def test_an_optional_reply_in_an_unreadable_shape_is_a_failed_method_not_a_down_room(method, reply, caplog):
    replies = {**every_reply(), method: reply}
    with caplog.at_level(logging.DEBUG, logger="exporter.room.picture"):
        picture = parse_room(replies, ALL, NOW)
    assert picture.method_success[method] is False
    assert picture.method_success[OUTGOING_METHOD] is True
    assert any(method in record.detail for record in caplog.records)  # type: ignore[attr-defined]


def test_a_method_not_asked_is_absent_even_when_a_reply_is_there():
    picture = parse_room(every_reply(), (OUTGOING_METHOD, APP_STATE_METHOD), NOW)
    assert picture.incoming is picture.availability is picture.version is None
    assert picture.app_state == "ready"
    assert dict(picture.method_success) == {OUTGOING_METHOD: True, APP_STATE_METHOD: True}


def test_an_empty_incoming_list_sent_as_null_is_zero_requests():
    replies = {**every_reply(), INCOMING_METHOD: ok(INCOMING_METHOD, incomingFilesRequests=None)}
    picture = parse_room(replies, ALL, NOW)
    assert picture.incoming == Snapshot()
    assert picture.method_success[INCOMING_METHOD] is True


def test_a_version_learnt_earlier_in_the_session_stands_when_not_asked_or_failed():
    asked = (OUTGOING_METHOD,)
    assert parse_room({OUTGOING_METHOD: OUTGOING}, asked, NOW, known_version="4.3.0.9").version == "4.3.0.9"
    failed = {OUTGOING_METHOD: OUTGOING, SYSTEM_INFO_METHOD: refused(SYSTEM_INFO_METHOD)}
    picture = parse_room(failed, (OUTGOING_METHOD, SYSTEM_INFO_METHOD), NOW, known_version="4.3.0.9")
    assert picture.version == "4.3.0.9"
    assert picture.method_success[SYSTEM_INFO_METHOD] is False
    fresh = parse_room(every_reply(), ALL, NOW, known_version="4.3.0.9")
    assert fresh.version == "5.0.2.17"


def test_a_wrong_outgoing_list_is_a_shape_error():
    with pytest.raises(ReplyShapeError):
        parse_room({OUTGOING_METHOD: ok(OUTGOING_METHOD, outgoingFilesRequests="[]")}, ALL, NOW)


def test_outgoing_must_be_asked():
    with pytest.raises(ValueError, match=OUTGOING_METHOD):
        parse_room(every_reply(), OPTIONAL_NAMES, NOW)


def test_a_success_is_decided_by_result_alone_and_an_error_key_on_it_is_logged(caplog):
    """Reference §7: vendor clients look at `result` alone."""
    reply = ok(OUTGOING_METHOD, error="", outgoingFilesRequests=[])
    with caplog.at_level(logging.DEBUG, logger="exporter.room.protocol"):
        assert protocol.failure_text(reply) is None
        picture = parse_room({OUTGOING_METHOD: reply}, (OUTGOING_METHOD,), NOW)
    assert picture.outgoing.total == 0
    assert len(caplog.records) == 1  # the client's look; the parser takes the client's word
    for record in caplog.records:
        assert record.levelno == logging.DEBUG
        assert OUTGOING_METHOD in record.detail  # type: ignore[attr-defined]
    assert protocol.failure_text({"result": False}) == "result False"
    assert protocol.failure_text({"result": 1, "error": "x"}) == "x"
    assert protocol.failure_text({"error": "Wrong credentials", "resultCode": 3}) == (
        "Wrong credentials, resultCode 3"
    )


def test_a_system_info_reply_kept_by_the_session_gives_the_known_version():
    assert version_of(SYSTEM_INFO) == "5.0.2.17"
    assert version_of(None) is None
    assert version_of(refused(SYSTEM_INFO_METHOD)) is None
    assert version_of(ok(SYSTEM_INFO_METHOD, productInfo={"major": 5})) is None
    replies = {OUTGOING_METHOD: OUTGOING}
    picture = parse_room(replies, (OUTGOING_METHOD,), NOW, known_version=version_of(SYSTEM_INFO))
    assert picture.version == "5.0.2.17"


# --- the Room's name (getSystemInfo authInfo) ---------------------------------------------------------------


def identities(text: str) -> list[dict[str, str]]:
    """The labels of every trueconf_room_identity_info series (each at 1)."""
    found = [
        (dict(labels), value)
        for (name, labels), value in samples(text).items()
        if name.endswith("identity_info")
    ]
    assert all(value == 1 for _, value in found)
    return [labels for labels, _ in found]


def system_info(**auth_info: Any) -> dict[str, Any]:
    return {**SYSTEM_INFO, "authInfo": auth_info}


@pytest.mark.parametrize(
    ("auth_info", "identity"),
    [
        (
            {"peerDn": "Board room 3", "peerId": "room3@example.org"},
            RoomIdentity("Board room 3", "room3@example.org"),
        ),
        ({"peerDn": "  Board room 3 "}, RoomIdentity("Board room 3", "")),
        ({"peerId": "room3@example.org"}, RoomIdentity("room3@example.org", "room3@example.org")),
        (
            {"peerDn": 42, "peerId": "room3@example.org"},
            RoomIdentity("room3@example.org", "room3@example.org"),
        ),
        ({"peerDn": "", "peerId": "   "}, None),
        ({"peerDn": None, "peerId": ["room3"]}, None),
        ({}, None),
        ({"peerDn": "Переговорная 3"}, RoomIdentity("Переговорная 3", "")),
    ],
)
def test_the_name_the_room_is_logged_in_with(auth_info, identity):
    assert parse_identity(system_info(**auth_info)) == identity


def test_a_name_is_a_short_safe_label_value():
    hostile = parse_identity(system_info(peerDn="x\x1b[2J\u202eevil\ud800", peerId="y" * 10_000))
    assert hostile == RoomIdentity("x\\x1b[2J\\u202eevil\\ud800", "y" * MAX_NAME_CHARS)
    long_escapes = parse_identity(system_info(peerDn="\x07" * 1000))
    assert long_escapes is not None and len(long_escapes.name) == MAX_NAME_CHARS
    text = exposition(
        parse_room({**every_reply(), SYSTEM_INFO_METHOD: system_info(peerDn='a\ud800\n"')}, ALL, NOW)
    )
    assert identities(text) == [{"name": 'a\\ud800\\n"', "peer_id": ""}], "no surrogate breaks the answer"


@pytest.mark.parametrize("auth_info", [None, "Room", ["Room"], 3])
def test_no_authinfo_or_an_unreadable_one_costs_the_name_alone(auth_info):
    """authInfo is sent only while the Room is logged in: its absence is no defect of the reply."""
    reply = {key: item for key, item in SYSTEM_INFO.items() if key != "authInfo"}
    if auth_info is not None:
        reply["authInfo"] = auth_info
    picture = parse_room({**every_reply(), SYSTEM_INFO_METHOD: reply}, ALL, NOW)
    assert picture.identity is None
    assert picture.version == "5.0.2.17" and picture.method_success[SYSTEM_INFO_METHOD] is True
    assert "trueconf_room_identity_info" not in names(exposition(picture))


def test_a_name_learnt_earlier_in_the_session_stands_until_the_room_says_another():
    known = RoomIdentity("Old name", "room@some.server")
    asked = (OUTGOING_METHOD,)
    assert parse_room({OUTGOING_METHOD: OUTGOING}, asked, NOW, known_identity=known).identity == known
    logged_out = {key: item for key, item in SYSTEM_INFO.items() if key != "authInfo"}
    replies = {**every_reply(), SYSTEM_INFO_METHOD: logged_out}
    assert parse_room(replies, ALL, NOW, known_identity=known).identity == known
    refused_now = {**every_reply(), SYSTEM_INFO_METHOD: refused(SYSTEM_INFO_METHOD)}
    assert parse_room(refused_now, ALL, NOW, known_identity=known).identity == known
    assert parse_room(every_reply(), ALL, NOW, known_identity=known).identity == RoomIdentity(
        "Room", "room@some.server"
    )
    assert identity_of(SYSTEM_INFO) == RoomIdentity("Room", "room@some.server")
    assert identity_of(None) is identity_of(refused(SYSTEM_INFO_METHOD)) is identity_of(logged_out) is None


def test_the_identity_family_is_one_series_for_joins():
    text = exposition(parse_room(every_reply(), ALL, NOW))
    assert identities(text) == [{"name": "Room", "peer_id": "room@some.server"}]
    assert "group_left(name) trueconf_room_identity_info" in text, "the help says how to join"


# --- the state parsers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"availability": 0}, "forbidden_by_server"),
        ({"availability": 1}, "forbidden_by_license"),
        ({"availability": 2}, "server_login_required"),
        ({"availability": 3}, "available"),
        ({"availability": 3.0}, "available"),
        ({"availability": 4}, "unknown"),
        ({"availability": -1}, "unknown"),
        ({"availability": "3"}, "unknown"),
        ({"availability": 2.5}, "unknown"),
        ({"availability": False}, "unknown"),
        ({"available": 1}, "forbidden_by_license"),  # the older client's key
        ({"available": True}, "available"),
        ({"available": False}, "unknown"),
        ({"availability": 0, "available": 3}, "forbidden_by_server"),
        ({"availability": None, "available": 3}, "available"),
    ],
)
def test_availability(fields, state):
    assert parse_availability(ok(AVAILABILITY_METHOD, **fields)) == state


@pytest.mark.parametrize(
    ("code", "state"), [*enumerate(APP_STATES[:-1]), (7, "unknown"), (-1, "unknown"), ("3", "unknown")]
)
def test_app_states(code, state):
    assert parse_app_state(ok(APP_STATE_METHOD, appState=code)) == state


@pytest.mark.parametrize(
    ("info", "version"),
    [
        ({"major": 5, "minor": 0, "revision": 2, "build": 17}, "5.0.2.17"),
        ({"major": 4, "minor": 3, "revision": 0, "build": 1, "name": "x"}, "4.3.0.1"),
        ({"major": "5", "minor": "0", "revision": "02", "build": 17.0}, "5.0.2.17"),
    ],
)
def test_versions(info, version):
    assert parse_version(ok(SYSTEM_INFO_METHOD, productInfo=info)) == version


# --- metric families ----------------------------------------------------------------------------------------


def test_families_of_the_whole_picture():
    text = exposition(parse_room(every_reply(), ALL, NOW))
    for method in ALL:
        assert value(text, "trueconf_scrape_method_success", method=method) == 1
    assert value(text, "trueconf_incoming_file_requests", status="waiting", source="peer") == 2
    assert value(text, "trueconf_incoming_file_requests", status="processed", source="conference") == 1
    assert value(text, "trueconf_incoming_file_requests_size_bytes", status="waiting", source="peer") == 1200
    assert value(text, "trueconf_incoming_file_requests_oldest_pending_age_seconds", status="waiting") == 100
    assert (
        value(text, "trueconf_incoming_file_requests_oldest_pending_age_seconds", status="downloading") == 0
    )
    incoming = [labels for name, labels in samples(text) if name == "trueconf_incoming_file_requests"]
    assert len(incoming) == 10  # 5 statuses x 2 sources, zeros included
    for state in AVAILABILITY_STATES:
        assert value(text, "trueconf_file_transfer_availability", state=state) == int(state == "available")
    for state in APP_STATES:
        assert value(text, "trueconf_room_app_state", state=state) == int(state == "ready")
    assert value(text, "trueconf_room_info", version="5.0.2.17") == 1
    assert "# HELP trueconf_file_transfer_availability Whether the Room may transfer files" in text


def test_the_incoming_age_is_clamped_when_the_room_clock_is_ahead():
    ahead = ok(
        INCOMING_METHOD, incomingFilesRequests=[{"status": 2, "size": 1, "timestamp": (NOW + 60) * 1000}]
    )
    text = exposition(parse_room({**every_reply(), INCOMING_METHOD: ahead}, ALL, NOW))
    assert (
        value(text, "trueconf_incoming_file_requests_oldest_pending_age_seconds", status="downloading") == 0
    )


NEW_FAMILIES = {
    "trueconf_incoming_file_requests",
    "trueconf_incoming_file_requests_size_bytes",
    "trueconf_incoming_file_requests_oldest_pending_age_seconds",
    "trueconf_file_transfer_availability",
    "trueconf_room_app_state",
    "trueconf_room_info",
    "trueconf_room_identity_info",
}


def test_families_of_methods_not_asked_or_failed_are_absent():
    text = exposition(parse_room({OUTGOING_METHOD: OUTGOING}, (OUTGOING_METHOD,), NOW))
    assert not names(text) & NEW_FAMILIES
    assert value(text, "trueconf_scrape_method_success", method=OUTGOING_METHOD) == 1
    failed = {OUTGOING_METHOD: OUTGOING} | {m: refused(m) for m in OPTIONAL_NAMES}
    text = exposition(parse_room(failed, ALL, NOW))
    assert not names(text) & NEW_FAMILIES
    for method in OPTIONAL_NAMES:
        assert value(text, "trueconf_scrape_method_success", method=method) == 0
    assert value(text, "trueconf_up") == 1


def test_a_room_that_is_down_has_none_of_the_picture_families():
    text = exposition(None)
    assert value(text, "trueconf_up") == 0
    assert not names(text) & (NEW_FAMILIES | {"trueconf_scrape_method_success"})


def test_a_collection_made_from_a_snapshot_alone_still_writes_its_families():
    text = exposition(None, snapshot=Snapshot())
    assert value(text, "trueconf_up") == 1
    assert "trueconf_scrape_method_success" not in names(text)


# --- check's verdict and the trace summary ------------------------------------------------------------------


def collection_of(picture: RoomPicture) -> Collection:
    return Collection(
        parse_target("ws://127.0.0.1:8765"), 0.01, NOW, snapshot=picture.outgoing, picture=picture
    )


def test_the_verdict_names_availability_app_state_and_version():
    text = verdict(collection_of(parse_room(every_reply(), ALL, NOW)))
    assert text.startswith("Room answered: 2 outgoing requests, 2 pending, oldest downloading 2m09s")
    assert "3 incoming requests (2 pending)" in text
    assert "file transfer available" in text
    assert "app state ready" in text
    assert "Room version 5.0.2.17" in text


def test_the_verdict_says_why_file_transfer_is_unavailable():
    replies = {
        **every_reply(),
        AVAILABILITY_METHOD: ok(AVAILABILITY_METHOD, availability=2),
        APP_STATE_METHOD: ok(APP_STATE_METHOD, appState=2),
    }
    text = verdict(collection_of(parse_room(replies, ALL, NOW)))
    assert "file transfer waits for a login to a server" in text
    assert "app state login required" in text


def test_the_verdict_of_the_one_method_case_is_unchanged():
    picture = parse_room({OUTGOING_METHOD: OUTGOING}, (OUTGOING_METHOD,), NOW)
    assert (
        verdict(collection_of(picture))
        == "Room answered: 2 outgoing requests, 2 pending, oldest downloading 2m09s"
    )


def test_the_trace_summary_lists_what_is_known_and_what_failed():
    replies = {**every_reply(), APP_STATE_METHOD: refused(APP_STATE_METHOD)}
    summary = picture_summary(parse_room(replies, ALL, NOW))
    assert summary.startswith("2 outgoing requests, 2 pending, 0 malformed; 3 incoming requests, 2 pending")
    assert "file transfer available" in summary
    assert "version 5.0.2.17" in summary
    assert summary.endswith("no answer read from getAppState")
