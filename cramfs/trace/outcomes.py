"""Per-page outcomes of a trace: which page went where, when, and why.

A trace records the device's inputs (every call, with its data, and every
control write) and its results per call. The device is deterministic, so a
replay under the recorded settings makes every per-page decision again, and
tests/test_trace.py holds it to the recorded final state. This module watches
such a replay and reports each page's transition: stored, same, huge,
fallback, refused, promoted, demoted, discarded, written back, dropped,
poisoned, error. Deriving the outcomes instead of recording them keeps the
recording's cost on the request path to the calls alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from ..config import DeviceConfig
from ..device import Device, Encoded
from ..pagetable import (
    BACKED,
    DEVICE,
    FALLBACK,
    HANDLE_SHIFT,
    HUGE_BIT,
    KIND_MASK,
    POISONED,
    PROMOTED,
    SAME,
    PageTable,
)

RESULTS = ("stored", "same", "huge", "fallback", "refused", "promoted", "demoted", "discarded",
           "written_back", "dropped", "poisoned", "error", "kept_in_dram")
_INSTALLED = {SAME: "same", FALLBACK: "fallback", PROMOTED: "promoted", POISONED: "poisoned",
              BACKED: "written_back"}
_FREEING = ("discard", "truncate", "unlink")


class PageEvent(NamedTuple):
    time: float        # seconds into the trace
    op: str            # the call or trigger that moved the page
    file: str
    page: int
    size: int          # compressed bytes the page takes where it went (0: none)
    result: str


class ObservedDevice(Device):
    """A Device (the Python reference: both engines decide alike) that reports every
    page transition to `emit`."""

    def __init__(self, config: DeviceConfig, emit: Callable[[PageEvent], None],
                 monotonic: Callable[[], float], base: float) -> None:
        self._emit = emit
        self._op = "write"
        self._base = base
        super().__init__(dataclasses.replace(config, engine="python"), monotonic=monotonic)

    def _event(self, table: PageTable, idx: int, size: int, result: str) -> None:
        self._emit(PageEvent(round(self._monotonic() - self._base, 6), self._op, table.name,
                             idx, size, result))

    def _as(self, op: str, fn: Callable[..., Any], *args: Any) -> Any:
        outer, self._op = self._op, op
        try:
            return fn(*args)
        finally:
            self._op = outer

    # the entry points say which operation moves pages
    def write(self, table: PageTable, off: int, data: bytes) -> int:
        return int(self._as("write", super().write, table, off, data))

    def read(self, table: PageTable, off: int, size: int) -> bytes:
        return bytes(self._as("read", super().read, table, off, size))

    def fault(self, table: PageTable, off: int, size: int) -> int:
        return int(self._as("read", super().fault, table, off, size))

    def write_encoded(self, table: PageTable, off: int, encoded: list[Encoded],
                      page_of: Callable[[int], bytes]) -> int:
        return int(self._as("write", super().write_encoded, table, off, encoded, page_of))

    def discard(self, table: PageTable, first: int, count: int) -> int:
        return int(self._as("discard", super().discard, table, first, count))

    def truncate(self, table: PageTable, size: int) -> None:
        self._as("truncate", super().truncate, table, size)

    def drop(self, table: PageTable) -> None:
        self._as("unlink", super().drop, table)

    def recompress(self, kind: str, max_pages: int | None = None, threshold: int = 0) -> int:
        return int(self._as("recompress", super().recompress, kind, max_pages, threshold))

    def writeback(self, kind: str, page: tuple[PageTable, int] | None = None) -> Any:
        return self._as("writeback", super().writeback, kind, page)

    def _demote_one(self) -> bool:
        return bool(self._as("demote", super()._demote_one))

    # the transitions
    def _install(self, table: PageTable, idx: int, word: int, charge: int = 0,
                 extra: int = 0) -> None:
        super()._install(table, idx, word, charge, extra)
        kind = word & KIND_MASK
        size = 0
        if kind == DEVICE:
            result = "huge" if word & HUGE_BIT else (
                "demoted" if self._op == "demote" else "stored")
            size = len(self.pool.get(word >> HANDLE_SHIFT))
        else:
            result = _INSTALLED.get(kind, "error")
            if kind == FALLBACK:
                size = len(self.fallback.get(word >> HANDLE_SHIFT))
            elif kind == PROMOTED:
                size = len(self.tier.peek((table, idx))[1])
        self._event(table, idx, size, result)

    def _release(self, table: PageTable, idx: int) -> int:
        word = super()._release(table, idx)
        if word and self._op in _FREEING:
            self._event(table, idx, 0, "discarded")
        return word

    def _refuse(self, table: PageTable, idx: int, why: str, demoting: bool) -> bool:
        self._event(table, idx, 0, "kept_in_dram" if demoting else "refused")
        return super()._refuse(table, idx, why, demoting)

    def _poisoned_read(self, table: PageTable, idx: int) -> Any:
        self._event(table, idx, 0, "error")
        return super()._poisoned_read(table, idx)

    def _screen(self, table: PageTable, idx: int, blob: bytes, algo: int, huge: bool,
                extra: int, demoting: bool) -> bool | None:
        dropped = self.counters.dropped_writes
        out = super()._screen(table, idx, blob, algo, huge, extra, demoting)
        if self.counters.dropped_writes != dropped:
            self._event(table, idx, 0, "dropped")
        return out

    def _stage(self, table: PageTable, idx: int, blob: bytes, algo: int, why: str) -> bool:
        return bool(self._as("fallback", super()._stage, table, idx, blob, algo, why))

