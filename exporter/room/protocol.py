"""The Room's JSON message rules (reference §2), free of I/O.

A message with `method == "event"` is a notification; anything else is a reply. Replies are matched by
`requestId`, falling back to `method` when the Room leaves `requestId` empty. A reply succeeded when and only
when `result` is `true` (reference §7: vendor clients look at `result` alone); an `error` key on a success is
logged at debug, never turned into a failure.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from exporter.room.errors import CollectionError, Reason

log = logging.getLogger(__name__)

EVENT_METHOD = "event"


def request(method: str, request_id: str, **params: Any) -> str:
    """The text frame of a request."""
    return json.dumps({"method": method, "requestId": request_id, **params}, separators=(",", ":"))


def text_of(data: bytes) -> str:
    """A text message's payload as text; a protocol error when it is not UTF-8 (websocket-client's own check
    is skipped: this one runs at C speed)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CollectionError(Reason.PROTOCOL, "the Room sent text that is not UTF-8") from None


ListReader = Callable[[Iterable[Any]], Any]
"""What a list under a given key becomes, read one entry at a time (file_requests.aggregate)."""


def decode(text: str, lists: Mapping[str, ListReader] | None = None) -> dict[str, Any]:
    """A message as a JSON object; a protocol error for anything else (including absurdly deep nesting).

    With `lists`, a top-level array under one of its keys is handed to its reader entry by entry as it is
    decoded, and the reader's result stands in its place: a 10 000-entry reply never exists whole (6 MiB
    of objects otherwise, and their freed memory scattered in the allocator's pools). Everything else is
    decoded as `json.loads` would, with the same errors, but for one: such a key given twice is refused
    (json.loads keeps the last; reading each would let a Room repeat an empty list 100 000 times).
    """
    try:
        message = _decode_object(text, lists) if lists else json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CollectionError(
            Reason.PROTOCOL, f"the Room sent a message that is not JSON ({error})"
        ) from None
    if not isinstance(message, dict):
        raise CollectionError(
            Reason.PROTOCOL, f"the Room sent a JSON {type(message).__name__} where an object belongs"
        )
    return message


def read_lists(message: dict[str, Any], lists: Mapping[str, ListReader]) -> dict[str, Any]:
    """`message`, decoded whole, its arrays under `lists` keys read as `decode(text, lists)` reads them."""
    for key, reader in lists.items():
        if isinstance(message.get(key), list):
            message[key] = reader(message[key])
    return message


_DECODER = json.JSONDecoder()
_SPACE: Callable[[str, int], re.Match[str]] = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]


def _decode_object(text: str, lists: Mapping[str, ListReader]) -> Any:
    """json.loads(text) for a top-level object, its arrays under `lists` keys read entry by entry."""
    index = _SPACE(text, 0).end()
    if not text.startswith("{", index):
        return json.loads(text)  # not an object: json's own answer, or its error
    message: dict[str, Any] = {}
    index = _SPACE(text, index + 1).end()
    if text.startswith("}", index):
        return _only(message, text, index + 1)
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
        key, index = _DECODER.raw_decode(text, index)  # a JSON string: the key
        index = _SPACE(text, index).end()
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        index = _SPACE(text, index + 1).end()
        reader = lists.get(key)
        if reader is not None and key in message:  # json.loads keeps the last; each would be read again
            raise json.JSONDecodeError(f"the key {key!r} is repeated", text, index)
        if reader is not None and text.startswith("[", index):
            entries = _Entries(text, index)
            message[key] = reader(entries)
            index = entries.finish()
        else:
            message[key], index = _DECODER.raw_decode(text, index)
        index = _SPACE(text, index).end()
        if text.startswith("}", index):
            return _only(message, text, index + 1)
        if not text.startswith(",", index):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _SPACE(text, index + 1).end()


def _only(message: dict[str, Any], text: str, index: int) -> dict[str, Any]:
    end = _SPACE(text, index).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return message


class _Entries:
    """The entries of the array at `text[start]`, decoded one at a time; `finish()` reads any the reader
    left and returns the index past the array."""

    def __init__(self, text: str, start: int) -> None:
        self._text = text
        self._index: int = _SPACE(text, start + 1).end()
        self._done = text.startswith("]", self._index)
        if self._done:
            self._index += 1

    def __iter__(self) -> Iterator[Any]:
        text = self._text
        while not self._done:
            value, index = _DECODER.raw_decode(text, self._index)
            index = _SPACE(text, index).end()
            if text.startswith("]", index):
                self._done = True
                index += 1
            elif not text.startswith(",", index):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
            else:
                index = _SPACE(text, index + 1).end()
            self._index = index
            yield value

    def finish(self) -> int:
        for _ in self:
            pass
        return self._index


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


def failure_text(reply: dict[str, Any], pin: str | None = None) -> str | None:
    """Why a reply failed, or None when it succeeded (`result` is `true`, whatever else the reply carries).
    The Room's own words where it gave any, with `pin` written `<pin>`: the Room's words are the one place a
    message could echo what it was sent."""
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
    text = ", ".join(parts)
    return text.replace(pin, "<pin>") if pin else text
