"""Maintenance: work on pages at rest, asked for through the control files.

zram's idle marking and recompression, and compaction. None of it serves a
request: each walks the files' tables and moves pages through the slot store,
never past physical capacity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compressors import BY_ID, COMPRESSORS
from ..pagetable import DEVICE, HUGE_BIT, KIND_MASK, TRIED, algo_of
from ..units import PAGE_SIZE, shown

if TYPE_CHECKING:
    from .facade import Device


def compact(dev: Device) -> int:
    """Move objects out of sparse zspages; return the pages given back."""
    before = dev.store.pool.used_bytes
    moved = dev.store.compact(dev.tables())
    freed = (before - dev.store.pool.used_bytes) // PAGE_SIZE
    dev.counters.pages_compacted += freed
    dev.events.add("compact", f"{moved} objects moved, {freed} pages freed")
    dev.refresh()
    return freed


def track(dev: Device) -> None:
    """Start keeping access ages (4 bytes a page) from the first use on; pages
    already stored count as accessed now, their history being unknown."""
    if not dev.store.tracking:
        now = dev.now()
        for table in dev.tables():
            table.track(now)
        dev.store.tracking = True


def mark_idle(dev: Device, older_than: int | None) -> int:
    """zram's idle: mark every stored page idle (None), or those not accessed for
    at least `older_than` seconds. Same-filled pages are never idle, as in zram."""
    track(dev)
    cutoff = dev.now() - (older_than or 0)
    marked = 0
    for table in dev.tables():
        for idx, word in table.items():
            if word & KIND_MASK != DEVICE:
                continue
            age = table.age(idx)
            if age & ~TRIED and (older_than is None or age & ~TRIED <= cutoff):
                table.set_age(idx, age & TRIED)
                marked += 1
    what = "all" if older_than is None else f"not accessed for {older_than} s"
    dev.events.add("idle", f"{what}: {marked} pages marked idle")
    return marked


def set_recomp_algorithm(dev: Device, name: str) -> None:
    if name not in COMPRESSORS or name == "none":
        dev.reject("recomp_algorithm", f"algo must be one of "
                   f"{', '.join(n for n in COMPRESSORS if n != 'none')}, got {shown(name)}")
    dev.recomp_algorithm = name
    dev.events.add("knob", f"recomp_algorithm={name} priority=1")


def recompress(dev: Device, kind: str, max_pages: int | None = None,
               threshold: int = 0) -> int:
    """zram's recompress: try the secondary algorithm on idle, huge or huge-and-idle
    pages. A page is kept recompressed only if it shrinks into a smaller size class;
    one that does not is marked and not tried again until it is rewritten.
    `max_pages` bounds the pages tried; `threshold` skips objects smaller than it."""
    if dev.recomp_algorithm is None:
        dev.reject("recompress", "no recomp_algorithm set")
    track(dev)
    store, pool = dev.store, dev.store.pool
    second = COMPRESSORS[dev.recomp_algorithm]
    want_idle, want_huge = kind in ("idle", "huge_idle"), kind in ("huge", "huge_idle")
    tried = done = 0
    for table in dev.tables():
        for idx, word in table.items():
            if max_pages is not None and tried >= max_pages:
                break
            if word & KIND_MASK != DEVICE or algo_of(word) == second.ident or (
                    store.marked(table, idx) is not None):
                continue            # (zram skips pages under writeback too)
            age = table.age(idx)
            if age & TRIED or (want_idle and age & ~TRIED) or (
                    want_huge and not word & HUGE_BIT):
                continue
            blob = store.blob(word)
            if len(blob) < threshold:
                continue
            tried += 1
            new = second.compress(BY_ID[algo_of(word)].decompress(blob))
            gains = len(new) < dev.config.huge_threshold and (
                pool.charge(len(new)) < pool.charge(len(blob)))
            # a smaller class may still need a fresh zspage: never past capacity
            room = dev.config.physical - dev.physical_used + (
                PAGE_SIZE if word & HUGE_BIT else 0)
            if gains and pool.cost(len(new)) > room:
                continue                        # left for a later run, not marked
            if gains:
                dev.paths.store(table, idx, (None, new, second.ident, False), False, True)
                table.set_age(idx, age)         # recompression is no access
                dev.counters.recompressed_pages += 1
                dev.counters.recompress_saved_bytes += len(blob) - len(new)
                done += 1
            else:
                table.set_age(idx, age | TRIED)
                dev.counters.recompress_skipped_pages += 1
    dev.events.add("recompress", f"type={kind}: {tried} pages tried, {done} "
                   f"recompressed with {second.name}")
    dev.refresh()
    return done
