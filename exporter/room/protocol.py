"""The Room's JSON message rules (reference §2), free of I/O.

A message with `method == "event"` is a notification; anything else is a reply. Replies are matched by
`requestId`, falling back to `method` when the Room leaves `requestId` empty. A reply succeeded when and only
when `result` is `true` (reference §7: vendor clients look at `result` alone); an `error` key on a success is
logged at debug, never turned into a failure.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from exporter.room.errors import CollectionError, Reason

log = logging.getLogger(__name__)

EVENT_METHOD = "event"


def request(method: str, request_id: str, **params: Any) -> str:
    """The text frame of a request."""
    return json.dumps({"method": method, "requestId": request_id, **params}, separators=(",", ":"))


def decode(text: str) -> dict[str, Any]:
    """A message as a JSON object; a protocol error for anything else (including absurdly deep nesting)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CollectionError(
            Reason.PROTOCOL, f"the Room sent a message that is not JSON ({error})"
        ) from None
    if not isinstance(message, dict):
        raise CollectionError(
            Reason.PROTOCOL, f"the Room sent a JSON {type(message).__name__} where an object belongs"
        )
    return message


def is_notification(message: dict[str, Any]) -> bool:
    return message.get("method") == EVENT_METHOD


def take_reply(message: dict[str, Any], pending: dict[str, str]) -> str | None:
    """The method `message` answers, taken off `pending` (request id -> method); None for a notification
    or a stray reply. Matched by `requestId`, or by method when the Room leaves it empty."""
    if is_notification(message):
        return None
    echoed = message.get("requestId")
    if echoed not in (None, ""):
        return pending.pop(str(echoed), None)
    for request_id, method in pending.items():
        if message.get("method") == method:
            del pending[request_id]
            return method
    return None


def failure_text(reply: dict[str, Any]) -> str | None:
    """Why a reply failed, or None when it succeeded (`result` is `true`, whatever else the reply carries).
    The Room's own words where it gave any."""
    if reply.get("result") is True:
        if "error" in reply:
            log.debug(
                "a successful reply carries an error key; success is decided by result alone",
                extra={"detail": f"{str(reply.get('method'))[:50]}: {str(reply['error'])[:200]}"},
            )
        return None
    parts = []
    if "error" in reply:
        parts.append(str(reply["error"])[:200])
    if "resultCode" in reply:
        parts.append(f"resultCode {reply['resultCode']!r}"[:50])
    if not parts:
        parts.append(f"result {reply.get('result')!r}"[:50])
    return ", ".join(parts)
