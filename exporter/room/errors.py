"""Why a collection failed: a small fixed set of reasons, each a value of the `reason` label."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Every reason a collection can fail; the exporter always exposes all of them (0 or 1)."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    AUTH = "auth"
    API = "api"
    PROTOCOL = "protocol"
    INTERNAL = "internal"
    """Not the Room: an exception the exporter did not expect (a bug); the log has its traceback."""


REASON_HINTS: dict[Reason, str] = {
    Reason.CONNECT: "check the target's host and port, and that the Room is running",
    Reason.TIMEOUT: "the Room did not answer in time; is the port the WebSocket port? or raise --timeout",
    Reason.AUTH: "the Room refused the PIN; check --pin-file (or that the Room has no PIN if none is given)",
    Reason.API: "the Room refused getOutgoingFilesRequests; it needs TrueConf Room 4.1.0 or later",
    Reason.PROTOCOL: "the Room's answer did not follow the API; is the target really a TrueConf Room?",
    Reason.INTERNAL: "a bug in the exporter, not the Room: please report it with the traceback it logged",
}
"""What a person should try for each reason, printed by `check`."""


class CollectionError(Exception):
    """A failed collection, classified. The message never contains the PIN."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"
