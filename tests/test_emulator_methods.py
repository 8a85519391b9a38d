"""The emulated Room itself, read with a raw WebSocket client (websocket-client), so that later tests can rely
on it: every method it answers and their scenario keys, pipelined requests, every fault mode, the login
counters, restarts on demand, the living demo Room and the demo fleet.

Nothing here goes through the exporter: what is asserted is what a Room following docs/room-api.md sends.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket

from exporter.emulator.faults import Fault
from exporter.emulator.fleet import FIRST_PORT, ROOMS, emulated_room
from exporter.emulator.living import AVAILABLE, NO_SERVER, UNTIL_LOGGED_IN, LivingRoom
from exporter.emulator.scenario import (
    BUILTIN_SCENARIOS,
    LOGGED_IN_APP_STATES,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_from_document,
)
from exporter.emulator.server import (
    CONFIG_PATH,
    FLOOD_NOTIFICATIONS,
    RunningEmulator,
)
from exporter.methods import (
    APP_STATE_METHOD,
    AVAILABILITY_METHOD,
    INCOMING_METHOD,
    OPTIONAL_METHODS,
    OUTGOING_METHOD,
    SYSTEM_INFO_METHOD,
)

OPTIONAL_NAMES = tuple(method.name for method in OPTIONAL_METHODS)

pytestmark = pytest.mark.loopback  # emulated Rooms or the server on loopback sockets

EVERY_METHOD = (OUTGOING_METHOD, *OPTIONAL_NAMES)
PIN = "8642"
MILLISECONDS = 1e11
"""A timestamp above this is milliseconds (reference §6)."""


class Client:
    """A raw WebSocket client of the emulated Room: what it sends is exactly what the test says."""

    def __init__(self, emulator: RunningEmulator, timeout: float = 5.0) -> None:
        assert emulator.ports is not None
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{emulator.ports.websocket}", timeout=timeout)
        self.events: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def send_together(self, messages: list[dict[str, Any]]) -> None:
        """Several requests in ONE write, as a pipelining client sends them."""
        frames = [websocket.ABNF.create_frame(json.dumps(m), websocket.ABNF.OPCODE_TEXT) for m in messages]
        self.ws.sock.sendall(b"".join(frame.format() for frame in frames))

    def auth(self, pin: str | None = None, request_id: str | None = "a") -> dict[str, Any]:
        message: dict[str, Any] = {"method": "auth", "type": "unsecured" if pin is None else "secured"}
        if pin is not None:
            message["credentials"] = pin
        if request_id is not None:
            message["requestId"] = request_id
        self.send(message)
        return self.replies(1)[0]

    def replies(self, count: int, timeout: float | None = None) -> list[dict[str, Any]]:
        """The next `count` replies in arrival order; notifications between them go to `events`."""
        if timeout is not None:
            self.ws.settimeout(timeout)
        replies: list[dict[str, Any]] = []
        while len(replies) < count:
            message = json.loads(self.ws.recv())
            if message.get("method") == "event":
                assert "requestId" not in message and "result" not in message, message
                self.events.append(message)
            else:
                replies.append(message)
        return replies

    def ask(self, *methods: str) -> dict[str, dict[str, Any]]:
        """Ask `methods` together (requestId = the method name) and return the replies by requestId."""
        self.send_together([{"method": m, "requestId": m} for m in methods])
        return {reply["requestId"]: reply for reply in self.replies(len(methods))}

    def nothing_within(self, seconds: float) -> bool:
        """True when no reply (notifications aside) arrives within `seconds`, the connection still open."""
        self.ws.settimeout(seconds)
        try:
            self.replies(1)
        except websocket.WebSocketTimeoutException:
            return True
        return False

    def close(self) -> None:
        self.ws.close(timeout=0.2)


@pytest.fixture
def start(room: Callable[..., RunningEmulator]) -> Callable[..., RunningEmulator]:
    """`start(scenario, living=None, **EmulatorSettings fields)`: conftest's `room`, every method's scenario
    by default."""

    def make(scenario: Scenario | str = "every-method", **options: Any) -> RunningEmulator:
        return room(scenario, **options)

    return make


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """`connect(emulator)`: a raw client, closed at the end of the test."""
    clients: list[Client] = []

    def make(emulator: RunningEmulator, timeout: float = 5.0) -> Client:
        client = Client(emulator, timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            client.close()


def logged_in(connect: Callable[..., Client], emulator: RunningEmulator, pin: str | None = None) -> Client:
    client = connect(emulator)
    assert client.auth(pin)["result"] is True
    return client


# --- the methods --------------------------------------------------------------------------------------------


def test_every_method_answers_as_the_reference_shows(start, connect):
    client = logged_in(connect, start("every-method"))
    before = time.time()
    replies = client.ask(*EVERY_METHOD)
    for method, reply in replies.items():
        assert (reply["method"], reply["requestId"], reply["result"]) == (method, method, True)
        assert "error" not in reply

    outgoing = replies[OUTGOING_METHOD]["outgoingFilesRequests"]
    assert sorted(e["status"] for e in outgoing) == [0, 1, 2, 3]
    assert all(before - 1300 < e["timestamp"] < before for e in outgoing), "seconds"
    assert all("_ageSeconds" not in e for e in outgoing)

    incoming = replies[INCOMING_METHOD]["incomingFilesRequests"]
    assert sorted(e["status"] for e in incoming) == [0, 1, 2, 3]
    assert all(e["timestamp"] > MILLISECONDS for e in incoming), "milliseconds, as the reference shows"
    assert all(before * 1000 - 1_000_000 < e["timestamp"] < before * 1000 for e in incoming)
    assert all("fileId" not in e and {"size", "peerId", "peerDn"} <= e.keys() for e in incoming)
    assert sum("confId" in e for e in incoming) == 1

    assert replies[AVAILABILITY_METHOD]["availability"] == 3
    assert replies[APP_STATE_METHOD]["appState"] == 3
    assert replies[APP_STATE_METHOD]["embeddedHttpPort"] == 8766
    info = replies[SYSTEM_INFO_METHOD]
    assert info["productInfo"] == {"major": 5, "minor": 0, "revision": 2, "build": 275}
    assert info["authInfo"] == {"peerId": "room@some.server", "peerDn": "Meeting room"}


def test_a_scenario_without_the_new_keys_gets_a_healthy_rooms_defaults(start, connect):
    client = logged_in(connect, start("doc-example"))
    replies = client.ask(*EVERY_METHOD)
    assert len(replies[OUTGOING_METHOD]["outgoingFilesRequests"]) == 2
    assert replies[INCOMING_METHOD]["incomingFilesRequests"] == []
    assert replies[AVAILABILITY_METHOD]["availability"] == 3
    assert replies[APP_STATE_METHOD]["appState"] == 3
    version = replies[SYSTEM_INFO_METHOD]["productInfo"]
    assert (version["major"], version["minor"]) == (5, 0)
    assert {"revision", "build"} <= version.keys()
    assert "authInfo" in replies[SYSTEM_INFO_METHOD]


def test_the_request_id_is_echoed_or_empty(start, connect):
    emulator = start("doc-example")
    client = connect(emulator)
    assert client.auth(request_id=None)["requestId"] == ""
    client.send({"method": APP_STATE_METHOD})
    client.send({"method": APP_STATE_METHOD, "requestId": "x-17"})
    assert [r["requestId"] for r in client.replies(2)] == ["", "x-17"]
    emulator.room.scenario.empty_request_id = True
    client.send({"method": APP_STATE_METHOD, "requestId": "x-18"})
    assert client.replies(1)[0]["requestId"] == ""


@pytest.mark.parametrize("method", ["getFileTransferHistory", "noSuchMethod", 7, ["getAppState"]], ids=str)
def test_an_unknown_method_gets_result_false(start, connect, method):
    client = logged_in(connect, start("doc-example"))
    client.send({"method": method, "requestId": "u"})
    [reply] = client.replies(1)
    assert (reply["method"], reply["requestId"], reply["result"]) == (method, "u", False)
    assert isinstance(reply["error"], str)
    assert isinstance(reply["resultCode"], int)
    assert client.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True, "the connection still works"


def test_requests_before_auth_are_refused_and_a_wrong_pin_is_the_documented_failure(start, connect):
    emulator = start("doc-example", pin=PIN)
    client = connect(emulator)
    client.send({"method": APP_STATE_METHOD, "requestId": "early"})
    [early] = client.replies(1)
    assert (early["requestId"], early["result"]) == ("early", False)
    refused = client.auth("0000")
    assert (refused["result"], refused["resultCode"]) == (False, 3)
    assert "token" not in refused
    accepted = client.auth(PIN)
    assert accepted["result"] is True
    assert {"previleges", "token", "tokenForHttpServer"} <= accepted.keys()


def test_pipelined_requests_are_each_answered_in_request_order(start, connect):
    scenario = load_scenario("every-method")
    scenario.notifications_before_reply = 3
    client = logged_in(connect, start(scenario))
    requests = [{"method": m, "requestId": str(n)} for n, m in enumerate(EVERY_METHOD * 3)]
    client.send_together(requests)
    replies = client.replies(len(requests))
    assert [r["requestId"] for r in replies] == [r["requestId"] for r in requests]
    assert [r["method"] for r in replies] == [r["method"] for r in requests]
    assert len(client.events) == 3 * 3, "each getOutgoingFilesRequests reply follows its notifications"


def test_auth_and_requests_in_one_write_are_answered_auth_first(start, connect):
    client = connect(start("doc-example", pin=PIN))
    auth = {"method": "auth", "type": "secured", "credentials": PIN, "requestId": "0"}
    client.send_together([auth, *({"method": m, "requestId": m} for m in EVERY_METHOD)])
    replies = client.replies(1 + len(EVERY_METHOD))
    assert [r["requestId"] for r in replies] == ["0", *EVERY_METHOD]
    assert all(r["result"] is True for r in replies)


def test_notifications_arrive_between_a_request_and_its_reply(start, connect):
    scenario = load_scenario("doc-example")
    scenario.notifications_before_reply = 4
    client = logged_in(connect, start(scenario))
    client.send({"method": OUTGOING_METHOD, "requestId": "1"})
    client.replies(1)
    assert [e["event"] for e in client.events] == [
        "outgoingFileRequestUploadingProgress",
        "fileRequestStatusChanged",
    ] * 2
    assert all("fileSize" in e and "size" not in e for e in client.events)


# --- scenario keys ------------------------------------------------------------------------------------------


def test_scenario_keys_set_what_the_optional_methods_answer(start, connect, scenario_file):
    path = scenario_file(
        {
            "outgoingFilesRequests": [],
            "incomingFilesRequests": [
                {"fileRequestId": "i1", "status": 1, "size": 10, "_ageMilliseconds": 90_000, "peerId": "p@x"},
                {"fileRequestId": "i2", "status": 2, "size": 20, "_ageSeconds": 30, "confId": "c@x#vcs"},
                {"fileRequestId": "i3", "status": 3, "size": 30, "timestamp": 1659251271000},
            ],
            "availability": 1,
            "appState": 2,
            "embeddedHttpPort": 18766,
            "productInfo": {"major": 4, "minor": 3, "revision": 0, "build": 101},
        }
    )
    client = logged_in(connect, start(str(path)))
    now = time.time()
    replies = client.ask(*EVERY_METHOD)
    [waiting, downloading, processed] = replies[INCOMING_METHOD]["incomingFilesRequests"]
    assert now * 1000 - 92_000 < waiting["timestamp"] < now * 1000 - 88_000
    assert now - 32 < downloading["timestamp"] < now - 28, "_ageSeconds gives seconds, on either side"
    assert processed["timestamp"] == 1659251271000
    assert replies[AVAILABILITY_METHOD]["availability"] == 1
    assert (replies[APP_STATE_METHOD]["appState"], replies[APP_STATE_METHOD]["embeddedHttpPort"]) == (
        2,
        18766,
    )
    info = replies[SYSTEM_INFO_METHOD]
    assert info["productInfo"] == {"major": 4, "minor": 3, "revision": 0, "build": 101}
    assert "authInfo" not in info, "app state 2: not logged in to its server"


def test_reply_fields_and_omit_fields_produce_what_a_real_room_may_send(start, connect):
    scenario = scenario_from_document(
        {
            "outgoingFilesRequests": [{"status": 1, "fileSize": 5, "_ageSeconds": 3}],
            "replyFields": {
                OUTGOING_METHOD: {"error": "a success that carries an error key"},
                INCOMING_METHOD: {"incomingFilesRequests": None},
                AVAILABILITY_METHOD: {"available": True},
                APP_STATE_METHOD: {"result": False, "error": "Not supported", "resultCode": 2},
                "getConnected": {"state": 2},
            },
            "omitFields": {AVAILABILITY_METHOD: ["availability"], SYSTEM_INFO_METHOD: ["productInfo"]},
        },
        "test",
    )
    client = logged_in(connect, start(scenario))
    replies = client.ask(*EVERY_METHOD, "getConnected")
    outgoing = replies[OUTGOING_METHOD]
    assert (outgoing["result"], outgoing["error"]) == (True, "a success that carries an error key")
    assert outgoing["outgoingFilesRequests"][0]["fileSize"] == 5
    assert "size" not in outgoing["outgoingFilesRequests"][0]
    assert replies[INCOMING_METHOD]["result"] is True
    assert replies[INCOMING_METHOD]["incomingFilesRequests"] is None
    availability = replies[AVAILABILITY_METHOD]
    assert (availability["result"], availability["available"]) == (True, True)
    assert "availability" not in availability
    assert (replies[APP_STATE_METHOD]["result"], replies[APP_STATE_METHOD]["error"]) == (
        False,
        "Not supported",
    )
    assert "productInfo" not in replies[SYSTEM_INFO_METHOD]
    assert (replies["getConnected"]["result"], replies["getConnected"]["state"]) == (True, 2)


def test_a_scenario_changed_while_the_room_runs_is_answered_at_the_next_request(start, connect):
    emulator = start("doc-example")
    client = logged_in(connect, emulator)
    assert client.ask(AVAILABILITY_METHOD)[AVAILABILITY_METHOD]["availability"] == 3
    emulator.room.scenario.availability = 0
    emulator.room.scenario.app_state = 5
    replies = client.ask(AVAILABILITY_METHOD, APP_STATE_METHOD)
    assert (replies[AVAILABILITY_METHOD]["availability"], replies[APP_STATE_METHOD]["appState"]) == (0, 5)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"incomingFilesRequests": []}, "expected an object with an 'outgoingFilesRequests' list"),
        (
            {"outgoingFilesRequests": [], "incomingFilesRequests": {}},
            "'incomingFilesRequests' must be a list",
        ),
        ({"outgoingFilesRequests": [], "availability": "3"}, "'availability' must be a whole number"),
        ({"outgoingFilesRequests": [], "appState": True}, "'appState' must be a whole number"),
        ({"outgoingFilesRequests": [], "productInfo": "5.0"}, "'productInfo' must be an object"),
        ({"outgoingFilesRequests": [], "notificationsBeforeReply": -1}, "'notificationsBeforeReply'"),
        ({"outgoingFilesRequests": [{"_ageSeconds": "1"}]}, "'_ageSeconds' in 'outgoingFilesRequests'"),
        ({"outgoingFilesRequests": [], "incomingFilesRequests": [{"_ageMilliseconds": None}]}, "'_ageMilli"),
        ({"outgoingFilesRequests": [], "replyFields": {"getAppState": 3}}, "'replyFields' must map"),
        ({"outgoingFilesRequests": [], "omitFields": {"getAppState": "x"}}, "'omitFields' must map"),
    ],
)
def test_a_scenario_that_cannot_be_used_says_why(document, message):
    with pytest.raises(ScenarioError, match=r"^where\.json: ") as caught:
        scenario_from_document(document, "where.json")
    assert message in str(caught.value)


def test_every_builtin_scenario_loads_and_doc_example_is_still_the_documentations_reply():
    for name in BUILTIN_SCENARIOS:
        load_scenario(name)
    doc = load_scenario("doc-example")
    assert [e["timestamp"] for e in doc.outgoing_requests()] == [1659251271, 1659251384]
    assert doc.incoming == []
    assert (doc.availability, doc.app_state) == (3, 3)


# --- faults: the new ones -----------------------------------------------------------------------------------


def test_optional_unknown_refuses_the_optional_methods_and_answers_outgoing(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.OPTIONAL_UNKNOWN))
    replies = client.ask(*EVERY_METHOD)
    assert len(replies[OUTGOING_METHOD]["outgoingFilesRequests"]) == 4
    for method in OPTIONAL_NAMES:
        assert (replies[method]["method"], replies[method]["result"]) == (method, False)
        assert "Unknown method" in replies[method]["error"]


def test_optional_silent_never_answers_the_optional_methods(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.OPTIONAL_SILENT))
    client.send_together([{"method": m, "requestId": m} for m in (*OPTIONAL_NAMES, OUTGOING_METHOD)])
    [reply] = client.replies(1, timeout=2)
    assert reply["requestId"] == OUTGOING_METHOD, "the outgoing reply is not held behind the silent ones"
    assert client.nothing_within(0.5)
    assert client.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True, "the connection still works"


def test_stalled_reply_holds_outgoing_back_while_optional_methods_answer_at_once(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.STALLED_REPLY, slow_reply_seconds=1.0))
    started = time.monotonic()
    client.send_together([{"method": m, "requestId": m} for m in EVERY_METHOD])
    first = client.replies(len(OPTIONAL_NAMES), timeout=3)
    assert [r["requestId"] for r in first] == list(OPTIONAL_NAMES)
    assert time.monotonic() - started < 0.8
    [outgoing] = client.replies(1, timeout=3)
    assert time.monotonic() - started >= 1.0
    assert (outgoing["requestId"], len(outgoing["outgoingFilesRequests"])) == (OUTGOING_METHOD, 4)


def test_slow_reply_holds_back_every_reply_behind_the_outgoing_one(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.SLOW_REPLY, slow_reply_seconds=0.6))
    started = time.monotonic()
    replies = client.ask(*EVERY_METHOD)
    assert time.monotonic() - started >= 0.6
    assert set(replies) == set(EVERY_METHOD)


def test_the_restart_fault_drops_every_connection_periodically(start, connect):
    emulator = start("doc-example", fault=Fault.RESTART, restart_seconds=0.4)
    client = logged_in(connect, emulator)
    client.ws.settimeout(3)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        client.replies(1)  # nothing is asked: the connection just goes, without a close frame
    assert emulator.room.restarts >= 1
    again = logged_in(connect, emulator)
    assert again.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True


def test_restart_drops_every_connection_on_demand_and_the_room_lives_on(start, connect):
    emulator = start("doc-example", pin=PIN)
    clients = [logged_in(connect, emulator, PIN) for _ in range(2)]
    unauthorised = connect(emulator)
    assert emulator.restart() == 3
    for client in (*clients, unauthorised):
        client.ws.settimeout(3)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            client.ws.recv()
    assert emulator.room.restarts == 1
    again = logged_in(connect, emulator, PIN)
    assert len(again.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["outgoingFilesRequests"]) == 2
    assert emulator.logins_per_connection == [1, 1, 0, 1]


def test_a_graceful_restart_sends_close_code_1001(start, connect):
    emulator = start("doc-example")
    client = logged_in(connect, emulator)
    assert emulator.restart(graceful=True) == 1
    client.ws.settimeout(3)
    opcode, frame = client.ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1001


def test_half_open_answers_one_scrape_then_never_again_and_never_closes(start, connect):
    emulator = start("doc-example", fault=Fault.HALF_OPEN)
    client = logged_in(connect, emulator)
    assert client.ask(OUTGOING_METHOD, APP_STATE_METHOD)[OUTGOING_METHOD]["result"] is True
    client.send_together([{"method": OUTGOING_METHOD, "requestId": "2"}])
    assert client.nothing_within(0.6), "no reply and no close: the connection is half-open"
    assert emulator.open_connections == 1
    fresh = logged_in(connect, emulator)
    assert fresh.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True, "a new connection works"


def test_sever_makes_every_open_connection_half_open_on_demand(start, connect):
    emulator = start("doc-example")
    client = logged_in(connect, emulator)
    assert emulator.sever() == 1
    client.send({"method": OUTGOING_METHOD, "requestId": "1"})
    assert client.nothing_within(0.5)
    assert logged_in(connect, emulator).ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True
    assert emulator.requests[OUTGOING_METHOD] == 2, "the severed connection still reads what it is sent"


def test_reordered_replies_answer_requests_sent_together_last_first(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.REORDERED_REPLIES))
    client.send_together([{"method": m, "requestId": m} for m in EVERY_METHOD])
    replies = client.replies(len(EVERY_METHOD), timeout=3)
    assert [r["requestId"] for r in replies] == list(reversed(EVERY_METHOD))
    assert all(r["method"] == r["requestId"] and r["result"] is True for r in replies)


def test_file_transfer_forbidden_answers_availability_0(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.FILE_TRANSFER_FORBIDDEN))
    replies = client.ask(*EVERY_METHOD)
    assert replies[AVAILABILITY_METHOD]["availability"] == 0
    assert all(reply["result"] is True for reply in replies.values())


def test_old_room_knows_no_file_transfer_method_and_says_it_is_4_0(start, connect):
    client = logged_in(connect, start("every-method", fault=Fault.OLD_ROOM))
    replies = client.ask(*EVERY_METHOD)
    for method in (OUTGOING_METHOD, INCOMING_METHOD, AVAILABILITY_METHOD):
        assert replies[method]["result"] is False, method
    assert replies[APP_STATE_METHOD]["result"] is True
    assert replies[SYSTEM_INFO_METHOD]["productInfo"]["major"] == 4
    assert client.events == [], "no transfer notifications from a Room without file transfer"


# --- faults: the older ones, as a raw client sees them ------------------------------------------------------


def raw_reply_to_outgoing(emulator: RunningEmulator) -> tuple[int, bytes]:
    """auth, then getOutgoingFilesRequests: the first non-notification frame's opcode and payload."""
    client = Client(emulator, timeout=3)
    try:
        assert client.auth()["result"] is True
        client.send({"method": OUTGOING_METHOD, "requestId": "1"})
        while True:
            opcode, data = client.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT and b'"method": "event"' in data[:40]:
                continue
            return opcode, data
    finally:
        client.ws.abort()


def check_plain_room(emulator: RunningEmulator) -> None:
    data = raw_reply_to_outgoing(emulator)[1]
    assert json.loads(data)["result"] is True


def check_http_instead_of_websocket(emulator: RunningEmulator) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        Client(emulator, timeout=3)
    assert caught.value.status_code == 200


def check_no_handshake(emulator: RunningEmulator) -> None:
    with pytest.raises((websocket.WebSocketTimeoutException, TimeoutError)):
        Client(emulator, timeout=0.5)


def check_silent(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    client.send({"method": "auth", "type": "unsecured"})
    assert client.nothing_within(0.5)
    client.ws.abort()


def check_no_auth_reply(emulator: RunningEmulator) -> None:
    check_silent(emulator)
    assert emulator.logins == 1, "the auth was read"


def check_slow_reply(emulator: RunningEmulator) -> None:
    started = time.monotonic()
    check_plain_room(emulator)
    assert time.monotonic() - started >= emulator.room.settings.slow_reply_seconds


def check_endless_notifications(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    assert client.auth()["result"] is True
    client.send({"method": OUTGOING_METHOD, "requestId": "1"})
    for _ in range(500):
        assert json.loads(client.ws.recv())["method"] == "event"
    client.ws.abort()


def check_old_room(emulator: RunningEmulator) -> None:
    data = raw_reply_to_outgoing(emulator)[1]
    assert json.loads(data)["result"] is False


def check_not_json(emulator: RunningEmulator) -> None:
    data = raw_reply_to_outgoing(emulator)[1]
    with pytest.raises(ValueError):
        json.loads(data)


def check_not_object(emulator: RunningEmulator) -> None:
    assert isinstance(json.loads(raw_reply_to_outgoing(emulator)[1]), list)


def check_binary_frame(emulator: RunningEmulator) -> None:
    opcode, data = raw_reply_to_outgoing(emulator)
    assert opcode == websocket.ABNF.OPCODE_BINARY
    assert json.loads(data)["result"] is True


def check_deep_json(emulator: RunningEmulator) -> None:
    assert raw_reply_to_outgoing(emulator)[1].startswith(b"[" * 1000)


def check_missing_list(emulator: RunningEmulator) -> None:
    reply = json.loads(raw_reply_to_outgoing(emulator)[1])
    assert reply["result"] is True
    assert "outgoingFilesRequests" not in reply


def check_connection_ends_before_a_reply(emulator: RunningEmulator) -> None:
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        opcode, _ = raw_reply_to_outgoing(emulator)
        assert opcode != websocket.ABNF.OPCODE_CLOSE, "a close frame instead of a reply"
        raise AssertionError("a reply came")


def check_close_before_reply(emulator: RunningEmulator) -> None:
    opcode, _ = raw_reply_to_outgoing(emulator)
    assert opcode == websocket.ABNF.OPCODE_CLOSE


def check_huge_reply(emulator: RunningEmulator) -> None:
    data = raw_reply_to_outgoing(emulator)[1]
    assert len(data) >= emulator.room.settings.huge_reply_bytes * 0.9
    assert len(json.loads(data)["outgoingFilesRequests"]) > 100


def check_notification_flood(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=5)
    assert client.auth()["result"] is True
    client.send({"method": OUTGOING_METHOD, "requestId": "1"})
    [reply] = client.replies(1)
    assert reply["result"] is True
    assert len(client.events) == FLOOD_NOTIFICATIONS
    client.ws.abort()


def check_bad_config_json(emulator: RunningEmulator) -> None:
    assert emulator.ports is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{emulator.ports.web}{CONFIG_PATH}", timeout=3) as answer:
        document = json.load(answer)
    assert "port" not in document["config"]["websocket"]
    check_plain_room(emulator)


def check_restart(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    assert client.auth()["result"] is True
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        client.ws.recv()


def check_optional_methods(expected: Callable[[dict[str, dict[str, Any]]], bool]) -> Callable[..., None]:
    def check(emulator: RunningEmulator) -> None:
        client = Client(emulator, timeout=3)
        assert client.auth()["result"] is True
        client.send_together([{"method": m, "requestId": m} for m in EVERY_METHOD])
        replies = {}
        with contextlib.suppress(websocket.WebSocketTimeoutException):
            for _ in EVERY_METHOD:
                [reply] = client.replies(1, timeout=1.5)
                replies[reply["requestId"]] = reply
        client.ws.abort()
        assert replies[OUTGOING_METHOD]["result"] is True
        assert expected(replies), replies

    return check


def check_no_notifications(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    assert client.auth()["result"] is True
    assert client.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True
    client.ws.abort()
    assert client.events == [], "not even the notifications before a reply"


def check_repeated_notifications(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    assert client.auth()["result"] is True
    assert client.ask(OUTGOING_METHOD)[OUTGOING_METHOD]["result"] is True
    client.ws.abort()
    events = client.events
    assert len(events) == 2 * 3
    assert events[0] == events[1] == events[2] != events[3] == events[4] == events[5]


def check_fleeting_requests(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    assert client.auth()["result"] is True
    replies = client.ask(OUTGOING_METHOD, INCOMING_METHOD)
    client.ws.abort()
    assert sorted(e["status"] for e in replies[OUTGOING_METHOD]["outgoingFilesRequests"]) == [1, 2]
    assert sorted(e["status"] for e in replies[INCOMING_METHOD]["incomingFilesRequests"]) == [1, 2]


def check_notification_storm(emulator: RunningEmulator) -> None:
    client = Client(emulator, timeout=3)
    assert client.auth()["result"] is True
    assert json.loads(client.ws.recv())["method"] == "event", "unasked"
    assert client.ask(APP_STATE_METHOD)[APP_STATE_METHOD]["result"] is True
    client.ws.abort()
    assert client.events


RAW_CHECKS: dict[Fault, Callable[[RunningEmulator], None]] = {
    Fault.NONE: check_plain_room,
    Fault.HTTP_INSTEAD_OF_WEBSOCKET: check_http_instead_of_websocket,
    Fault.SILENT: check_silent,
    Fault.NO_AUTH_REPLY: check_no_auth_reply,
    Fault.SLOW_REPLY: check_slow_reply,
    Fault.OLD_ROOM: check_old_room,
    Fault.NOT_JSON: check_not_json,
    Fault.NOT_OBJECT: check_not_object,
    Fault.BINARY_FRAME: check_binary_frame,
    Fault.DEEP_JSON: check_deep_json,
    Fault.MISSING_LIST: check_missing_list,
    Fault.CLOSE_MID_REPLY: check_connection_ends_before_a_reply,
    Fault.CLOSE_BEFORE_REPLY: check_close_before_reply,
    Fault.BAD_CONFIG_JSON: check_bad_config_json,
    Fault.NO_HANDSHAKE: check_no_handshake,
    Fault.HUGE_REPLY: check_huge_reply,
    Fault.HUGE_FRAGMENTED_REPLY: check_huge_reply,
    Fault.NOTIFICATION_FLOOD: check_notification_flood,
    Fault.ENDLESS_NOTIFICATIONS: check_endless_notifications,
    Fault.OPTIONAL_UNKNOWN: check_optional_methods(
        lambda replies: all(replies[m]["result"] is False for m in OPTIONAL_NAMES)
    ),
    Fault.OPTIONAL_SILENT: check_optional_methods(lambda replies: set(replies) == {OUTGOING_METHOD}),
    Fault.STALLED_REPLY: check_optional_methods(lambda replies: list(replies)[-1] == OUTGOING_METHOD),
    Fault.RESTART: check_restart,
    Fault.HALF_OPEN: check_optional_methods(lambda replies: len(replies) == len(EVERY_METHOD)),
    Fault.REORDERED_REPLIES: check_optional_methods(
        lambda replies: next(iter(replies)) == SYSTEM_INFO_METHOD
    ),
    Fault.FILE_TRANSFER_FORBIDDEN: check_optional_methods(
        lambda replies: replies[AVAILABILITY_METHOD]["availability"] == 0
    ),
    Fault.NO_NOTIFICATIONS: check_no_notifications,
    Fault.REPEATED_NOTIFICATIONS: check_repeated_notifications,
    Fault.FLEETING_REQUESTS: check_fleeting_requests,
    Fault.NOTIFICATION_STORM: check_notification_storm,
}
"""What a raw client sees of each fault mode: a new fault needs its row here (the test below says so)."""


@pytest.mark.parametrize("fault", list(Fault), ids=str)
def test_every_fault_mode_does_what_it_says_to_a_raw_client(start, fault):
    assert fault in RAW_CHECKS, f"the fault {fault} has no raw check in RAW_CHECKS"
    emulator = start(
        "every-method",
        fault=fault,
        slow_reply_seconds=0.5,
        restart_seconds=0.3,
        huge_reply_bytes=2 * 1024 * 1024,
    )
    RAW_CHECKS[fault](emulator)


# --- counters -----------------------------------------------------------------------------------------------


def test_logins_and_requests_are_counted_per_connection(start, connect):
    emulator = start("doc-example", pin=PIN)
    once = logged_in(connect, emulator, PIN)
    once.ask(OUTGOING_METHOD, APP_STATE_METHOD)
    once.ask(OUTGOING_METHOD)
    twice = logged_in(connect, emulator, PIN)
    assert twice.auth(PIN)["result"] is True
    refused = connect(emulator)
    assert refused.auth("0000")["result"] is False
    assert emulator.logins_per_connection == [1, 2, 1]
    assert emulator.logins == 4
    assert emulator.requests[OUTGOING_METHOD] == 2
    assert emulator.requests[APP_STATE_METHOD] == 1
    assert emulator.room.records[0].requests == {"auth": 1, OUTGOING_METHOD: 2, APP_STATE_METHOD: 1}
    assert emulator.open_connections == 3
    once.close()
    deadline = time.monotonic() + 3
    while emulator.open_connections != 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the poll interval of this bounded wait
    assert emulator.open_connections == 2
    assert not emulator.room.records[0].open


# --- the living demo Room -----------------------------------------------------------------------------------


def live(
    room: LivingRoom, start: float, seconds: float, step: float
) -> Iterator[tuple[float, list[dict[str, Any]]]]:
    """Advance `room` from `start` for `seconds`, `step` at a time: each moment with the events it gave."""
    now = start
    while now < start + seconds:
        now += step
        yield now, room.advance(now)


def test_the_living_rooms_incoming_requests_live_their_life():
    room = LivingRoom()
    t0 = 1_700_000_000.0
    room.start(t0)
    statuses: set[int] = set()
    sources: set[bool] = set()
    events: list[dict[str, Any]] = []
    for now, happened in live(room, t0, 4 * 3600, 5.0):
        events += happened
        for entry in room.incoming_requests():
            statuses.add(entry["status"])
            sources.add("confId" in entry)
            assert entry["timestamp"] > MILLISECONDS
            assert entry["timestamp"] <= now * 1000
            assert "fileId" not in entry
            assert {"fileRequestId", "fileName", "size", "peerId", "peerDn"} <= entry.keys()
    assert statuses == {0, 1, 2, 3}
    assert sources == {True, False}
    names = {e["event"] for e in events}
    assert {"receivedFileRequest", "incomingFileRequestDownloadingProgress"} <= names
    incoming_changes = [
        e for e in events if e["event"] == "fileRequestStatusChanged" and e["directionType"] == 0
    ]
    assert incoming_changes
    assert all(e["timestamp"] > MILLISECONDS for e in incoming_changes)
    assert len(room.incoming) < 200, "finished requests leave the list"


def test_the_living_rooms_app_state_and_availability_change_over_a_day():
    room = LivingRoom()
    t0 = 1_700_000_000.0
    room.start(t0)
    states_announced: set[int] = set()
    unavailable_since: float | None = None
    longest_outage = 0.0
    seen_availability: set[int] = set()
    for now, events in live(room, t0, 24 * 3600, 5.0):
        for event in events:
            if event["event"] == "appStateChanged":
                states_announced.add(event["appState"])
            if event["event"] == "fileTransferAvailabilityChanged":
                assert event["availability"] == room.availability
        seen_availability.add(room.availability)
        assert room.availability == (AVAILABLE if room.app_state in LOGGED_IN_APP_STATES else UNTIL_LOGGED_IN)
        if room.availability != AVAILABLE:
            unavailable_since = now if unavailable_since is None else unavailable_since
            longest_outage = max(longest_outage, now - unavailable_since)
        else:
            unavailable_since = None
    assert states_announced == set(range(7)), "every app state, ending a conference included"
    assert seen_availability == {AVAILABLE, UNTIL_LOGGED_IN}
    assert 0 < longest_outage < 15 * 60, "an outage never lasts as long as the alert's 15 minutes"


def test_the_living_room_creates_no_request_while_it_is_off_its_server():
    room = LivingRoom()
    t0 = 1_700_000_000.0
    room.start(t0)
    room.app_state, room.state_until = NO_SERVER, t0 + 3600
    known = {r.entry["fileRequestId"] for r in (*room.requests, *room.incoming)}
    list(live(room, t0, 600, 1.0))
    assert {r.entry["fileRequestId"] for r in (*room.requests, *room.incoming)} <= known
    room.state_until = t0 + 601
    list(live(room, t0 + 600, 600, 1.0))
    assert {r.entry["fileRequestId"] for r in (*room.requests, *room.incoming)} - known, "requests again"


def test_the_living_room_is_served_with_every_method(start, connect):
    living = LivingRoom()
    living.start(time.time())
    client = logged_in(connect, start(living=living))
    replies = client.ask(*EVERY_METHOD)
    assert replies[OUTGOING_METHOD]["outgoingFilesRequests"]
    assert replies[INCOMING_METHOD]["incomingFilesRequests"]
    assert all(e["timestamp"] > MILLISECONDS for e in replies[INCOMING_METHOD]["incomingFilesRequests"])
    assert replies[AVAILABILITY_METHOD]["availability"] == living.availability
    assert replies[APP_STATE_METHOD]["appState"] == living.app_state
    assert replies[SYSTEM_INFO_METHOD]["productInfo"]["major"] == 5


# --- the demo fleet -----------------------------------------------------------------------------------------


def test_the_demo_fleet_is_issue_11s_list_on_consecutive_ports():
    assert sorted(room.port() for room in ROOMS) == list(range(FIRST_PORT, FIRST_PORT + len(ROOMS)))
    assert len({room.name for room in ROOMS}) == len(ROOMS)
    lives = " ".join(room.life for room in ROOMS)
    for life in ("healthy", "stuck waiting", "fail", "offline", "forbidden", "without the optional methods"):
        assert life in lives


def demo_room(name: str) -> RunningEmulator:
    [room] = [r for r in ROOMS if r.name == name]
    emulated = emulated_room(room)
    emulated.settings.websocket_port = 0  # the demo's own port may be taken by a running demo
    emulator = RunningEmulator(emulated)
    emulator.start()
    return emulator


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("forbidden", lambda r: r[AVAILABILITY_METHOD]["availability"] == 0
         and r[OUTGOING_METHOD]["outgoingFilesRequests"] == []),
        ("old-room", lambda r: all(r[m]["result"] is False for m in OPTIONAL_NAMES)
         and r[OUTGOING_METHOD]["result"] is True),
        ("reception", lambda r: all(reply["result"] is True for reply in r.values())
         and r[INCOMING_METHOD]["incomingFilesRequests"]),
    ],
)  # fmt: skip
def test_the_demo_rooms_answer_as_their_life_says(connect, name, check):
    emulator = demo_room(name)
    try:
        client = logged_in(connect, emulator)
        replies = client.ask(*EVERY_METHOD)
        client.close()
        assert check(replies), replies
    finally:
        emulator.stop()
