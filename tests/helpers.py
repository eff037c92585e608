"""Page generators and invariant checks shared by the unit and property tests."""

from __future__ import annotations

import random

from cramfs.device import DEVICE, Device, SlotTable
from cramfs.units import PAGE_SIZE


def random_page(seed: int) -> bytes:
    """Incompressible: lz4 cannot shrink it, so it is stored huge (a whole page)."""
    return random.Random(seed).randbytes(PAGE_SIZE)


def text_page(seed: int) -> bytes:
    """Compressible, like text: lz4 gets it well under the huge threshold."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"page", b"slot", b"cram"]
    out = b" ".join(rng.choice(words) for _ in range(1200))
    return out[:PAGE_SIZE].ljust(PAGE_SIZE, b".")


def check_accounting(dev: Device, tables: list[SlotTable]) -> None:
    """The invariants the issue names, checked from the slots up."""
    device_slots = [s for t in tables for s in t.slots.values() if s.kind == DEVICE]
    assert dev.physical_used == sum(s.charge for s in device_slots)
    assert dev.pool.used_bytes == sum(s.charge - s.extra for s in device_slots)
    for t in tables:
        assert t.physical_bytes == sum(s.charge for s in t.slots.values() if s.kind == DEVICE)
    counts = [0] * len(dev.pages)
    for t in tables:
        for s in t.slots.values():
            counts[s.kind] += 1
    assert counts == dev.pages
    assert len(dev.tier) == dev.pages[3]
    assert dev.mem_used_max >= dev.physical_used
