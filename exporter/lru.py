"""A mapping of at most `capacity` entries that forgets the least recently used first.

The session pool's slots, the credentials' digests, the password checker's two caches and the status pages'
Rooms are each one of these: an `OrderedDict` in order of use, the least recently used at the front, so each
operation is O(1). `get` and `put` make an entry the most recently used; `peek` and the views do
not, so reading what is kept (a page, a counter) never changes what is forgotten next.

Not thread-safe: each user holds its own lock around it (and decides what an evicted value needs, such as a
session to close, outside that lock).

None is not a value to store: `get`, `peek` and `pop` answer None for a key that is not there.

This module imports nothing from the rest of the package, so every part may use it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, ItemsView, ValuesView
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `capacity` entries (at least 1); past it, the least recently used leave first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an LRU cache holds at least 1 entry, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of `key`, made the most recently used; None when it is not kept."""
        try:
            self._entries.move_to_end(key)
        except KeyError:
            return None
        return self._entries[key]

    def peek(self, key: K) -> V | None:
        """The value of `key` without making it recent; None when it is not kept."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """`key` set to `value` and made the most recently used. Returns the entries evicted to keep at most
        `capacity` (`key` itself never): none, or the least recently used one when it was full."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        return [entries.popitem(last=False)] if len(entries) > self.capacity else []

    def pop(self, key: K) -> V | None:
        """Take `key` out; its value, or None when it was not kept."""
        return self._entries.pop(key, None)

    def oldest(self) -> tuple[K, V] | None:
        """The least recently used entry (the next to be evicted), left in place; None when empty."""
        return next(iter(self._entries.items()), None)

    def clear(self) -> None:
        self._entries.clear()

    def items(self) -> ItemsView[K, V]:
        """The entries, least recently used first (a live view: copy it to change the cache while reading)."""
        return self._entries.items()

    def values(self) -> ValuesView[V]:
        """The values, least recently used first (a live view)."""
        return self._entries.values()

    def __len__(self) -> int:
        return len(self._entries)
