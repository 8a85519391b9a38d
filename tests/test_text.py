"""text.py: Room and client text made safe to show; no control, bidi or separator character ever leaves as
itself, and printable text is left alone."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.text import is_unsafe, json_safe, visible

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
