"""What the emulated Room holds: a fixed Room from a JSON scenario file, or a living one (`living.py`).

A scenario file is `{"outgoingFilesRequests": [...], ...}`. Its list entries are sent as they are, except two
directives that make tests independent of the wall clock and are stripped before sending: `"_ageSeconds": N`
sets `timestamp` to now - N in seconds, `"_ageMilliseconds": N` in milliseconds (the unit the incoming side
of the API uses). Optional keys, each with the default a healthy Room would show:

- `incomingFilesRequests`: the `getIncomingFilesRequests` list, with the same directives (default empty);
- `availability`: `getFileTransferAvailability`'s value, 0..3 (default 3, available);
- `appState`: `getAppState`'s value, 0..6 (default 3, connected and logged in), and `embeddedHttpPort`;
- `productInfo`: `getSystemInfo`'s version object (default a 5.0 Room), and `authInfo`, sent only while the
  app state says the Room is logged in to its server (3..6);
- `replyFields`: `{METHOD: {FIELD: VALUE}}` set on that method's reply over what the emulator would send (a
  value may be `null`; `"result": false` with an `error` makes the Room refuse it; a method the emulator does
  not know is answered `result: true` with these fields), and `omitFields`: `{METHOD: [FIELD, ...]}` left out
  of it. These two produce the ambiguities a real Room may show (reference §7);
- `notificationsBeforeReply`: how many events the Room sends between a request and its reply (default 2);
- `emptyRequestId`: reply with `requestId: ""` whatever the request said.

A Scenario may be changed while the emulator runs (tests do): every reply reads it afresh.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

BUILTIN_SCENARIOS = ("doc-example", "every-method")
"""Scenario files shipped in the package, usable by name."""
DEMO = "demo"
"""The scenario name of the living Room (`living.LivingRoom`) rather than a fixed list."""

AVAILABLE = 3
"""`getFileTransferAvailability`: 0 forbidden by server, 1 by licence, 2 until logged in, 3 available."""
READY = 3
"""`getAppState`: 3 is connected to the server and logged in (4 calling, 5 in a conference, 6 ending one)."""
LOGGED_IN_APP_STATES = frozenset({3, 4, 5, 6})
"""App states in which the Room is logged in to its server, so `getSystemInfo` carries `authInfo`."""
EMBEDDED_HTTP_PORT = 8766
"""The built-in HTTP server's default port (reference §1), as `getAppState` reports it."""
DEFAULT_PRODUCT_INFO = MappingProxyType({"major": 5, "minor": 0, "revision": 2, "build": 275})
"""A 5.0 Room's `productInfo` (the numbers after 5.0 are made up)."""
DEFAULT_AUTH_INFO = MappingProxyType({"peerId": "room@demo.trueconf", "peerDn": "Meeting room"})


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the problem."""


@dataclass
class Scenario:
    """A fixed Room state loaded from JSON (or built in code)."""

    entries: list[Any] = field(default_factory=list)
    """The `outgoingFilesRequests` entries, directives included."""
    notifications_before_reply: int = 2
    empty_request_id: bool = False
    incoming: list[Any] = field(default_factory=list)
    """The `incomingFilesRequests` entries, directives included."""
    availability: int = AVAILABLE
    app_state: int = READY
    embedded_http_port: int = EMBEDDED_HTTP_PORT
    product_info: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRODUCT_INFO))
    auth_info: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_AUTH_INFO))
    reply_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    omit_fields: dict[str, list[str]] = field(default_factory=dict)

    def outgoing_requests(self, now: float | None = None) -> list[Any]:
        """The list the Room sends, with the age directives turned into timestamps."""
        now = time.time() if now is None else now
        return [_render(entry, now) for entry in self.entries]

    def incoming_requests(self, now: float | None = None) -> list[Any]:
        """The incoming list the Room sends, with the age directives turned into timestamps."""
        now = time.time() if now is None else now
        return [_render(entry, now) for entry in self.incoming]


def _render(entry: Any, now: float) -> Any:
    if not isinstance(entry, dict) or not ({"_ageSeconds", "_ageMilliseconds"} & entry.keys()):
        return entry
    rendered = {k: v for k, v in entry.items() if not k.startswith("_age")}
    if "_ageSeconds" in entry:
        rendered["timestamp"] = int(now - entry["_ageSeconds"])
    else:
        rendered["timestamp"] = int(now * 1000 - entry["_ageMilliseconds"])
    return rendered


def scenario_from_document(document: Any, origin: str) -> Scenario:
    if not isinstance(document, dict) or not isinstance(document.get("outgoingFilesRequests"), list):
        raise ScenarioError(f"{origin}: expected an object with an 'outgoingFilesRequests' list")
    notifications = _whole_number(document, "notificationsBeforeReply", 2, origin)
    if notifications < 0:
        raise ScenarioError(f"{origin}: 'notificationsBeforeReply' must be a whole number >= 0")
    incoming = document.get("incomingFilesRequests", [])
    if not isinstance(incoming, list):
        raise ScenarioError(f"{origin}: 'incomingFilesRequests' must be a list")
    for key, entries in (
        ("outgoingFilesRequests", document["outgoingFilesRequests"]),
        ("incomingFilesRequests", incoming),
    ):
        _check_directives(entries, origin, key)
    return Scenario(
        entries=document["outgoingFilesRequests"],
        notifications_before_reply=notifications,
        empty_request_id=bool(document.get("emptyRequestId", False)),
        incoming=incoming,
        availability=_whole_number(document, "availability", AVAILABLE, origin),
        app_state=_whole_number(document, "appState", READY, origin),
        embedded_http_port=_whole_number(document, "embeddedHttpPort", EMBEDDED_HTTP_PORT, origin),
        product_info=_object(document, "productInfo", dict(DEFAULT_PRODUCT_INFO), origin),
        auth_info=_object(document, "authInfo", dict(DEFAULT_AUTH_INFO), origin),
        reply_fields=_reply_fields(document.get("replyFields", {}), origin),
        omit_fields=_omit_fields(document.get("omitFields", {}), origin),
    )


def _whole_number(document: dict[str, Any], key: str, default: int, origin: str) -> int:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{origin}: '{key}' must be a whole number")
    return value


def _object(document: dict[str, Any], key: str, default: dict[str, Any], origin: str) -> dict[str, Any]:
    value = document.get(key, default)
    if not isinstance(value, dict):
        raise ScenarioError(f"{origin}: '{key}' must be an object")
    return dict(value)


def _check_directives(entries: list[Any], origin: str, key: str) -> None:
    for entry in entries:
        if not isinstance(entry, dict):
            continue  # sent as it is: a scenario may hold a malformed entry on purpose
        for directive in ("_ageSeconds", "_ageMilliseconds"):
            age = entry.get(directive, 0)
            if isinstance(age, bool) or not isinstance(age, int | float):
                raise ScenarioError(f"{origin}: '{directive}' in '{key}' must be a number")


def _reply_fields(value: Any, origin: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(fields, dict) for fields in value.values()):
        raise ScenarioError(f"{origin}: 'replyFields' must map method names to objects of fields")
    return {method: dict(fields) for method, fields in value.items()}


def _omit_fields(value: Any, origin: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(
        isinstance(fields, list) and all(isinstance(f, str) for f in fields) for fields in value.values()
    ):
        raise ScenarioError(f"{origin}: 'omitFields' must map method names to lists of field names")
    return {method: list(fields) for method, fields in value.items()}


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name (`doc-example`, `every-method`), or a scenario file by path."""
    if name_or_path in BUILTIN_SCENARIOS:
        text = resources.files("exporter.emulator").joinpath(f"scenarios/{name_or_path}.json").read_text()
        return scenario_from_document(json.loads(text), name_or_path)
    path = Path(name_or_path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read the scenario file ({error.strerror})") from None
    except ValueError as error:
        raise ScenarioError(f"{path}: not valid JSON ({error})") from None
    return scenario_from_document(document, str(path))
