"""Page generators and invariant checks shared by the unit and property tests."""

from __future__ import annotations

import random

from cramfs.device import Device
from cramfs.levels import pressure
from cramfs.pagetable import DEVICE, KIND_MASK, PROMOTED, PageTable, handle_of
from cramfs.units import PAGE_SIZE


class FakeClock:
    """A monotonic clock that moves only when a test says so: delayed releases and
    access ages are tested without a sleep."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def random_page(seed: int) -> bytes:
    """Incompressible: lz4 cannot shrink it, so it is stored huge (a whole page)."""
    return random.Random(seed).randbytes(PAGE_SIZE)


def text_page(seed: int) -> bytes:
    """Compressible, like text: lz4 gets it well under the huge threshold."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"page", b"slot", b"cram"]
    out = b" ".join(rng.choice(words) for _ in range(1200))
    return out[:PAGE_SIZE].ljust(PAGE_SIZE, b".")


def discard_model(model: bytearray, first: int, count: int) -> None:
    """What a discard of `count` pages from `first` does to a file modelled as bytes:
    the pages inside it read as zeros."""
    lo, hi = first * PAGE_SIZE, min((first + count) * PAGE_SIZE, len(model))
    if lo < hi:
        model[lo:hi] = bytes(hi - lo)


def kinds(table: PageTable) -> dict[int, int]:
    return {i: w & KIND_MASK for i, w in table.items()}


def check_accounting(dev: Device, tables: list[PageTable]) -> None:
    """The invariants the issues name, checked from the slots up.

    Each stored page is charged its size class (plus any injected extra);
    physical_used is the pages the pool holds, which covers those charges and
    at most the unused tail of each class's zspages."""
    charges = 0
    counts = [0] * len(dev.pages)
    for t in tables:
        mine = 0
        for idx, w in t.items():
            counts[w & KIND_MASK] += 1
            if w & KIND_MASK == DEVICE:
                blob = dev.pool.get(handle_of(w))
                mine += dev.pool.charge(len(blob)) + t.extra.get(idx, 0)
        assert t.physical_bytes == mine
        charges += mine
    assert counts == dev.pages
    assert dev.charged == charges, "every charge belongs to a file"
    assert len(dev.tier) == dev.pages[PROMOTED]
    assert dev.physical_used == dev.pool.used_bytes + sum(sum(t.extra.values()) for t in tables)
    assert charges <= dev.physical_used
    assert dev.mem_used_max >= dev.physical_used
    # the hot path skips the level and pressure while fill stays in their quiet band:
    # whatever it skipped, they must be what the fill calls for
    c = dev.config
    assert dev.pressure == pressure(dev.levels.level, dev.fill, c.warn_at, c.critical_at)
