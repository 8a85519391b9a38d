"""protocol.decode with `lists`: a reply's request lists read entry by entry, the same as json.loads."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.room import protocol
from exporter.room.errors import CollectionError
from exporter.room.file_requests import REPLY_LIST_KEY, aggregate
from tests.test_message_cost import entries_reply

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
objects = st.dictionaries(st.sampled_from(["a", "list", REPLY_LIST_KEY, "é\n"]) | st.text(max_size=5), values)
layouts = st.sampled_from(
    [{}, {"separators": (",", ":")}, {"indent": 2}, {"indent": "\t", "separators": (" ,", " :  ")}]
)


@given(objects, layouts)
@example({REPLY_LIST_KEY: []}, {})
@example({REPLY_LIST_KEY: [{}], "list": [[1], {"a": [2]}]}, {"indent": 1})
def test_a_streamed_decode_gives_what_json_loads_gives(
    message: dict[str, Any], layout: dict[str, Any]
) -> None:
    text = json.dumps(message, **layout)  # a dict: no key twice
    assert protocol.decode(text, {REPLY_LIST_KEY: list, "list": list}) == json.loads(text)


@given(st.text(max_size=40))
@example('{"a":1} x')
@example('{"outgoingFilesRequests":[1,2')
@example('{"outgoingFilesRequests":[1 2]}')
@example('{"a" 1}')
@example("{,}")
@example('{"a":1,}')
@example("[1]")
def test_a_streamed_decode_refuses_what_json_loads_refuses(text: str) -> None:
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        expected = None
    lists = {REPLY_LIST_KEY: list}
    if isinstance(expected, dict):
        assert protocol.decode(text, lists) == expected
    else:
        with pytest.raises(CollectionError):
            protocol.decode(text, lists)


def test_duplicate_keys_keep_the_last_as_json_loads_does_but_a_list_key_is_refused() -> None:
    text = '{"a":1,"outgoingFilesRequests":[1],"a":2}'
    assert protocol.decode(text, {REPLY_LIST_KEY: list}) == json.loads(text)
    with pytest.raises(CollectionError, match="repeated"):
        protocol.decode('{"outgoingFilesRequests":[1],"outgoingFilesRequests":[2,3]}', {REPLY_LIST_KEY: list})


def test_an_error_names_the_position_json_loads_names() -> None:
    for text in ('{"outgoingFilesRequests":[]} x', "{}\n\n}"):
        with pytest.raises(ValueError) as expected:
            json.loads(text)
        with pytest.raises(CollectionError) as got:
            protocol.decode(text, {REPLY_LIST_KEY: list})
        assert str(expected.value) in got.value.message


def test_a_list_the_reader_leaves_unread_is_still_checked_to_its_end() -> None:
    with pytest.raises(CollectionError):
        protocol.decode('{"outgoingFilesRequests":[1,2 3]}', {REPLY_LIST_KEY: lambda entries: None})


def test_ten_thousand_entries_never_exist_at_once() -> None:
    text = entries_reply(10_000).decode()
    tracemalloc.start()
    streamed = protocol.decode(text, {REPLY_LIST_KEY: aggregate})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert streamed[REPLY_LIST_KEY] == aggregate(json.loads(text)[REPLY_LIST_KEY])
    assert peak < 256 * 1024, f"{peak / 1024:.0f} KiB at the peak (json.loads: about 6 MiB)"
