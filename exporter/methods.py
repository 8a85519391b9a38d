"""The Room API methods a scrape asks, in one table: the client sends them, the parser reads their replies,
the emulator answers them, and `--collector.*`, a module's `collectors:` and `--help` are made from it.

The names are the Room API's own vocabulary (reference §4, §5), not code of either side, so this is the one
module the emulator shares with the client. It imports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OUTGOING_METHOD = "getOutgoingFilesRequests"
INCOMING_METHOD = "getIncomingFilesRequests"
AVAILABILITY_METHOD = "getFileTransferAvailability"
APP_STATE_METHOD = "getAppState"
SYSTEM_INFO_METHOD = "getSystemInfo"


@dataclass(frozen=True)
class RoomMethod:
    name: str
    collector: str | None
    """`--collector.NAME` and a module's `collectors:` key that turn the method off; None for the one method
    every scrape asks (it decides `trueconf_up`)."""
    tells: str
    """What its reply tells, for `--help`."""


METHODS: tuple[RoomMethod, ...] = (
    RoomMethod(OUTGOING_METHOD, None, "the Room's outgoing file requests"),
    RoomMethod(INCOMING_METHOD, "incoming", "the Room's incoming file requests"),
    RoomMethod(AVAILABILITY_METHOD, "availability", "whether file transfer is allowed"),
    RoomMethod(APP_STATE_METHOD, "app_state", "the Room's connection and call state"),
    RoomMethod(SYSTEM_INFO_METHOD, "system_info", "the Room's version (asked once per session)"),
)
"""Every method a scrape may ask, in the order a scrape sends them: getOutgoingFilesRequests first."""

OPTIONAL_METHODS: tuple[RoomMethod, ...] = tuple(method for method in METHODS if method.collector)
COLLECTORS: tuple[str, ...] = tuple(method.collector for method in OPTIONAL_METHODS if method.collector)
"""The collector names, all on by default."""


def methods_for(collectors: Mapping[str, bool]) -> tuple[str, ...]:
    """What a scrape asks: getOutgoingFilesRequests, then every optional method whose collector is not off."""
    return tuple(
        method.name
        for method in METHODS
        if method.collector is None or collectors.get(method.collector, True)
    )


def is_optional(name: object) -> bool:
    """True for a method a scrape asks only when its collector is on."""
    return any(method.name == name for method in OPTIONAL_METHODS)
