"""What the emulated Room holds: a fixed list of outgoing file requests from a JSON file, or a living one.

A scenario file is `{"outgoingFilesRequests": [...], ...}`; its entries are sent as they are, except two
directives that make tests independent of the wall clock and are stripped before sending:
`"_ageSeconds": N` sets `timestamp` to now - N in seconds, `"_ageMilliseconds": N` in milliseconds (the
unit the incoming side of the API uses). Optional keys: `notificationsBeforeReply` (how many events the
Room sends between a request and its reply, default 2) and `emptyRequestId` (reply with `requestId: ""`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

BUILTIN_SCENARIOS = ("doc-example",)
"""Scenario files shipped in the package, usable by name."""
DEMO = "demo"
"""The scenario name of the living Room (`living.LivingRoom`) rather than a fixed list."""


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the problem."""


@dataclass
class Scenario:
    """A fixed Room state loaded from JSON."""

    entries: list[Any] = field(default_factory=list)
    notifications_before_reply: int = 2
    empty_request_id: bool = False

    def outgoing_requests(self, now: float | None = None) -> list[Any]:
        """The list the Room sends, with the age directives turned into timestamps."""
        now = time.time() if now is None else now
        return [_render(entry, now) for entry in self.entries]


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
    notifications = document.get("notificationsBeforeReply", 2)
    if isinstance(notifications, bool) or not isinstance(notifications, int) or notifications < 0:
        raise ScenarioError(f"{origin}: 'notificationsBeforeReply' must be a whole number >= 0")
    return Scenario(
        entries=document["outgoingFilesRequests"],
        notifications_before_reply=notifications,
        empty_request_id=bool(document.get("emptyRequestId", False)),
    )


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name (`doc-example`), or a scenario file by path."""
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
