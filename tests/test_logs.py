"""exporter/logs.py: one line per event in logfmt or JSON, every `extra=` field written, and no control,
bidi or separator character in a line as itself (a field may carry a Room's or a client's words)."""

from __future__ import annotations

import io
import json
import logging
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.logs import JsonFormatter, LogfmtFormatter

HOSTILE = "\x1b[2J\x07\r\nts=2000-01-01 level=error msg=forged\u202eevil\u2028\x9b\ud800"
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


class Captured:
    """A logger writing through one of the project's formatters into memory."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(formatter)
        self.logger = logging.getLogger(f"tests.logs.{type(formatter).__name__}")
        self.logger.handlers[:] = [handler]
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def line(self, message: str, **extra: object) -> str:
        self.stream.seek(0)
        self.stream.truncate()
        self.logger.warning(message, extra=extra)
        text = self.stream.getvalue()
        assert text.count("\n") == 1 and text.endswith("\n"), "one line per event"
        return text[:-1]


@pytest.fixture(params=["logfmt", "json"])
def log(request) -> Iterator[Captured]:
    yield Captured(JsonFormatter() if request.param == "json" else LogfmtFormatter())


def fields_of(line: str) -> dict[str, str]:
    """A line's fields, from either format (logfmt values quoted as JSON strings when they must be)."""
    if line.startswith("{"):
        return json.loads(line)
    fields = {}
    decoder = json.JSONDecoder()
    rest = line
    while rest:
        name, rest = rest.split("=", 1)
        if rest.startswith('"'):
            value, end = decoder.raw_decode(rest)
            rest = rest[end:]
        else:
            value, _, rest = rest.partition(" ")
            rest = " " + rest if rest else ""
        fields[name] = value
        rest = rest.removeprefix(" ")
    return fields


def test_every_extra_field_is_written(log):
    """The server's warnings pass count, open, collecting, limit, needed and status: they were dropped."""
    extra = {"count": 3, "open": 2000, "collecting": 64, "limit": 1024, "needed": 2100, "status": "503"}
    fields = fields_of(log.line("too many connections", target="ws://r:8765", **extra))
    assert {name: fields.get(name) for name in extra} == {name: str(value) for name, value in extra.items()}
    assert list(fields)[:5] == ["ts", "level", "logger", "msg", "target"], "the usual fields first"


def test_an_extra_field_named_like_the_lines_own_does_not_replace_it(log):
    fields = fields_of(log.line("an event", level="made up", ts="made up"))
    assert fields["level"] == "warning" and fields["ts"] != "made up"
    assert fields["extra_level"] == "made up" and fields["extra_ts"] == "made up"


def test_a_rooms_words_are_escaped_in_every_field(log):
    """Logs never write U+202E raw."""
    line = log.line(f"collection failed: {HOSTILE}", target=HOSTILE, detail=HOSTILE)
    assert [char for char in line if unicodedata.category(char) in UNSAFE] == []
    assert "\\u202e" in line and "\\u001b[2J" in line and "\\r\\n" in line
    fields = fields_of(line)
    assert fields["detail"] == HOSTILE and fields["target"] == HOSTILE, (
        "the escapes decode to the Room's words"
    )
    assert list(fields) == ["ts", "level", "logger", "msg", "target", "detail"], "no forged field"
    assert fields["level"] == "warning"


@given(st.text(st.characters(exclude_categories=())), st.text(st.characters(exclude_categories=())))
def test_any_text_makes_one_safe_line_that_reads_back(message, detail):
    for formatter in (LogfmtFormatter(), JsonFormatter()):
        line = Captured(formatter).line(message, detail=detail)
        assert [char for char in line if unicodedata.category(char) in UNSAFE] == []
        fields = fields_of(line)
        assert (fields["msg"], fields["detail"]) == (message, detail)
