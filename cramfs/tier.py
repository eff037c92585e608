"""The host-DRAM tier: promoted pages in LRU order.

It only keeps what it is given for each page (the device gives it the compressed
form the device had, so an unchanged page can go back without recompression)
and the order. What a promotion or a demotion means for
the device (write control, fallback, counters) is decided in device/paths.py.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class DramTier(Generic[K, V]):
    def __init__(self) -> None:
        self._pages: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def put(self, key: K, data: V) -> None:
        """Insert as most recently used."""
        self._pages[key] = data
        self._pages.move_to_end(key)

    def get(self, key: K) -> V:
        """Return the page and mark it most recently used."""
        self._pages.move_to_end(key)
        return self._pages[key]

    def peek(self, key: K) -> V:
        return self._pages[key]

    def pop(self, key: K) -> V:
        return self._pages.pop(key)

    def oldest(self) -> K | None:
        """The least recently used key, or None when empty."""
        return next(iter(self._pages), None)
