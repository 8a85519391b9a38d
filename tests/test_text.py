"""text.py: Room and client text made safe to show; no control, bidi or separator character ever leaves as
itself, and printable text is left alone. A client's value quoted back (`echo`) is cut at ECHO_CHARS."""

from __future__ import annotations

import ast
import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.text import ECHO_CHARS, echo, is_unsafe, json_safe, visible

UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
ANY_TEXT = st.text(st.characters(exclude_categories=()))
"""Lone surrogates included: a JSON string from a Room may hold one."""


def unsafe_in(text: str) -> list[str]:
    return [char for char in text if unicodedata.category(char) in UNSAFE]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("ding\x07", "ding\\x07"),
        ("one\r\ntwo\tthree", "one\\r\\ntwo\\tthree"),
        ("abc\u202edef", "abc\\u202edef"),
        (
            "\u2066isolate\u2069 \u200e\u200f\u200b\ufeff",
            "\\u2066isolate\\u2069 \\u200e\\u200f\\u200b\\ufeff",
        ),
        ("\x7f\x9b", "\\x7f\\x9b"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\ud800", "\\ud800"),
        ("tag\U000e0001", "tag\\U000e0001"),
        ("Ошибка: 未知 \U0001f600 \\x1b stays", "Ошибка: 未知 \U0001f600 \\x1b stays"),
    ],
)
def test_unsafe_characters_are_written_as_visible_escapes(raw, shown):
    assert visible(raw) == shown


@given(ANY_TEXT)
def test_visible_never_lets_an_unsafe_character_through(text):
    assert unsafe_in(visible(text)) == []
    assert visible(visible(text)) == visible(text), "escaping what is already safe changes nothing"


@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))))
def test_text_without_unsafe_characters_passes_unchanged(text):
    assert visible(text) == text


@given(ANY_TEXT)
def test_json_safe_is_the_same_json_without_an_unsafe_character(text):
    encoded = json_safe(json.dumps({"field": text}, ensure_ascii=False))
    assert unsafe_in(encoded) == []
    assert json.loads(encoded) == {"field": text}


def test_is_unsafe_names_the_categories():
    assert is_unsafe("\u202e") and is_unsafe("\x00") and not is_unsafe(" ") and not is_unsafe("é")


def test_echo_quotes_a_value_of_exactly_the_limit_whole_and_cuts_one_more():
    assert echo("a" * ECHO_CHARS) == "'" + "a" * ECHO_CHARS + "'"
    assert echo("a" * (ECHO_CHARS + 1)) == "'" + "a" * ECHO_CHARS + "...'"
    assert echo("abc", limit=3) == "'abc'"
    assert echo("abcd", limit=3) == "'abc...'"
    assert echo("") == "''"


def test_echo_writes_control_and_bidi_characters_as_escapes_and_cuts_between_characters():
    assert echo("evil\x1b[2J\r\nforged\u202e") == "'evil\\x1b[2J\\r\\nforged\\u202e'"
    # the cut counts the value's characters, never the escapes': no escape is ever cut in half
    assert echo("ab\x1b\x1b", limit=3) == "'ab\\x1b...'"
    assert echo("it's") == '"it\'s"'


@given(ANY_TEXT, st.integers(1, 120))
def test_echo_is_already_safe_to_show_and_reads_back_as_the_value_or_its_start(text, limit):
    quoted = echo(text, limit)
    assert unsafe_in(quoted) == [] and visible(quoted) == quoted, "repr escapes all that visible would"
    assert ast.literal_eval(quoted) == (text if len(text) <= limit else text[:limit] + "...")
    assert len(quoted) <= 10 * limit + 5
