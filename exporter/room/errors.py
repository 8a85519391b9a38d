"""Why a collection failed: a small fixed set of reasons, each a value of the `reason` label."""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType


class Reason(StrEnum):
    """Every reason a collection can fail; the exporter always exposes all of them (0 or 1)."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    AUTH = "auth"
    API = "api"
    PROTOCOL = "protocol"
    INTERNAL = "internal"
    """Not the Room: an exception the exporter did not expect (a bug); the log has its traceback."""


REASON_HINTS = MappingProxyType(
    {
        Reason.CONNECT: "check the target's host and port, and that the Room is running",
        Reason.TIMEOUT: "the Room did not answer in time; is the port the WebSocket port? or raise --timeout",
        Reason.AUTH: (
            "give the Room's PIN with --pin-file if it has one, or check that the PIN given is its own"
        ),
        Reason.API: "the Room refused getOutgoingFilesRequests; it needs TrueConf Room 4.1.0 or later",
        Reason.PROTOCOL: "the answer did not follow the Room API: check that the target is a TrueConf Room",
        Reason.INTERNAL: "a bug in the exporter, not the Room: please report it with the traceback it logged",
    }
)
"""What a person should try for each reason, printed by `check`."""


def describe(error: BaseException) -> str:
    """An exception in words for a message: its text without trailing full stops, never its repr."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    text = text.strip().rstrip(".").strip()
    return text or "no detail given"


def sentence(text: str) -> str:
    """`text` ended with one full stop: a message that already ends in punctuation gets none more."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


class CollectionError(Exception):
    """A failed collection, classified. The message never contains the PIN."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"
