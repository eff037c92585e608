"""Per-page outcomes of a trace: which page went where, when, and why.

A trace records the device's inputs (every call, with its data, and every
control write) and its results per call. The device is deterministic, so a
replay under the recorded settings makes every per-page decision again, and
tests/test_trace.py holds it to the recorded final state. This module watches
such a replay, through the slot store's transition hook, and reports each
page's transition: stored, same, huge, fallback, refused, promoted, demoted,
discarded, written back, dropped, poisoned, error. Deriving the outcomes
instead of recording them keeps the recording's cost on the request path to the
calls alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..device import Device
from ..pagetable import (
    BACKED,
    DEVICE,
    FALLBACK,
    HUGE_BIT,
    KIND_MASK,
    POISONED,
    PROMOTED,
    SAME,
)

RESULTS = ("stored", "same", "huge", "fallback", "refused", "promoted", "demoted", "discarded",
           "written_back", "dropped", "poisoned", "error", "kept_in_dram")
_INSTALLED = {SAME: "same", FALLBACK: "fallback", PROMOTED: "promoted", POISONED: "poisoned",
              BACKED: "written_back"}
_FREEING = ("discard", "truncate", "unlink")
# what the device notes of a page it left where it was (SlotStore.note)
_NOTES = ("refused", "kept_in_dram", "dropped", "error")


class PageEvent(NamedTuple):
    time: float        # seconds into the trace
    op: str            # the call or trigger that moved the page
    file: str
    page: int
    size: int          # compressed bytes the page takes where it went (0: none)
    result: str


def watch(dev: Device, emit: Callable[[PageEvent], None], base: float) -> None:
    """Report every page transition of `dev` to `emit` (`base`: the trace's start on
    the device's clock). The device's slot store calls back on each change of a
    slot's word and on each page it refused, dropped or could not read; the
    operation it was in is the store's `cause`."""
    store, clock = dev.store, dev.clock

    def event(table: Any, idx: int, size: int, result: str) -> None:
        emit(PageEvent(round(clock() - base, 6), store.cause, table.name, idx, size, result))

    def hook(table: Any, idx: int, old: int, new: int, cause: str) -> None:
        if cause in _NOTES:
            event(table, idx, 0, cause)
            return
        if old and cause in _FREEING:
            event(table, idx, 0, "discarded")
        if not new:
            return
        kind = new & KIND_MASK
        size = 0
        if kind == DEVICE:
            result = "huge" if new & HUGE_BIT else ("demoted" if cause == "demote" else "stored")
            size = len(store.blob(new))
        else:
            result = _INSTALLED.get(kind, "error")
            if kind == FALLBACK:
                size = len(store.blob(new))
            elif kind == PROMOTED:
                size = len(store.kept(table, idx)[1])
        event(table, idx, size, result)

    store.hook = hook
