"""lru.py: the one bounded mapping (session slots, PIN digests, password caches, recent Rooms) keeps at most
its capacity and forgets the least recently used first; `get` and `put` refresh, `peek` and the views do not.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.lru import LruCache

CAPACITY = 3


def filled() -> LruCache[str, int]:
    """A cache of CAPACITY entries, k0 the least recently used."""
    cache: LruCache[str, int] = LruCache(CAPACITY)
    for n in range(CAPACITY):
        assert cache.put(f"k{n}", n) == []
    return cache


def test_capacity_entries_are_all_kept():
    cache = filled()
    assert len(cache) == CAPACITY
    assert list(cache.items()) == [("k0", 0), ("k1", 1), ("k2", 2)]


def test_one_more_evicts_the_least_recently_used_and_returns_it():
    cache = filled()
    assert cache.put("new", 9) == [("k0", 0)]
    assert len(cache) == CAPACITY
    assert cache.peek("k0") is None
    assert list(cache.items()) == [("k1", 1), ("k2", 2), ("new", 9)]


def test_a_get_refreshes_so_the_next_least_recently_used_leaves():
    cache = filled()
    assert cache.get("k0") == 0
    assert cache.put("new", 9) == [("k1", 1)]
    assert cache.get("k0") == 0 and cache.get("k1") is None


def test_a_peek_and_the_views_do_not_refresh():
    cache = filled()
    assert cache.peek("k0") == 0
    assert list(cache.values()) == [0, 1, 2]
    assert cache.oldest() == ("k0", 0)
    assert cache.put("new", 9) == [("k0", 0)]


def test_putting_a_kept_key_replaces_its_value_refreshes_it_and_evicts_nothing():
    cache = filled()
    assert cache.put("k0", 10) == []
    assert list(cache.items()) == [("k1", 1), ("k2", 2), ("k0", 10)]


def test_pop_takes_one_key_out():
    cache = filled()
    assert cache.pop("k1") == 1
    assert cache.pop("k1") is None
    assert len(cache) == CAPACITY - 1
    assert cache.put("new", 9) == [], "the room a pop made is used before anything is evicted"


def test_empty_and_cleared():
    cache = filled()
    cache.clear()
    assert len(cache) == 0 and cache.oldest() is None and cache.get("k0") is None


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_capacity_below_one_is_refused(capacity):
    with pytest.raises(ValueError, match="at least 1"):
        LruCache(capacity)


OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["get", "peek", "put", "pop"]), st.integers(0, 6), st.integers()), max_size=60
)


@given(st.integers(1, 5), OPERATIONS)
def test_it_behaves_as_a_list_in_order_of_use(capacity, operations):
    """Against the plainest model: a list of (key, value), least recently used first."""
    cache: LruCache[int, int] = LruCache(capacity)
    model: list[tuple[int, int]] = []
    for operation, key, value in operations:
        index = next((i for i, (k, _) in enumerate(model) if k == key), None)
        kept = None if index is None else model[index][1]
        if operation == "get":
            assert cache.get(key) == kept
            if index is not None:
                model.append(model.pop(index))
        elif operation == "peek":
            assert cache.peek(key) == kept
        elif operation == "pop":
            assert cache.pop(key) == kept
            if index is not None:
                model.pop(index)
        else:
            if index is not None:
                model.pop(index)
            model.append((key, value))
            evicted = model[: max(0, len(model) - capacity)]
            del model[: len(evicted)]
            assert cache.put(key, value) == evicted
        assert list(cache.items()) == model
        assert len(cache) == len(model) <= capacity
        assert cache.oldest() == (model[0] if model else None)
