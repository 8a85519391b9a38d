"""Text from a Room (its JSON keys, its error messages) or from a client (a target) made safe to show.

Such text reaches a terminal through the debug probe and the logs, and a browser through the status page. A
control character (ESC starts a terminal escape sequence, BEL rings, CR and LF forge lines), a bidi override
or isolate (U+202E turns what follows around), a zero-width character or a line separator there lets a Room
rewrite what an operator reads. Each such character is written as a visible escape instead: `\\x1b`,
`\\u202e`, `\\n`. Everything else, printable text and spaces, passes unchanged, so a normal message reads
as it was written. A backslash stays itself: the escapes are for a person's eyes, not for decoding.

A value a client sent (a target, a module name) or a config entry, quoted back in a one-line answer, is
written by `echo`: its repr, cut to a bounded length.

This module imports nothing from the rest of the package, so every part (the Room client's trace and the
logs included) may use it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from types import MappingProxyType

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control (C0, DEL, C1), format (bidi overrides and isolates, zero-width characters, BOM), lone surrogates
(a JSON string may hold one; no UTF-8 writer can), and line and paragraph separators."""

SHORT_ESCAPES = MappingProxyType({"\n": "\\n", "\r": "\\r", "\t": "\\t"})
ECHO_CHARS = 100
"""A quoted value is cut to this many characters: a target or an allow-list entry as people write them (a
scheme, a host name, a port, a pattern) fits whole, and a value of kilobytes (a request's head may
carry 8 KiB) leaves the answer one short line."""
CACHED_CHARACTERS = 4096
"""Distinct characters whose written form is remembered (at most ~0.5 MiB a style): a text of characters seen
before is written at C speed, one dict lookup each, instead of a Unicode lookup in Python each."""


def is_unsafe(char: str) -> bool:
    """True for a character that must never leave the exporter as itself."""
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def visible(text: str) -> str:
    """`text` with every unsafe character written as a Python-style escape; printable text unchanged."""
    if text.isprintable():  # the common case, at C speed: isprintable is False for every unsafe character
        return text
    return "".join(map(_PYTHON_STYLE.__getitem__, text))


def echo(value: str, limit: int = ECHO_CHARS) -> str:
    """`value` quoted for a one-line answer: its repr, the value cut to its first `limit` characters and
    `...` when longer (inside the quotes). It needs no `visible`: repr writes every character that
    `visible` escapes as an escape too (str.isprintable is False for each), so the quote is terminal-safe
    as it is, and at most 10 * limit + 5 characters long (`\\U000e0001` is the longest escape)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def json_safe(encoded: str) -> str:
    """JSON text (as `json.dumps(..., ensure_ascii=False)` writes it) with every unsafe character still in
    it written as JSON's own `\\uXXXX` escape: still valid JSON that decodes to the same values, and a line
    that no terminal or log viewer can be turned by."""
    if encoded.isprintable():
        return encoded
    return "".join(map(_JSON_STYLE.__getitem__, encoded))


class _WrittenAs(dict[str, str]):
    """Each character as it is to be written: itself, or its escape when unsafe; filled as characters come."""

    def __init__(self, escape: Callable[[str], str]) -> None:
        super().__init__()
        self.escape = escape

    def __missing__(self, char: str) -> str:
        written = self.escape(char) if is_unsafe(char) else char
        if len(self) < CACHED_CHARACTERS:  # racing threads may pass it by a few: harmless
            self[char] = written
        return written


def _python_escape(char: str) -> str:
    short = SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _json_escape(char: str) -> str:
    point = ord(char)
    if point < 0x10000:
        return f"\\u{point:04x}"
    point -= 0x10000  # JSON writes a character past the BMP as its UTF-16 surrogate pair
    return f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}"


_PYTHON_STYLE = _WrittenAs(_python_escape)
_JSON_STYLE = _WrittenAs(_json_escape)
