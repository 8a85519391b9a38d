"""What reading the Rooms' messages may cost in memory, bounded for the whole process, not per message.

A limit on a message's bytes is not a limit on its memory: 4 MiB of `[{},{},...]` is 1.4 million dicts, about
97 MiB once parsed, and a 1.9 MB reply of 10 000 real entries is 5.6 MiB. So three things are bounded here,
each before it is paid (figures: docs/robustness.md; bounds held by tests/test_message_cost.py):

1. Bytes being read. A message's first FREE_BYTES are every session's own; the bytes past them are
   reserved from one shared budget (`shared_bytes`) before the frame's payload is read (room/frames.py), and
   given back once the message is parsed. A session that finds the budget spent is not read until it has
   room (room/reader.py); its scrape waits within its deadline.
2. Parsing. `json.loads` holds the GIL, so two parses at once take as long as one after the other: large
   messages are parsed by their scrapes through one lane (messages within FREE_BYTES are parsed by the
   sessions' reader, so a healthy Room's replies never wait behind a large parse), and a message is
   parsed only when its cost, counted beforehand
   from its bytes (`parse_cost`: JSON's separators are an upper bound on its values), is at most
   `max_parse_cost`. A message past it is refused (reason `protocol`) unparsed.
3. What is kept. Inside the lane, a reply's request list becomes its aggregate and a notification becomes
   nothing; what is left of a reply must be small (at most MAX_KEPT_NODES JSON values and
   MAX_KEPT_TEXT_BYTES of text), or it is refused.

So the memory of all Room messages in flight is at most `shared_bytes` + `max_parse_cost` + the cost of one
small message + (collections in flight) x (FREE_BYTES + what is kept), whatever the Rooms send.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from exporter.room import protocol
from exporter.room.deadline import Deadline
from exporter.room.errors import CollectionError, Reason

FREE_BYTES = 64 * 1024
"""The bytes of one message a collection reads without asking the shared budget (a warm scrape's replies)."""
DEFAULT_SHARED_BYTES = 16 * 1024 * 1024
"""Bytes of large messages read at once across every collection: eight 10 000-entry replies (2 MB each)."""
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The largest message read from a Room (`--max-message-bytes`): a real `getOutgoingFilesRequests` reply takes
185-215 bytes per request, so 4 MiB is ~20 000 requests."""
PARSE_COST_PER_MESSAGE_BYTE = 14
"""The most one message may cost to parse (its bytes, its text, its values), per byte of the largest message
the exporter reads (`--max-message-bytes`): a real reply counts 11.7-13.6 times its bytes by `parse_cost`
(the reference's entries, 153-215 bytes each; 22 400 of the reference's own in 4 MiB count 47 MiB) and takes
about 3 in fact, so a real reply at the message limit is read; `[{},{},...]` (23 times its bytes in fact)
is refused."""
BYTES_PER_VALUE = 96
"""The most one JSON value costs once parsed, counted per separator (`{ [ , :`): measured at most 92 bytes
(a chain of one-key objects), 36 for `[{},{}]`, 31-38 for a real entry's fields."""
MAX_KEPT_NODES = 256
"""The JSON values a reply may keep once its request list is aggregated: a documented getSystemInfo has 23."""
MAX_KEPT_TEXT_BYTES = 64 * 1024
"""The string bytes a reply may keep: a session keeps its getSystemInfo reply (a 4 MiB string with one escaped
astral character in it is 16 MiB once decoded)."""
DENSE_BYTES_PER_SEPARATOR = 6
"""A message with fewer bytes than this per separator is parsed whole by json.loads (C, fast; its memory is
already bounded by its counted cost) rather than entry by entry: a real entry has 10-13 bytes per separator,
and `[0,0,...]` read one entry at a time takes 27 times json.loads's CPU (1 MB: 485 ms against 18 ms)."""


def separators(data: bytes) -> int:
    """JSON's `{ [ , :` in `data`: at least its values less one (strings may hold some too)."""
    return data.count(b"{") + data.count(b"[") + data.count(b",") + data.count(b":")


def parse_cost(data: bytes, text: str) -> int:
    """An upper bound on the memory `json.loads(text)` takes with `data` and `text` alive: the two copies,
    the strings and every value at BYTES_PER_VALUE, counted without parsing. The strings take at most the
    text again, or 4 bytes a character when escapes (`\ud83d\ude00`) can make them wider than the text."""
    strings = 4 * len(text) if b"\\u" in data else sys.getsizeof(text)
    return len(data) + sys.getsizeof(text) + strings + BYTES_PER_VALUE * (separators(data) + 1)


def small_enough(value: Any, limit: int = MAX_KEPT_NODES, text_limit: int = MAX_KEPT_TEXT_BYTES) -> bool:
    """True when `value` holds at most `limit` JSON values and `text_limit` bytes of strings (keys
    included); stops counting at the limits, so it is cheap."""
    stack = [value]
    seen = 0
    text = 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(item, str):
            text += sys.getsizeof(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            seen += len(item)  # the keys
            text += sum(sys.getsizeof(key) for key in list(item)[: limit + 1])
        elif isinstance(item, list):
            stack.extend(item[: limit + 1])
            if len(item) > limit:
                return False
        if text > text_limit:
            return False
    return True


class MessageBudget:
    """The shared budget of bytes in flight and the one parse lane. Thread-safe; one per exporter."""

    def __init__(
        self, shared_bytes: int = DEFAULT_SHARED_BYTES, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.shared_bytes = shared_bytes
        self.max_parse_cost = PARSE_COST_PER_MESSAGE_BYTE * max_message_bytes
        """One message's parse may cost as much as a real reply of `max_message_bytes` needs (56 MiB at the
        default)."""
        self._free = shared_bytes
        self._condition = threading.Condition()
        self._lane = threading.Lock()

    def try_reserve(self, size: int) -> bool:
        """Take `size` bytes of the shared budget if it has them now (the sessions' reader never waits).

        A message larger than the whole budget cannot be read here at all: reason `protocol` at once."""
        if size > self.shared_bytes:
            raise CollectionError(
                Reason.PROTOCOL,
                f"the Room sent a message of more than {self.shared_bytes + FREE_BYTES} bytes, more than "
                "the exporter reads at once for all Rooms together",
            )
        with self._condition:
            if self._free < size:
                return False
            self._free -= size
            return True

    def release(self, size: int) -> None:
        if size:
            with self._condition:
                self._free += size
                self._condition.notify_all()

    @property
    def free(self) -> int:
        """Shared bytes not reserved now."""
        return self._free

    def parse(
        self,
        data: bytes,
        deadline: Deadline,
        keep: Callable[[dict[str, Any]], dict[str, Any] | None],
        lists: Mapping[str, protocol.ListReader] | None = None,
    ) -> dict[str, Any] | None:
        """`data` decoded and parsed in the lane (`lists` read entry by entry: protocol.decode), then
        `keep(message)`: what is left of it (None for nothing).

        Refused (reason `protocol`) unparsed when its parse would cost more than `max_parse_cost`, and after
        `keep` when what is left is not `small_enough`. The caller must drop `data` after."""
        lane = self._lane
        if not lane.acquire(timeout=max(0.0, deadline.left())):
            raise CollectionError(
                Reason.TIMEOUT, f"the deadline of {deadline.seconds:g}s passed waiting to parse a message"
            )
        try:
            text = protocol.text_of(data)
            cost = parse_cost(data, text)
            if cost > self.max_parse_cost:
                size = len(data)
                del data, text  # not kept alive by the traceback of the refusal
                raise CollectionError(
                    Reason.PROTOCOL,
                    f"the Room sent a message of {size} bytes that would take about {cost >> 20} MiB "
                    f"to parse (at most {self.max_parse_cost >> 20} MiB): too many JSON values",
                )
            dense = len(data) < DENSE_BYTES_PER_SEPARATOR * separators(data)
            message = protocol.decode(text, None if dense else lists)
            if dense and lists:
                message = protocol.read_lists(message, lists)
            del text
            kept = keep(message)
            del message
            if kept is not None and not small_enough(kept):
                raise CollectionError(
                    Reason.PROTOCOL,
                    f"the Room sent a reply of more than {MAX_KEPT_NODES} values or {MAX_KEPT_TEXT_BYTES} "
                    "bytes of text besides its request list",
                )
            return kept
        finally:
            lane.release()
