"""The emulated compressed-memory device: where a page's life is decided.

Every page slot of every file changes state here and nowhere else:

    hole ──write──▶ same | compressed | huge     (on the device)
                    fallback                     (refused by write control, kept in host memory)
                    poisoned | hole              (no room, write control off, overflow=poison|drop)
    compressed ──zswap read (fault)──▶ promoted  (compressed copy released)
    compressed ──direct write (fault)─▶ promoted
    promoted ──LRU over budget, or .cram/demote──▶ through write control again
    any ──discard / truncate──▶ hole

The device knows nothing of FUSE. It takes a `SlotTable` (one per file) and
byte ranges, and raises `DeviceError` with an errno for the adapter to pass on.
All counters and gauges are kept incrementally by `_install` and `_release`,
the only two functions that add or remove a slot, so the accounting cannot
drift from the slots.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import NoReturn

from .compressors import BY_ID, COMPRESSORS, describe
from .config import SETTINGS, DeviceConfig
from .events import EventLog
from .levels import CRITICAL, FULL, LEVELS, LevelTracker
from .pool import ClassPool, Pool
from .tier import DramTier
from .units import PAGE_SIZE, format_size

SAME, DEVICE, FALLBACK, PROMOTED, POISONED = range(5)
KIND_NAMES = ("same", "compressed", "fallback", "promoted", "poisoned")
ZERO_PAGE = bytes(PAGE_SIZE)
ZERO_WORD = bytes(8)
_NONE_ID = COMPRESSORS["none"].ident
_WORDS = PAGE_SIZE // 8


class DeviceError(Exception):
    """A request the device refuses; `errno` is what the caller should see."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class Slot:
    """One non-hole page slot. Holes have no Slot at all."""

    __slots__ = ("algo", "charge", "extra", "handle", "huge", "kind", "word")

    def __init__(self, kind: int, handle: int = 0, algo: int = 0, huge: bool = False,
                 charge: int = 0, extra: int = 0, word: bytes = b"") -> None:
        self.kind = kind
        self.handle = handle      # pool handle (DEVICE, FALLBACK)
        self.algo = algo          # compressor id that wrote it
        self.huge = huge          # stored uncompressed
        self.charge = charge      # physical bytes this slot costs the device
        self.extra = extra        # the part of charge added by an injected ratio
        self.word = word          # the repeated 8-byte word (SAME)


class SlotTable:
    """One file's sparse page slots, and that file's share of the device."""

    __slots__ = ("__weakref__", "name", "physical_bytes", "promoted_pages", "slots",
                 "stored_pages")

    def __init__(self, name: str = "") -> None:
        self.name = name                  # for event lines; the namespace keeps it current
        self.slots: dict[int, Slot] = {}
        self.stored_pages = 0             # same + compressed + huge
        self.physical_bytes = 0
        self.promoted_pages = 0


@dataclass
class Counters:
    """Monotonic counters, named as zram and zswap name them where they can be."""

    reads: int = 0
    writes: int = 0
    faults: int = 0
    promotions: int = 0
    demotions: int = 0
    reject_write_control: int = 0
    failed_reads: int = 0
    failed_writes: int = 0
    poisoned_pages: int = 0
    dropped_writes: int = 0
    discarded_pages: int = 0
    zero_released_pages: int = 0
    notify_free: int = 0
    invalid_io: int = 0
    huge_pages_since: int = 0
    pages_compacted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def page_spans(off: int, size: int) -> Iterator[tuple[int, int, int]]:
    """Split a byte range into (page index, start, end) pieces within each page."""
    end = off + size
    while off < end:
        idx, start = divmod(off, PAGE_SIZE)
        stop = min(PAGE_SIZE, start + end - off)
        yield idx, start, stop
        off += stop - start


def same_word(page: bytes) -> bytes | None:
    """The 8-byte word a page repeats, as zram's page_same_filled checks, or None."""
    word = page[:8]
    return word if page == word * _WORDS else None


class Device:
    def __init__(self, config: DeviceConfig | None = None, pool: Pool | None = None,
                 fallback_pool: Pool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config or DeviceConfig()
        self.config.check()
        self.mount_physical = self.config.physical
        self.pool: Pool = pool or ClassPool()
        self.fallback: Pool = fallback_pool or ClassPool()
        self.tier = DramTier()
        self.levels = LevelTracker()
        self.events = EventLog(clock=clock)
        self.counters = Counters()
        self.pages = [0] * len(KIND_NAMES)   # live slots by kind
        self.huge_pages = 0
        self.inflate = 1.0                   # injected cost factor for new pages
        self.mem_used_max = 0
        self._extra = 0                      # sum of Slot.extra over device slots
        self._level_listeners: list[Callable[[str], None]] = []

    # ------------------------------------------------------------ accounting

    @property
    def physical_used(self) -> int:
        return self.pool.used_bytes + self._extra

    @property
    def logical_stored(self) -> int:
        """Bytes of page slots the device holds (zram's orig_data_size)."""
        return (self.pages[SAME] + self.pages[DEVICE]) * PAGE_SIZE

    @property
    def fill(self) -> float:
        return self.physical_used / self.config.physical

    @property
    def ratio(self) -> float:
        """logical / physical; infinite while only same-filled pages are stored."""
        used = self.physical_used
        if used:
            return self.logical_stored / used
        return float("inf") if self.logical_stored else 0.0

    @property
    def danger(self) -> str:
        return self.levels.name

    @property
    def refusing(self) -> bool:
        """Would write control refuse a new page right now?"""
        return self.config.write_control and self.levels.level >= CRITICAL

    def on_level_change(self, listener: Callable[[str], None]) -> None:
        self._level_listeners.append(listener)

    def _refresh(self, overflowed: bool = False) -> None:
        used = self.physical_used
        if used > self.mem_used_max:
            self.mem_used_max = used
        c = self.config
        old = self.levels.name
        if self.levels.update(used / c.physical, c.warn_at, c.critical_at, c.hysteresis,
                              overflowed):
            self.events.add("level", f"{old} -> {self.levels.name} fill={self.fill:.1%}")
            for listener in self._level_listeners:
                listener(self.levels.name)

    def _install(self, table: SlotTable, idx: int, slot: Slot) -> None:
        table.slots[idx] = slot
        kind = slot.kind
        self.pages[kind] += 1
        if kind == DEVICE:
            table.stored_pages += 1
            table.physical_bytes += slot.charge
            self._extra += slot.extra
            if slot.huge:
                self.huge_pages += 1
                self.counters.huge_pages_since += 1
        elif kind == SAME:
            table.stored_pages += 1
        elif kind == PROMOTED:
            table.promoted_pages += 1

    def _release(self, table: SlotTable, idx: int) -> Slot | None:
        """Remove a slot and free whatever memory it held; return the old slot."""
        slot = table.slots.pop(idx, None)
        if slot is None:
            return None
        kind = slot.kind
        self.pages[kind] -= 1
        if kind == DEVICE:
            self.pool.free(slot.handle)
            table.stored_pages -= 1
            table.physical_bytes -= slot.charge
            self._extra -= slot.extra
            if slot.huge:
                self.huge_pages -= 1
        elif kind == SAME:
            table.stored_pages -= 1
        elif kind == FALLBACK:
            self.fallback.free(slot.handle)
        elif kind == PROMOTED:
            self.tier.pop((table, idx))
            table.promoted_pages -= 1
        return slot

    # ------------------------------------------------------------ page paths

    def _decode(self, slot: Slot) -> bytes:
        pool = self.pool if slot.kind == DEVICE else self.fallback
        blob = pool.get(slot.handle)
        return BY_ID[slot.algo].decompress(blob)

    def _peek(self, table: SlotTable, idx: int, touch: bool = False) -> bytes:
        """A page's bytes with no tiering side effects (for read-modify-write).

        `touch` marks a promoted page as recently used, as a real read does."""
        slot = table.slots.get(idx)
        if slot is None:
            return ZERO_PAGE
        kind = slot.kind
        if kind == SAME:
            return slot.word * _WORDS
        if kind == PROMOTED:
            key = (table, idx)
            return self.tier.get(key) if touch else self.tier.peek(key)
        if kind == POISONED:
            self._poisoned_read(table, idx)
        return self._decode(slot)

    def _poisoned_read(self, table: SlotTable, idx: int) -> None:
        self.counters.failed_reads += 1
        self.events.add("poison_read", f"{table.name} page {idx}: machine check, EIO",
                        ratelimit=True)
        raise DeviceError(errno.EIO, f"page {idx} of {table.name} is poisoned")

    def _read_page(self, table: SlotTable, idx: int) -> bytes:
        slot = table.slots.get(idx)
        if slot is None or slot.kind not in (DEVICE, FALLBACK):
            return self._peek(table, idx, touch=True)
        data = self._decode(slot)
        if self.config.mode == "zswap":
            # Every access faults; the page goes back to DRAM and the compressed
            # copy is released (zswap loads are exclusive).
            self.counters.faults += 1
            if self.config.dram >= PAGE_SIZE:
                self._release(table, idx)
                self._to_dram(table, idx, data)
                self.counters.promotions += 1
        return data

    def _to_dram(self, table: SlotTable, idx: int, data: bytes) -> None:
        self.tier.put((table, idx), data)
        self._install(table, idx, Slot(PROMOTED))
        self._enforce_budget()
        self._refresh()

    def _write_page(self, table: SlotTable, idx: int, page: bytes) -> None:
        c = self.config
        if c.mode == "direct" and c.dram >= PAGE_SIZE and same_word(page) is None:
            # A write fault on a read-only mapped page: it moves to DRAM, and its
            # compressed copy is freed.
            key = (table, idx)
            slot = table.slots.get(idx)
            if slot is not None and slot.kind == PROMOTED:
                self.tier.put(key, page)
                return
            old = self._release(table, idx)
            self._to_dram(table, idx, page)
            if old is not None and old.kind in (DEVICE, FALLBACK):
                self.counters.faults += 1
                self.counters.promotions += 1
            return
        self._store(table, idx, page, demoting=False)

    def _store(self, table: SlotTable, idx: int, page: bytes, demoting: bool) -> bool:
        """Move a page onto the device: the "ask the driver if it's safe" path.

        Returns False only when `demoting` and the page must stay where it is;
        a refused user write raises ENOSPC instead. Either way the old copy is
        untouched unless the page was placed somewhere.
        """
        c = self.config
        word = same_word(page)
        if word is not None:
            old = self._release(table, idx)
            if old is not None and old.kind in (DEVICE, FALLBACK, PROMOTED) and word == ZERO_WORD:
                self.counters.zero_released_pages += 1
            self._install(table, idx, Slot(SAME, word=word))
            self._refresh()
            return True

        comp = COMPRESSORS[c.compressor]
        blob = comp.compress(page)
        algo = comp.ident
        huge = len(blob) >= c.huge_threshold
        if huge:
            blob, algo = page, _NONE_ID
        cost = self.pool.cost(len(blob))
        extra = int(cost * (self.inflate - 1))
        old = table.slots.get(idx)
        freed = old.charge if old is not None and old.kind == DEVICE else 0
        fits = self.physical_used - freed + cost + extra <= c.physical

        if c.write_control and (self.levels.level >= CRITICAL or not fits):
            self.counters.reject_write_control += 1
            why = f"level {self.danger}" if fits else "no physical room"
            if c.fallback == "host":
                self.events.add("refused", f"{table.name} page {idx}: {why}, kept in host "
                                "memory (fallback)", ratelimit=True)
                self._release(table, idx)
                self._install(table, idx, Slot(FALLBACK, self.fallback.put(blob), algo, huge))
                self._refresh()
                return True
            return self._refuse(table, idx, why, demoting)

        if not fits:
            self._refresh(overflowed=True)
            if c.overflow == "refuse":
                return self._refuse(table, idx, "device full", demoting)
            self._release(table, idx)
            if c.overflow == "poison":
                self.counters.poisoned_pages += 1
                self.events.add("poisoned", f"{table.name} page {idx}: device full, page "
                                "poisoned", ratelimit=True)
                self._install(table, idx, Slot(POISONED))
            else:
                self.counters.dropped_writes += 1
                self.events.add("dropped", f"{table.name} page {idx}: device full, write "
                                "dropped", ratelimit=True)
            self._refresh()
            return True

        self._release(table, idx)
        handle = self.pool.put(blob)
        self._install(table, idx, Slot(DEVICE, handle, algo, huge, cost + extra, extra))
        self._refresh()
        return True

    def _refuse(self, table: SlotTable, idx: int, why: str, demoting: bool) -> bool:
        if demoting:
            self.events.add("demote_failed", f"{table.name} page {idx}: {why}, stays in DRAM",
                            ratelimit=True)
            return False
        self.counters.failed_writes += 1
        self.events.add("refused", f"{table.name} page {idx}: {why}, ENOSPC", ratelimit=True)
        raise DeviceError(errno.ENOSPC, f"device refused page {idx} of {table.name}: {why}")

    def _enforce_budget(self) -> None:
        budget = self.config.dram // PAGE_SIZE
        while len(self.tier) > budget and self._demote_one():
            pass

    def _demote_one(self) -> bool:
        key = self.tier.oldest()
        if key is None:
            return False
        table, idx = key  # type: ignore[misc]
        if not self._store(table, idx, self.tier.peek(key), demoting=True):
            return False
        self.counters.demotions += 1
        return True

    # ------------------------------------------------------------ requests

    def read(self, table: SlotTable, off: int, size: int) -> bytes:
        """Bytes [off, off+size) of a file's slots; holes read as zeros."""
        parts = []
        for idx, start, stop in page_spans(off, size):
            self.counters.reads += 1
            page = self._read_page(table, idx)
            parts.append(page if stop - start == PAGE_SIZE else page[start:stop])
        return b"".join(parts)

    def write(self, table: SlotTable, off: int, data: bytes) -> int:
        """Write data at off. A refusal after some pages gives a short count, as
        a full disk does; a refusal of the first page raises."""
        done = 0
        view = memoryview(data)
        for idx, start, stop in page_spans(off, len(data)):
            n = stop - start
            chunk = view[done:done + n]
            if n == PAGE_SIZE:
                page = bytes(chunk)
            else:
                old = self._peek(table, idx)
                page = b"".join((old[:start], chunk, old[stop:]))
            self.counters.writes += 1
            try:
                self._write_page(table, idx, page)
            except DeviceError:
                if done:
                    return done
                raise
            done += n
        return done

    def discard(self, table: SlotTable, first: int, count: int) -> int:
        """Release `count` whole pages from `first`; return how many held data."""
        released = 0
        if count > len(table.slots):
            targets = [i for i in table.slots if first <= i < first + count]
        else:
            targets = [i for i in range(first, first + count) if i in table.slots]
        for idx in targets:
            self._release(table, idx)
            released += 1
        self.counters.discarded_pages += released
        self.counters.notify_free += released
        self._refresh()
        return released

    def truncate(self, table: SlotTable, size: int) -> None:
        """Drop slots past `size` and zero the tail of a partial last page."""
        first_gone = -(-size // PAGE_SIZE)
        for idx in [i for i in table.slots if i >= first_gone]:
            self._release(table, idx)
        tail = size % PAGE_SIZE
        slot = table.slots.get(size // PAGE_SIZE) if tail else None
        if slot is not None and slot.kind != POISONED:
            page = self._peek(table, size // PAGE_SIZE)
            if any(page[tail:]):
                self._write_page(table, size // PAGE_SIZE, page[:tail] + bytes(PAGE_SIZE - tail))
        self._refresh()

    def drop(self, table: SlotTable) -> None:
        """Free every slot of a file that is gone."""
        for idx in list(table.slots):
            self._release(table, idx)
        self._refresh()

    def demote(self, count: int | None) -> int:
        """Demote up to `count` (None: all) promoted pages now, coldest first."""
        done = 0
        while (count is None or done < count) and self._demote_one():
            done += 1
        return done

    # ------------------------------------------------------------ knobs and faults

    def set(self, name: str, text: str) -> None:
        """Change a setting live; EINVAL (and an events line) leaves the old value."""
        if name not in SETTINGS or not SETTINGS[name].runtime:
            self.reject(name, "cannot be changed while mounted")
        try:
            self.config = self.config.with_value(name, text)
        except ValueError as e:
            self.reject(name, str(e))
        self.events.add("knob", f"{name}={self.config.show(name)}")
        self._enforce_budget()
        self._refresh()

    def reject(self, what: str, why: str) -> NoReturn:
        """Log a refused control write and raise EINVAL with the reason."""
        self.events.add("rejected", f"{what}: {why}")
        raise DeviceError(errno.EINVAL, f"{what}: {why}")

    def inject_ratio(self, factor: float) -> None:
        if not 1 <= factor <= 64:
            self.reject("inject", f"ratio must be 1-64, got {factor:g}")
        self.inflate = factor
        self.events.add("inject", f"ratio {factor:g}: new pages cost {factor:g}x")

    def inject_physical(self, size: int) -> None:
        try:
            self.config = self.config.with_value("physical", str(size))
        except ValueError as e:
            self.reject("inject", str(e))
        self.events.add("inject", f"physical {format_size(size)}")
        self._refresh()

    def inject_poison(self, table: SlotTable, idx: int) -> None:
        if idx not in table.slots:
            self.reject("inject", f"page {idx} of {table.name} holds no data")
        self._release(table, idx)
        self._install(table, idx, Slot(POISONED))
        self.counters.poisoned_pages += 1
        self.events.add("inject", f"poison {table.name} page {idx}")
        self._refresh()

    def clear_faults(self) -> None:
        self.inflate = 1.0
        self.config = self.config.with_value("physical", str(self.mount_physical))
        self.events.add("inject", "clear")
        self._refresh()

    def active_faults(self) -> list[str]:
        faults = []
        if self.inflate != 1:
            faults.append(f"ratio {self.inflate:g}")
        if self.config.physical != self.mount_physical:
            faults.append(f"physical {self.config.physical}")
        if self.pages[POISONED]:
            faults.append(f"poisoned_pages {self.pages[POISONED]}")
        return faults

    def reset_peak(self) -> None:
        self.mem_used_max = self.physical_used

    def reset(self) -> None:
        """Forget counters, faults and peaks; the caller has dropped every table."""
        assert not any(self.pages), "reset with live slots"
        self.counters = Counters()
        self.inflate = 1.0
        self.config = self.config.with_value("physical", str(self.mount_physical))
        self.mem_used_max = 0
        self.events.add("reset", "all data dropped")
        self._refresh()

    # ------------------------------------------------------------ reporting

    def overflow_at_ratio(self) -> int:
        """Bytes by which filling the advertised capacity at today's ratio would
        overflow physical capacity; 0 when today's ratio is good enough."""
        ratio = self.ratio
        if not self.physical_used or ratio <= 0:
            return 0
        need = int(self.config.advertised / ratio)
        return max(0, need - self.config.physical)

    def stats(self) -> dict[str, int | float | str]:
        c = self.config
        ratio = self.ratio
        effective = c.advertised if ratio in (0.0, float("inf")) else int(c.physical * ratio)
        out: dict[str, int | float | str] = {
            "advertised": c.advertised,
            "physical": c.physical,
            "physical_used": self.physical_used,
            "logical_stored": self.logical_stored,
            "compressed_bytes": self.pool.stored_bytes,
            "ratio": round(ratio, 2) if ratio != float("inf") else ratio,
            "required_ratio": round(c.advertised / c.physical, 2),
            "effective_capacity": effective,
            "fill": round(self.fill, 4),
            "danger": self.danger,
            "overflow_at_ratio": self.overflow_at_ratio(),
            "compressor": c.compressor,
            "mode": c.mode,
            "mem_used_max": self.mem_used_max,
            "stored_pages": self.pages[SAME] + self.pages[DEVICE],
            "same_filled_pages": self.pages[SAME],
            "stored_incompressible_pages": self.huge_pages,
            "compressed_pages": self.pages[DEVICE] - self.huge_pages,
            "fallback_pages": self.pages[FALLBACK],
            "fallback_bytes": self.fallback.used_bytes,
            "promoted_pages": self.pages[PROMOTED],
            "promoted_bytes": self.pages[PROMOTED] * PAGE_SIZE,
            "poisoned_now": self.pages[POISONED],
        }
        out.update(self.counters.as_dict())
        return out

    def mm_stat(self) -> str:
        """zram's mm_stat, field for field."""
        c = self.counters
        return " ".join(str(v) for v in (
            self.logical_stored, self.pool.stored_bytes, self.physical_used,
            self.config.physical, self.mem_used_max, self.pages[SAME], c.pages_compacted,
            self.huge_pages, c.huge_pages_since))

    def io_stat(self) -> str:
        c = self.counters
        return f"{c.failed_reads} {c.failed_writes} {c.invalid_io} {c.notify_free}"

    def comp_algorithm(self) -> str:
        return describe(self.config.compressor)


__all__ = ["FULL", "LEVELS", "Device", "DeviceError", "SlotTable"]
