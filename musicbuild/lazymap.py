"""A read-only mapping made on first use: for tables that are costly to build and that many
commands never look at (the lock's entries, the installed provider types). ``known`` answers lookups
of its own keys without making the table (the built-in provider types, known without the plugin
registry); the table must agree with it on those keys."""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LazyMapping(Mapping[K, V]):
    def __init__(self, make: Callable[[], Mapping[K, V]], known: Mapping[K, V] | None = None) -> None:
        self._make = make
        self._made: Mapping[K, V] | None = None
        self._known: Mapping[K, V] = known or {}

    def _table(self) -> Mapping[K, V]:
        if self._made is None:
            self._made = self._make()
        return self._made

    def __getitem__(self, key: K) -> V:
        found = self._known.get(key)
        return found if found is not None else self._table()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._known or key in self._table()

    def __iter__(self) -> Iterator[K]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())
