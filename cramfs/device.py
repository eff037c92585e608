"""The emulated compressed-memory device: where a page's life is decided.

Every page slot of every file changes state here and nowhere else:

    hole ──write──▶ same | compressed | huge     (on the device)
                    fallback                     (refused by write control, kept in host memory)
                    poisoned | hole              (no room, write control off, overflow=poison|drop)
    compressed ──zswap read (fault)──▶ promoted  (compressed copy released from the pool)
    compressed ──direct write (fault)─▶ promoted
    promoted ──LRU over budget, or .cram/demote──▶ through write control again

A promoted page keeps, outside the pool, the compressed form the device had:
demoting it unchanged puts those bytes back without running the compressor.
Only a page a direct-mode write changed, or whose compressor changed since, is
compressed at demotion.
    compressed ──writeback (idle, huge, one page)──▶ written back  (in the backing file)
    refused ──fallback=writeback──▶ written back, acknowledged once it is in the file
    compressed ──reclaim, before write control refuses──▶ written back
    written back ──read (a counted fault)──▶ served from the file; promoted in zswap mode
    any ──discard / truncate──▶ hole

The device knows nothing of FUSE. It takes a `PageTable` (one per file) and
byte ranges, and raises `DeviceError` with an errno for the adapter to pass on.
All counters and gauges are kept incrementally by `_install` and `_release`,
the only two functions that add or remove a slot, so the accounting cannot
drift from the slots.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import heapq
import os
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from . import engine as engines
from . import parallel
from .backing import LOCK_WAIT, READ, WRITE, BackingFile, IoJob, Op, open_file, run_inline
from .compressors import BY_ID, COMPRESSORS, describe
from .config import SETTINGS, DeviceConfig
from .engine import (
    NativeCore,
    make_fallback_pool,
    make_pool,
    page_encoder,
    request_encoder,
    table_class,
    tier_class,
)
from .events import EventLog
from .levels import CRITICAL, LevelTracker, pressure, pressure_band
from .pagetable import (
    ALGO_SHIFT,
    BACKED,
    DEVICE,
    FALLBACK,
    HANDLE_SHIFT,
    HUGE_BIT,
    INLINE_LIMIT,
    KIND_MASK,
    KINDS,
    POISONED,
    PROMOTED,
    SAME,
    TRIED,
    PageTable,
    WordStore,
    algo_of,
    pack,
    same_handle,
    same_word_of,
)
from .pool import MAX_ZSPAGE_PAGES, Pool, rebase
from .tier import DramTier
from .units import PAGE_SIZE, format_size, shown

ZERO_PAGE = bytes(PAGE_SIZE)
ZERO_WORD = bytes(8)
_NONE_ID = COMPRESSORS["none"].ident
_WORDS = PAGE_SIZE // 8
_LOW_BITS = (1 << HANDLE_SHIFT) - 1
_WIDE_WORD = 1 << HANDLE_SHIFT       # a same-filled word kept in the WordStore
_INJECTED_POISON = pack(POISONED, algo=1)   # told apart from overflow's poison
_MAX_GROWTH = MAX_ZSPAGE_PAGES * PAGE_SIZE      # the most one store can add to a pool
WRITEBACK_BATCH = 256        # pages one writeback step holds in memory on their way to the file
WRITEBACK_KINDS = ("idle", "huge", "huge_idle", "incompressible")


class DeviceError(Exception):
    """A request the device refuses; `errno` is what the caller should see."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


# A page made ready for the device: (same-filled word or None, blob to store,
# compressor id, huge). A plain tuple: it is built for every page written.
# The DRAM tier keeps one per promoted page: the compressed form the device had,
# or, with compressor id DIRTY, the page itself once a write changed it.
Encoded = tuple[bytes | None, bytes, int, bool]
DIRTY = -1

if engines.NativeCore is not None:
    # the compiled engine's copy of the word layout: one source of truth, checked here
    engines.check_constants("_devcore", engines.devcore_constants(), {
        "PAGE": PAGE_SIZE, "KIND_MASK": KIND_MASK, "SAME": SAME, "DEVICE": DEVICE,
        "FALLBACK": FALLBACK, "PROMOTED": PROMOTED, "BACKED": BACKED,
        "ALGO_SHIFT": ALGO_SHIFT, "HUGE_BIT": HUGE_BIT, "HANDLE_SHIFT": HANDLE_SHIFT,
        "WIDE_WORD": _WIDE_WORD, "INJECTED_POISON": _INJECTED_POISON, "DIRTY": DIRTY,
        "NONE_ID": _NONE_ID, "LZ4_ID": COMPRESSORS["lz4"].ident,
        "INLINE_LIMIT": INLINE_LIMIT})


@dataclass(slots=True)
class Counters:
    """Monotonic counters, named as zram and zswap name them where they can be. (Slots:
    a fault bumps two or three of them, and a slot is cheaper to reach than a dict.)"""

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
    discards: int = 0                # discard requests: .cram/discard lines, fallocate
    invalid_io: int = 0
    huge_pages_since: int = 0
    pages_compacted: int = 0
    fallback_limit_hit: int = 0      # refused pages that host memory had no room for
    recompressed_pages: int = 0      # kept in the secondary algorithm
    recompress_saved_bytes: int = 0  # compressed bytes those pages shed
    recompress_skipped_pages: int = 0  # tried without gain, marked until rewritten
    promotions_skipped: int = 0      # faults served in place: the DRAM tier could not demote
    bd_reads: int = 0                # pages read from the backing file (zram bd_stat)
    bd_writes: int = 0               # pages written to it (zram bd_stat)
    bd_failed: int = 0               # backing-file reads and writes that failed
    bd_full: int = 0                 # pages that found the backing file full (or the limit)
    writeback_dropped: int = 0       # written back while rewritten: the write won
    writeback_fallback: int = 0      # refused pages placed in the backing file
    reclaim_compactions: int = 0     # compactions reclaim ran before a refusal
    reclaim_written: int = 0         # pages reclaim wrote back
    reclaim_rescued: int = 0         # pages stored because reclaim made room
    reclaim_failed: int = 0          # pages refused although reclaim ran

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _WritebackRun:
    """One `writeback` from its first batch to its last."""

    kind: str
    what: str
    candidates: Iterator[tuple[PageTable, int]]
    written: int = 0
    err: int = 0
    why: str = ""


def _page(table: PageTable, idx: int) -> str:
    """A page as event lines name it: the file name quoted, so it cannot forge a line."""
    return f"{shown(table.name, 64)} page {idx}"


def same_word(page: bytes) -> bytes | None:
    """The 8-byte word a page repeats, as zram's page_same_filled checks, or None.

    The last word is compared first, as zram does: most pages fail there, without
    building a 4 KiB page to compare against."""
    word = page[:8]
    return word if page[-8:] == word and page == word * _WORDS else None


def encoder(compressor: str, huge_threshold: int) -> Callable[[bytes], Encoded]:
    """A pure function from page to Encoded, safe to run in worker threads."""
    comp = COMPRESSORS[compressor]
    compress, ident = comp.compress, comp.ident

    def encode(page: bytes) -> Encoded:
        word = same_word(page)
        if word is not None:
            return word, b"", 0, False
        blob = compress(page)
        if len(blob) >= huge_threshold:
            return None, page, _NONE_ID, True
        return None, blob, ident, False

    return encode


class Device:
    """The device, and the reference for every page transition. On the native engine
    `Device(config)` gives a `NativeDevice`: this class with the common case of its
    hottest transitions compiled (_devcore.pyx), and every rule still decided here."""

    def __new__(cls, config: DeviceConfig | None = None, *args: Any, **kwargs: Any) -> Device:
        if cls is Device and NativeCore is not None and (
                config or DeviceConfig()).engine == "native":
            return NativeCore.__new__(NativeDevice)
        return super().__new__(cls)

    def __init__(self, config: DeviceConfig | None = None, pool: Pool | None = None,
                 fallback_pool: Pool | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic    # access ages and delayed releases (a replay's own clock)
        self.config = config or DeviceConfig()
        self.config.check()
        self.mount_physical = self.config.physical
        self.pool: Pool = pool or make_pool(self.config.engine, self.config.huge_threshold,
                                            self.config.chain_size)
        self.fallback: Pool = fallback_pool or make_fallback_pool(self.config.engine)
        self.tier: DramTier[tuple[PageTable, int], Encoded] = tier_class(self.config.engine)()
        self.words = WordStore()             # same-filled words too wide for a table word
        self.levels = LevelTracker()
        self.pressure = 0                    # the RFC's 0-1000, quantised (levels.pressure)
        self.events = EventLog(clock=clock)
        self.counters = Counters()
        self.pages = [0] * KINDS             # live slots by kind (index 0 unused)
        self.huge_pages = 0
        self.inflate = 1.0                   # injected cost factor for new pages
        self.mem_used_max = 0
        self._extra = 0                      # sum of injected extra charges
        self.charged = 0                     # sum of the files' compressed charges
        self.injected_poison = 0             # poisoned pages that inject made, not overflow
        self.tracking = False                # per-page access ages kept (idle, recompress)
        self.recomp_algorithm: str | None = None
        self._epoch = self._monotonic()
        self._link_free = 0.0                # when the emulated media's link is next idle
        # freed device objects still charged, oldest first (release_delay)
        self._pending: collections.deque[tuple[float, int]] = collections.deque()
        self.pending_bytes = 0
        self._level_listeners: list[Callable[[str], None]] = []
        # every table that may hold device pages, for compaction, idle and recompression
        # to walk: in creation order (a WeakSet's order follows addresses, and two runs
        # of the same operations must make the same choices)
        self._tables: dict[int, weakref.ref[PageTable]] = {}
        self._next_table = 0
        self._table_class = table_class(self.config.engine)
        # writeback: the backing file, and the pages on their way to it whose device
        # copy stays until the write lands (zram's ZRAM_UNDER_WB): any release of
        # such a slot drops its mark, so the finished write is dropped too
        self.backing: BackingFile | None = None
        self._under_wb: dict[tuple[PageTable, int], int] = {}
        self._wb_busy = False
        self._staged: list[tuple[PageTable, int, int, bytes]] = []   # fallback=writeback
        self._behind: dict[int, tuple[PageTable, int]] = {}          # reclaim's blocks
        self.wb_limit_enable = False
        self.wb_limit = 0                    # pages writeback may still write, if enabled
        self._last_compact = float("-inf")
        self._configured()
        if self.config.backing_dev:
            self.attach_backing(self.config.backing_dev,
                                *open_file(self.config.backing_dev, LOCK_WAIT))

    def _configured(self) -> None:
        """Recompute what is derived from the settings (after any change)."""
        c = self.config
        self._encode = page_encoder(c.engine, c.compressor, c.huge_threshold) or encoder(
            c.compressor, c.huge_threshold)
        self._encode_request = request_encoder(c.engine, c.compressor, c.huge_threshold)
        self._algo = COMPRESSORS[c.compressor].ident
        self._direct_dram = c.mode == "direct" and c.dram >= PAGE_SIZE
        self._zswap = c.mode == "zswap"
        self._promote = self._zswap and c.dram >= PAGE_SIZE
        self._tier_budget = c.dram // PAGE_SIZE
        self._release_delay = c.release_delay      # read on every release
        self._comp_threads = c.comp_threads        # read on every request
        # is any media emulation on? (the adapter skips media_delay() when not)
        self.media = bool(c.read_latency or c.write_latency or c.bandwidth)
        self._band()

    def _band(self) -> None:
        """Derive the thresholds the hot path compares against (after any change
        of settings, level or injected faults)."""
        c = self.config
        low, high = self.levels.quiet_band(c.warn_at, c.critical_at, c.hysteresis)
        low, high = pressure_band(self.levels.level, self.pressure, c.warn_at, c.critical_at,
                                  low, high)
        self._quiet_low = low * c.physical
        self._quiet_high = high * c.physical
        # Below this usage a store needs no questions: it fits whatever its
        # size, write control is not refusing, and no injected cost applies.
        easy = self.inflate == 1 and not (c.write_control and self.levels.level >= CRITICAL)
        self._easy_below = c.physical - _MAX_GROWTH if easy else -1
        # A compressed page write control refuses whatever its size, into host memory
        # (the compiled engine's fast path under pressure; _screen decides the same)
        self._refuse_to_host = (self.inflate == 1 and c.write_control and c.reclaim == "off"
                                and self.levels.level >= CRITICAL and c.fallback == "host")

    # ------------------------------------------------------------ accounting

    @property
    def physical_used(self) -> int:
        return self.pool.used_bytes + self._extra

    @property
    def logical_stored(self) -> int:
        """Bytes of page slots the device holds (zram's orig_data_size, which keeps
        written-back pages)."""
        return (self.pages[SAME] + self.pages[DEVICE] + self.pages[BACKED]) * PAGE_SIZE

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

    def table(self, name: str = "") -> PageTable:
        """A new file's page table, known to the device so compaction can rewrite it."""
        table = self._table_class(name)
        if self.tracking:
            table.track(self._now())
        key, tables = self._next_table, self._tables
        # a gone table drops out by itself (the callback holds the dict, not the device)
        tables[key] = weakref.ref(table, lambda _: tables.pop(key, None))
        self._next_table += 1
        return table

    def tables(self) -> list[PageTable]:
        """The live tables, oldest first."""
        return [t for ref in list(self._tables.values()) if (t := ref()) is not None]

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener("danger")` when the level changes and `listener("pressure")`
        when the quantised pressure does: what poll() waiters wait for."""
        self._level_listeners.append(listener)

    def _refresh(self, overflowed: bool = False, settings: bool = False) -> None:
        """Track the peak, the level and the pressure after usage or `settings` changed."""
        if self._pending:
            self.release_pending(self._monotonic())
        used = self.pool.used_bytes + self._extra
        if used > self.mem_used_max:
            self.mem_used_max = used
        if not (overflowed or settings) and self._quiet_low <= used < self._quiet_high:
            return
        c = self.config
        old = self.levels.name
        changed = []
        if self.levels.update(used / c.physical, c.warn_at, c.critical_at, c.hysteresis,
                              overflowed):
            self.events.add("level", f"{old} -> {self.levels.name} fill={self.fill:.1%}")
            changed.append("danger")
        now = pressure(self.levels.level, used / c.physical, c.warn_at, c.critical_at)
        if now != self.pressure:
            self.pressure = now
            changed.append("pressure")
        if changed:
            self._band()
            for what in changed:
                for listener in self._level_listeners:
                    listener(what)

    def _install(self, table: PageTable, idx: int, word: int, charge: int = 0,
                 extra: int = 0) -> None:
        table.set(idx, word)
        kind = word & KIND_MASK
        self.pages[kind] += 1
        if kind == DEVICE:
            table.stored_pages += 1
            table.physical_bytes += charge + extra
            self.charged += charge + extra
            if self.tracking:
                table.renew(idx, self._now())
            if extra:
                table.extra[idx] = extra
                self._extra += extra
            if word & HUGE_BIT:
                self.huge_pages += 1
                self.counters.huge_pages_since += 1
        elif kind == SAME:
            table.stored_pages += 1
        elif kind == PROMOTED:
            table.promoted_pages += 1
        elif kind == BACKED:
            table.stored_pages += 1
        elif word == _INJECTED_POISON:
            self.injected_poison += 1

    def _release(self, table: PageTable, idx: int) -> int:
        """Make a slot a hole and free whatever it held; return the old word."""
        if self._wb_busy and self._under_wb.pop((table, idx), None) is not None:
            self._wb_busy = bool(self._under_wb)
        word = table.clear(idx)
        if not word:
            return 0
        kind = word & KIND_MASK
        self.pages[kind] -= 1
        if kind == DEVICE:
            handle = word >> HANDLE_SHIFT
            if self._release_delay:
                # the file lets go now; the device gets the memory back later
                charge = self.pool.charge_of(handle)
                deadline = max(self._monotonic() + self._release_delay / 1000,
                               self._pending[-1][0] if self._pending else 0.0)
                self._pending.append((deadline, handle))
                self.pending_bytes += charge
            else:
                charge = self.pool.free(handle)
            extra = table.extra.pop(idx, 0) if table.extra else 0
            table.stored_pages -= 1
            table.physical_bytes -= charge + extra
            self.charged -= charge + extra
            self._extra -= extra
            if word & HUGE_BIT:
                self.huge_pages -= 1
        elif kind == SAME:
            table.stored_pages -= 1
            if word & _WIDE_WORD:
                self.words.free(word >> (HANDLE_SHIFT + 1))
        elif kind == FALLBACK:
            self.fallback.free(word >> HANDLE_SHIFT)
        elif kind == PROMOTED:
            self.tier.pop((table, idx))
            table.promoted_pages -= 1
        elif kind == BACKED:
            self._backed_released(table, word)
        elif word == _INJECTED_POISON:
            self.injected_poison -= 1
        return word

    def _backed_released(self, table: PageTable, word: int) -> None:
        """The rest of releasing a written-back slot: its block's hole gets punched."""
        table.stored_pages -= 1
        assert self.backing is not None
        self.backing.free(word >> HANDLE_SHIFT)

    # ------------------------------------------------------------ page paths

    def _decode(self, word: int) -> bytes:
        pool = self.pool if word & KIND_MASK == DEVICE else self.fallback
        return BY_ID[algo_of(word)].decompress(pool.get(word >> HANDLE_SHIFT))

    def _peek(self, table: PageTable, idx: int, touch: bool = False) -> bytes:
        """A page's bytes with no tiering side effects (for read-modify-write).

        `touch` marks a promoted page as recently used, as a real read does."""
        word = table.get(idx)
        if not word:
            return ZERO_PAGE
        kind = word & KIND_MASK
        if kind == SAME:
            handle = word >> HANDLE_SHIFT
            return same_word_of(handle, self.words) * _WORDS if handle else ZERO_PAGE
        if kind == PROMOTED:
            key = (table, idx)
            _, blob, algo, _ = self.tier.get(key) if touch else self.tier.peek(key)
            return blob if algo == DIRTY else BY_ID[algo].decompress(blob)
        if kind == POISONED:
            self._poisoned_read(table, idx)
        if kind == BACKED:
            return self._backed_page(table, idx, word)
        return self._decode(word)

    def _poisoned_read(self, table: PageTable, idx: int) -> NoReturn:
        self.counters.failed_reads += 1
        self.events.add("poison_read", f"{_page(table, idx)}: machine check, EIO",
                        ratelimit=True)
        raise DeviceError(errno.EIO, f"{_page(table, idx)} is poisoned")

    def _read_page(self, table: PageTable, idx: int, data: bytes | None = None) -> bytes:
        """Serve one page; `data` is its decompressed content if already known."""
        word = table.get(idx)
        kind = word & KIND_MASK
        if kind == BACKED:
            return self._backed_fault(table, idx, word)
        if kind not in (DEVICE, FALLBACK):
            return self._peek(table, idx, touch=True)
        promote = self._promote
        algo = algo_of(word)
        # one copy out of the pool serves both the decompression and the promotion
        blob = b""
        if data is None or promote:
            pool = self.pool if kind == DEVICE else self.fallback
            blob = pool.get(word >> HANDLE_SHIFT)
        if data is None:
            data = BY_ID[algo].decompress(blob)
        if self.tracking:
            table.touch(idx, self._now())
        if self._zswap:
            # Every access faults; the page goes back to DRAM and the compressed
            # copy is released (zswap loads are exclusive).
            self.counters.faults += 1
            if promote:
                if self._tier_room():
                    kept = (None, blob, algo, bool(word & HUGE_BIT))
                    self._release(table, idx)
                    self._to_dram(table, idx, kept)
                    self.counters.promotions += 1
                else:
                    self.counters.promotions_skipped += 1
        return data

    def _tier_room(self) -> bool:
        """Make room for one more promoted page by demoting the coldest.

        False when demotion is refused: the tier then stops promoting rather
        than grow past its budget."""
        tier, budget = self.tier, self._tier_budget
        while len(tier) >= budget:
            if not self._demote_one():
                return False
        return True

    def _to_dram(self, table: PageTable, idx: int, kept: Encoded) -> None:
        self.tier.put((table, idx), kept)
        self._install(table, idx, PROMOTED)
        self._refresh()

    def _write_page(self, table: PageTable, idx: int, page: bytes,
                    enc: Encoded | None = None, force: bool = False) -> None:
        if self._direct_dram and (enc[0] is None if enc else same_word(page) is None):
            # A write fault on a read-only mapped page: it moves to DRAM, and its
            # compressed copy is freed.
            kind = table.get(idx) & KIND_MASK
            if kind == PROMOTED:
                self.tier.put((table, idx), (None, page, DIRTY, False))
                return
            if self._tier_room():
                self._release(table, idx)
                self._to_dram(table, idx, (None, page, DIRTY, False))
                if kind in (DEVICE, FALLBACK):
                    self.counters.faults += 1
                    self.counters.promotions += 1
                return
            # the tier is full and cannot demote: the write goes to the device
            self.counters.promotions_skipped += 1
        self._store(table, idx, enc or self._encode(page), demoting=False, force=force)

    def _store(self, table: PageTable, idx: int, enc: Encoded, demoting: bool,
               force: bool = False) -> bool:
        """Move a page onto the device: the "ask the driver if it's safe" path.

        Returns False only when `demoting` and the page must stay where it is;
        a refused user write raises ENOSPC instead. Either way the old copy is
        untouched unless the page was placed somewhere. `force` skips the
        question: only for a page the device already holds, rewritten smaller.
        """
        word, blob, algo, huge = enc
        if word is not None:
            old = self._release(table, idx)
            if word == ZERO_WORD and old & KIND_MASK in (DEVICE, FALLBACK, PROMOTED):
                self.counters.zero_released_pages += 1
            self._install(table, idx, pack(SAME, same_handle(word, self.words)))
            self._refresh()
            return True

        pool = self.pool
        size = len(blob)
        extra = 0 if self.inflate == 1 else int(pool.charge(size) * (self.inflate - 1))
        # Far from full, not refusing and with no injected cost there is nothing to
        # ask: that common case, paid on every page written, skips the screening.
        if pool.used_bytes + self._extra > self._easy_below and not force:
            outcome = self._screen(table, idx, blob, algo, huge, extra, demoting)
            if outcome is not None:
                return outcome
        self._release(table, idx)
        self._install(table, idx, pack(DEVICE, pool.put(blob), algo, huge), pool.charge(size),
                      extra)
        self._refresh()
        return True

    def _screen(self, table: PageTable, idx: int, blob: bytes, algo: int, huge: bool,
                extra: int, demoting: bool) -> bool | None:
        """Write control and overflow for a compressed page near capacity.

        None: the page goes onto the device. Otherwise the page went elsewhere
        (fallback, poison, drop) and this is what `_store` returns."""
        c = self.config
        size = len(blob)
        fits = self._fits(table, idx, size, extra)
        if c.write_control and c.reclaim != "off" and (
                self.levels.level >= CRITICAL or not fits):
            fits = self._reclaim(table, idx, size, extra)

        if c.write_control and (self.levels.level >= CRITICAL or not fits):
            self.counters.reject_write_control += 1
            why = f"level {self.danger}" if fits else "no physical room"
            if c.fallback == "writeback" and not demoting:
                return self._stage(table, idx, blob, algo, why)
            if c.fallback == "host" and (
                    self.fallback.used_bytes + self.fallback.charge(size) > c.fallback_limit):
                self.counters.fallback_limit_hit += 1
                why += ", host memory for fallback is full"
            elif c.fallback == "host":
                self.events.add("refused", lambda: self._kept_in_host(table, idx, why),
                                ratelimit=True)
                self._release(table, idx)
                self._install(table, idx, pack(FALLBACK, self.fallback.put(blob), algo, huge))
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
                self.events.add("poisoned", lambda: f"{_page(table, idx)}: device full, "
                                "page poisoned", ratelimit=True)
                self._install(table, idx, POISONED)
            else:
                self.counters.dropped_writes += 1
                self.events.add("dropped", lambda: f"{_page(table, idx)}: device full, "
                                "write dropped", ratelimit=True)
            self._refresh()
            return True
        return None

    @staticmethod
    def _kept_in_host(table: PageTable, idx: int, why: str) -> str:
        return f"{_page(table, idx)}: {why}, kept in host memory (fallback)"

    def _refused_to_host(self, table: PageTable, idx: int, size: int) -> str:
        """The events line of a page refused into host memory, for the compiled path,
        which has not asked whether it fit (only the line needs to know)."""
        why = f"level {self.danger}" if self._fits(table, idx, size, 0) else "no physical room"
        return self._kept_in_host(table, idx, why)

    def _fits(self, table: PageTable, idx: int, size: int, extra: int) -> bool:
        """Would a `size`-byte object for this slot stay within physical capacity?"""
        c = self.config
        used = self.pool.used_bytes + self._extra + extra
        if used + _MAX_GROWTH <= c.physical:
            return True             # far from full: no need to ask the pool
        # a huge page owns its page, so overwriting one frees that page for sure,
        # unless its release is delayed
        old = table.get(idx)
        whole = PAGE_SIZE if old & HUGE_BIT and not c.release_delay else 0
        freed = whole + table.extra.get(idx, 0) if old & KIND_MASK == DEVICE else 0
        return used - freed + self.pool.cost(size) <= c.physical

    def _refuse(self, table: PageTable, idx: int, why: str, demoting: bool) -> bool:
        if demoting:
            self.events.add("demote_failed", lambda: f"{_page(table, idx)}: {why}, stays "
                            "in DRAM", ratelimit=True)
            return False
        self.counters.failed_writes += 1
        self.events.add("refused", lambda: f"{_page(table, idx)}: {why}, ENOSPC",
                        ratelimit=True)
        raise DeviceError(errno.ENOSPC, f"device refused {_page(table, idx)}: {why}")

    def _enforce_budget(self) -> None:
        budget = self.config.dram // PAGE_SIZE
        while len(self.tier) > budget and self._demote_one():
            pass

    def _demote_one(self) -> bool:
        key = self.tier.oldest()
        if key is None:
            return False
        table, idx = key
        kept = self.tier.peek(key)
        algo = kept[2]
        if algo == DIRTY:
            kept = self._encode(kept[1])
        elif algo != self._algo and algo != _NONE_ID:
            kept = self._encode(BY_ID[algo].decompress(kept[1]))   # the compressor changed
        if not self._store(table, idx, kept, demoting=True):
            return False
        self.counters.demotions += 1
        return True

    # ------------------------------------------------------------ requests

    def read(self, table: PageTable, off: int, size: int) -> bytes:
        """Bytes [off, off+size) of a file's slots; holes read as zeros."""
        first, start = divmod(off, PAGE_SIZE)
        last = (off + size - 1) // PAGE_SIZE
        count = last - first + 1
        self.counters.reads += count
        if count == 1:
            page = self._read_page(table, first)
            return page if size == PAGE_SIZE else page[start:start + size]
        decoded: list[bytes | None] = [None] * count
        threads = self._comp_threads
        if threads and count >= parallel.MIN_BATCH:
            # decompress the compressed pages of a large read on more cores first
            todo = [(k, w) for k in range(count)
                    if (w := table.get(first + k)) & KIND_MASK in (DEVICE, FALLBACK)]
            for (k, _), data in zip(todo, parallel.map_pages(
                    self._decode, [w for _, w in todo], threads), strict=True):
                decoded[k] = data
        data = b"".join([self._read_page(table, first + k, decoded[k]) for k in range(count)])
        return data[start:start + size]

    def fault(self, table: PageTable, off: int, size: int) -> int:
        """read() for a caller that wants no bytes (a replay): every page faults as it
        would, with no decompression the transitions do not need; returns `size`."""
        first, last = off // PAGE_SIZE, (off + size - 1) // PAGE_SIZE
        self.counters.reads += last - first + 1
        for idx in range(first, last + 1):
            self._read_page(table, idx, ZERO_PAGE)
        return size

    def write_encoded(self, table: PageTable, off: int, encoded: list[Encoded],
                      page_of: Callable[[int], bytes]) -> int:
        """write() of whole pages at a page offset, already encoded as this device's
        encoder would (a replay of a trace that kept them so): the same transitions,
        nothing compressed again. `page_of(k)` gives page k where a page must be kept
        whole (direct mode's DRAM)."""
        first = off // PAGE_SIZE
        for k, enc in enumerate(encoded):
            self.counters.writes += 1
            try:
                self._write_page(table, first + k, page_of(k) if self._direct_dram else
                                 ZERO_PAGE, enc)
            except DeviceError:
                if k:
                    return k * PAGE_SIZE
                raise
        return len(encoded) * PAGE_SIZE

    def write(self, table: PageTable, off: int, data: bytes) -> int:
        """Write data at off. A refusal after some pages gives a short count, as
        a full disk does; a refusal of the first page raises."""
        first, start = divmod(off, PAGE_SIZE)
        n = len(data)
        if not start and n == PAGE_SIZE:          # the swap path: one whole page
            self.counters.writes += 1
            self._write_page(table, first, data)
            return n
        if not start and not n % PAGE_SIZE:       # whole pages: split once, encode ahead
            pages = [data[i:i + PAGE_SIZE] for i in range(0, n, PAGE_SIZE)]
            # in direct mode with DRAM a written page goes to DRAM, not through the encoder
            ahead: Generator[Encoded, None, None] | None = None
            encoded: Iterable[Encoded | None]
            if self._direct_dram:
                encoded = [None] * len(pages)
            elif self._encode_request is not None:
                # native: the whole request at once, the GIL released once per part
                whole: list[Encoded] = parallel.map_parts(
                    functools.partial(self._encode_request, data), len(pages),
                    self.config.comp_threads)
                encoded = whole
            else:
                encoded = ahead = parallel.imap(self._encode, pages, self.config.comp_threads)
            try:
                for k, (page, enc) in enumerate(zip(pages, encoded, strict=True)):
                    self.counters.writes += 1
                    try:
                        self._write_page(table, first + k, page, enc)
                    except DeviceError:
                        if k:
                            return k * PAGE_SIZE
                        raise
            finally:
                if ahead is not None:
                    ahead.close()            # stops the workers computing ahead
            return n
        done = 0
        view = memoryview(data)
        for k in range((start + n + PAGE_SIZE - 1) // PAGE_SIZE):
            idx = first + k
            lo = start if k == 0 else 0
            hi = min(PAGE_SIZE, start + n - k * PAGE_SIZE)
            self.counters.writes += 1
            try:
                # a whole page needs no merge; a partial one over a poisoned page is EIO
                if hi - lo == PAGE_SIZE:
                    page = bytes(view[done:done + PAGE_SIZE])
                else:
                    old = self._peek(table, idx)
                    page = b"".join((old[:lo], view[done:done + hi - lo], old[hi:]))
                self._write_page(table, idx, page)
            except DeviceError:
                # pages before this one were stored: a short count, not a failure
                if done:
                    return done
                raise
            done += hi - lo
        return done

    def discard(self, table: PageTable, first: int, count: int) -> int:
        """Release `count` whole pages from `first`; return how many held data.
        notify_free counts every page of the range, held or not, as zram's discard
        does; discarded_pages only those that held data."""
        targets = table.indices_in(first, first + count)
        for idx in targets:
            self._release(table, idx)
        self._unmark(table, first, first + count)
        self.counters.discarded_pages += len(targets)
        self.counters.notify_free += count
        self.counters.discards += 1
        self._refresh()
        return len(targets)

    def truncate(self, table: PageTable, size: int) -> None:
        """Drop slots past `size` and zero the tail of a partial last page.

        Never refused: a refusal half-way would have dropped the later pages of
        a file whose size the caller then leaves as it was. The partial page is
        rewritten after the later pages are freed and without write control's
        question, as it replaces a page the device already holds; its new
        form has fewer non-zero bytes, so it costs at most one more zspage."""
        for idx in table.indices_in(-(-size // PAGE_SIZE), 1 << 62):
            self._release(table, idx)
        self._unmark(table, -(-size // PAGE_SIZE), 1 << 62)
        tail = size % PAGE_SIZE
        last = size // PAGE_SIZE
        word = table.get(last) if tail else 0
        if word and word & KIND_MASK != POISONED:
            page = self._peek(table, last)
            if any(page[tail:]):
                self._write_page(table, last, page[:tail] + bytes(PAGE_SIZE - tail),
                                 force=True)
        self._refresh()

    def drop(self, table: PageTable) -> None:
        """Free every slot of a file that is gone."""
        for idx, _ in table.items():
            self._release(table, idx)
        self._unmark(table, 0, 1 << 62)
        self._refresh()

    def _unmark(self, table: PageTable, first: int, stop: int) -> None:
        """Drop the writeback marks in [first, stop) that no release reached: a page
        fallback=writeback staged into a hole marks a slot that holds no word, and
        would otherwise land in a file already truncated or gone."""
        if self._wb_busy:
            for key in [k for k in self._under_wb if k[0] is table and first <= k[1] < stop]:
                del self._under_wb[key]
            self._wb_busy = bool(self._under_wb)

    def demote(self, count: int | None) -> int:
        """Demote up to `count` (None: all) promoted pages now, coldest first."""
        done = 0
        while (count is None or done < count) and self._demote_one():
            done += 1
        return done

    def compact(self) -> int:
        """Move objects out of sparse zspages; return the pages given back.

        The pool moves objects and reports their new handles; the words that
        name them are rewritten here, in every file's table."""
        before = self.pool.used_bytes
        moves = self.pool.compact()
        if moves and self._pending:
            self._pending = collections.deque((t, rebase(h, moves)) for t, h in self._pending)
        if moves:
            for table in self.tables():
                for idx, word in table.items():
                    if word & KIND_MASK == DEVICE:
                        handle = word >> HANDLE_SHIFT
                        new = rebase(handle, moves)
                        if new != handle:
                            table.set(idx, new << HANDLE_SHIFT | word & _LOW_BITS)
        freed = (before - self.pool.used_bytes) // PAGE_SIZE
        self.counters.pages_compacted += freed
        self.events.add("compact", f"{len(moves)} objects moved, {freed} pages freed")
        self._refresh()
        return freed

    # ------------------------------------------------------------ idle and recompression

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock the device runs on (a replay's, in a replay): what a
        trace stamps its records with."""
        return self._monotonic

    def age(self) -> float:
        """Seconds since the device started, on its own clock."""
        return self._monotonic() - self._epoch

    def _now(self) -> int:
        """Seconds since the device started, plus 1: an access age (0 means idle)."""
        return int(self._monotonic() - self._epoch) + 1

    def _track(self) -> None:
        """Start keeping access ages (4 bytes a page) from the first use on; pages
        already stored count as accessed now, their history being unknown."""
        if not self.tracking:
            now = self._now()
            for table in self.tables():
                table.track(now)
            self.tracking = True

    def mark_idle(self, older_than: int | None) -> int:
        """zram's idle: mark every stored page idle (None), or those not accessed for
        at least `older_than` seconds. Same-filled pages are never idle, as in zram."""
        self._track()
        cutoff = self._now() - (older_than or 0)
        marked = 0
        for table in self.tables():
            for idx, word in table.items():
                if word & KIND_MASK != DEVICE:
                    continue
                age = table.age(idx)
                if age & ~TRIED and (older_than is None or age & ~TRIED <= cutoff):
                    table.set_age(idx, age & TRIED)
                    marked += 1
        what = "all" if older_than is None else f"not accessed for {older_than} s"
        self.events.add("idle", f"{what}: {marked} pages marked idle")
        return marked

    def set_recomp_algorithm(self, name: str) -> None:
        if name not in COMPRESSORS or name == "none":
            self.reject("recomp_algorithm", f"algo must be one of "
                        f"{', '.join(n for n in COMPRESSORS if n != 'none')}, got {shown(name)}")
        self.recomp_algorithm = name
        self.events.add("knob", f"recomp_algorithm={name} priority=1")

    def recompress(self, kind: str, max_pages: int | None = None, threshold: int = 0) -> int:
        """zram's recompress: try the secondary algorithm on idle, huge or huge-and-idle
        pages. A page is kept recompressed only if it shrinks into a smaller size class;
        one that does not is marked and not tried again until it is rewritten.
        `max_pages` bounds the pages tried; `threshold` skips objects smaller than it."""
        if self.recomp_algorithm is None:
            self.reject("recompress", "no recomp_algorithm set")
        self._track()
        second = COMPRESSORS[self.recomp_algorithm]
        want_idle, want_huge = kind in ("idle", "huge_idle"), kind in ("huge", "huge_idle")
        tried = done = 0
        for table in self.tables():
            for idx, word in table.items():
                if max_pages is not None and tried >= max_pages:
                    break
                if word & KIND_MASK != DEVICE or algo_of(word) == second.ident or (
                        self._wb_busy and (table, idx) in self._under_wb):
                    continue            # (zram skips pages under writeback too)
                age = table.age(idx)
                if age & TRIED or (want_idle and age & ~TRIED) or (
                        want_huge and not word & HUGE_BIT):
                    continue
                blob = self.pool.get(word >> HANDLE_SHIFT)
                if len(blob) < threshold:
                    continue
                tried += 1
                new = second.compress(BY_ID[algo_of(word)].decompress(blob))
                gains = len(new) < self.config.huge_threshold and (
                    self.pool.charge(len(new)) < self.pool.charge(len(blob)))
                # a smaller class may still need a fresh zspage: never past capacity
                room = self.config.physical - self.physical_used + (
                    PAGE_SIZE if word & HUGE_BIT else 0)
                if gains and self.pool.cost(len(new)) > room:
                    continue                        # left for a later run, not marked
                if gains:
                    self._store(table, idx, (None, new, second.ident, False), demoting=False,
                                force=True)
                    table.set_age(idx, age)         # recompression is no access
                    self.counters.recompressed_pages += 1
                    self.counters.recompress_saved_bytes += len(blob) - len(new)
                    done += 1
                else:
                    table.set_age(idx, age | TRIED)
                    self.counters.recompress_skipped_pages += 1
        self.events.add("recompress", f"type={kind}: {tried} pages tried, {done} "
                        f"recompressed with {second.name}")
        self._refresh()
        return done

    # ------------------------------------------------------------ writeback
    # zram's three ways to the backing file, and the RFC's "demote further down":
    # writeback() (zram's, batch by batch, the device copy kept until the write
    # lands), fallback=writeback (a refused page, acknowledged once in the file)
    # and reclaim (written behind at once, to make room before a refusal).
    # The I/O itself is an IoJob the caller runs: the adapter in a worker thread,
    # everyone else with backing.run_inline.

    def attach_backing(self, path: str, fd: int, blocks: int) -> None:
        """Take an opened backing file (mount time, or .cram/backing_dev while empty)."""
        if self.backing is not None:
            self.backing.close()
        self.backing = BackingFile(path, fd, blocks)

    def set_backing(self, path: str, opened: tuple[int, int] | None) -> None:
        """.cram/backing_dev: a new backing file (`opened` is its fd and blocks) or none
        (""). Only while the device is empty and no I/O is on its way: EBUSY."""
        b = self.backing
        if any(self.pages) or self._staged or (b is not None and (b.count or b.queue or b.jobs)):
            if opened:
                os.close(opened[0])
            self.events.add("rejected", "backing_dev: the device holds pages")
            raise DeviceError(errno.EBUSY, "backing_dev: the device holds pages")
        try:
            self.config = self.config.with_value("backing_dev", path or "none")
        except ValueError as e:
            if opened:
                os.close(opened[0])
            self.reject("backing_dev", str(e))
        if b is not None:
            b.close()
            self.backing = None
        if opened:
            self.attach_backing(path, *opened)
        self._configured()
        self.events.add("knob", f"backing_dev={self.config.show('backing_dev')}")

    def _job(self, ops: list[Op], done: Callable[[list[Any]], IoJob | None]) -> IoJob:
        b = self.backing
        assert b is not None
        b.jobs += 1

        def finished(results: list[Any]) -> IoJob | None:
            b.jobs -= 1
            return done(results)

        return IoJob(lambda: b.run(ops), finished)

    def _alloc_block(self) -> int | None:
        """A block for one more page, within writeback_limit; None (and counted) if
        the file is full or the limit spent."""
        assert self.backing is not None
        block = None if self.wb_limit_enable and self.wb_limit <= 0 else self.backing.alloc()
        if block is None:
            self.counters.bd_full += 1
        elif self.wb_limit_enable:
            self.wb_limit -= 1
        return block

    def _full_errno(self) -> tuple[int, str]:
        if self.wb_limit_enable and self.wb_limit <= 0:
            return errno.EIO, "writeback_limit spent"
        return errno.ENOSPC, "backing file full"

    def _backed_page(self, table: PageTable, idx: int, word: int) -> bytes:
        b = self.backing
        assert b is not None
        block = word >> HANDLE_SHIFT
        from_file = block not in b.inflight
        try:
            data = b.read(block)
        except OSError as e:
            self.counters.failed_reads += 1
            self.counters.bd_failed += 1
            self.events.add("bd_error", f"{_page(table, idx)}: backing file read failed: "
                            f"{e.strerror}, EIO", ratelimit=True)
            raise DeviceError(errno.EIO, f"{_page(table, idx)}: backing read failed") from None
        if from_file:
            self.counters.bd_reads += 1
        return data

    def _backed_fault(self, table: PageTable, idx: int, word: int) -> bytes:
        """A read of a written-back page: a fault, served from the file; in zswap mode
        the page then moves to DRAM and its block is freed."""
        data = self._backed_page(table, idx, word)
        self.counters.faults += 1
        if self.tracking:
            table.touch(idx, self._now())
        if self._promote:
            if self._tier_room():
                self._release(table, idx)
                self._to_dram(table, idx, (None, data, DIRTY, False))
                self.counters.promotions += 1
            else:
                self.counters.promotions_skipped += 1
        return data

    def fetch(self, table: PageTable, off: int, size: int) -> tuple[IoJob | None, dict[int, bytes]]:
        """The file reads a request for [off, off+size) needs, to run before it off the
        loop; the dict fills with the pages, for `fetched()` to hand to the read."""
        fetched: dict[int, bytes] = {}
        b = self.backing
        if b is None or not self.pages[BACKED] or size <= 0:
            return None, fetched
        first, last = off // PAGE_SIZE, (off + size - 1) // PAGE_SIZE
        ops = [Op(READ, block) for i in table.indices_in(first, last + 1)
               if (w := table.get(i)) & KIND_MASK == BACKED
               and (block := w >> HANDLE_SHIFT) not in b.inflight]
        if not ops:
            return None, fetched

        def done(results: list[Any]) -> None:
            # A block's data stays right while its slot still names it: a freed block
            # is reused only after its hole is punched, which queues behind this read.
            fetched.update((op.block, r) for op, r in zip(ops, results, strict=True)
                           if isinstance(r, bytes))

        return self._job(ops, done), fetched

    @contextlib.contextmanager
    def fetched(self, pages: dict[int, bytes]) -> Generator[None, None, None]:
        """Serve the reads inside from pages `fetch` read ahead."""
        b = self.backing
        if b is None or not pages:
            yield
            return
        b.fetched = pages
        try:
            yield
        finally:
            b.fetched = {}

    def _wanted(self, table: PageTable, idx: int, word: int, kind: str) -> bool:
        """Is this slot one `writeback kind` takes? (zram skips same-filled, written-back
        and under-writeback slots; `page` takes any other stored page.)"""
        if word & KIND_MASK != DEVICE or (self._wb_busy and (table, idx) in self._under_wb):
            return False
        if kind == "page":
            return True
        huge = bool(word & HUGE_BIT)
        age = table.age(idx) if self.tracking else -1
        idle = age >= 0 and not age & ~TRIED
        if kind == "idle":
            return idle
        if kind == "huge":
            return huge
        if kind == "huge_idle":
            return huge and idle
        return huge and age >= 0 and bool(age & TRIED)      # incompressible

    def writeback(self, kind: str, page: tuple[PageTable, int] | None = None) -> IoJob | None:
        """zram's writeback: idle, huge, huge_idle or incompressible pages (or the one
        `page`) to the backing file, WRITEBACK_BATCH at a time. Each batch's pages keep
        their device copy, marked under writeback, until the write lands; a page
        released meanwhile (rewritten, discarded, promoted) drops out, and its block
        with it. ENODEV without a backing file, EIO once writeback_limit is spent and
        ENOSPC when the file is full, as zram."""
        if self.backing is None:
            self.events.add("rejected", "writeback: no backing_dev")
            raise DeviceError(errno.ENODEV, "writeback: no backing_dev")
        if kind not in WRITEBACK_KINDS and not (kind == "page" and page is not None):
            self.reject("writeback", f"expected {'|'.join(WRITEBACK_KINDS)} or page=FILE:N")
        what = kind if page is None else f"{_page(*page)}"
        if self.wb_limit_enable and self.wb_limit <= 0:
            self.events.add("writeback", f"{what}: writeback_limit spent, EIO")
            raise DeviceError(errno.EIO, "writeback: writeback_limit spent")
        candidates: Iterator[tuple[PageTable, int]] = iter([page]) if page else (
            (t, i) for t in self.tables() for i, _ in t.items())
        return self._wb_batch(_WritebackRun(kind, what, candidates))

    def _wb_batch(self, run: _WritebackRun) -> IoJob | None:
        batch: list[tuple[PageTable, int, int, bytes]] = []
        for table, idx in run.candidates:
            word = table.get(idx)
            if not self._wanted(table, idx, word, run.kind):
                continue
            block = self._alloc_block()
            if block is None:
                run.err, run.why = self._full_errno()
                break
            self._under_wb[(table, idx)] = block
            batch.append((table, idx, block, self._decode(word)))
            if len(batch) >= WRITEBACK_BATCH:
                break
        self._wb_busy = bool(self._under_wb)
        if not batch:
            self._wb_report(run)
            return None
        ops = [Op(WRITE, block, data) for _, _, block, data in batch]
        return self._job(ops, lambda results: self._wb_landed(run, batch, results))

    def _wb_landed(self, run: _WritebackRun, batch: list[tuple[PageTable, int, int, bytes]],
                   results: list[Any]) -> IoJob | None:
        """A batch is in the file: each page still marked leaves the device."""
        for (table, idx, block, _), res in zip(batch, results, strict=True):
            if self._land(table, idx, block, res):
                run.written += 1
            elif res:
                run.err, run.why = int(res), f"backing file write failed: {os.strerror(res)}"
        self._wb_busy = bool(self._under_wb)
        self._refresh()
        if run.err:
            self._wb_report(run)
        return self._wb_batch(run)

    def _land(self, table: PageTable, idx: int, block: int, res: int) -> bool:
        """A page written under its mark (writeback or fallback=writeback) reached the
        file, or failed (`res`, an errno): it becomes written back if the write worked
        and the slot still holds the mark; otherwise its block goes (a write won, or
        the file failed). True if the page landed."""
        assert self.backing is not None
        mine = self._under_wb.get((table, idx)) == block
        if mine:
            del self._under_wb[(table, idx)]
        if res or not mine:
            self.backing.free(block)
            if res:
                self.counters.bd_failed += 1
            else:
                self.counters.writeback_dropped += 1
            return False
        self.counters.bd_writes += 1
        self._release(table, idx)
        self._install(table, idx, pack(BACKED, block))
        return True

    def _wb_report(self, run: _WritebackRun) -> None:
        tail = f", stopped: {run.why}" if run.err else ""
        self.events.add("writeback", f"{run.what}: {run.written} pages written back{tail}")
        if run.err:
            raise DeviceError(run.err, f"writeback: {run.why}")

    def _stage(self, table: PageTable, idx: int, blob: bytes, algo: int, why: str) -> bool:
        """fallback=writeback: a refused page goes to the backing file. The slot keeps
        its old page, marked, until the write lands (staged_job); ENOSPC if no block."""
        block = self._alloc_block()
        if block is None:
            return self._refuse(table, idx, f"{why}, {self._full_errno()[1]}", False)
        page = blob if algo == _NONE_ID else BY_ID[algo].decompress(blob)
        self._under_wb[(table, idx)] = block
        self._wb_busy = True
        self._staged.append((table, idx, block, page))
        self.events.add("refused", f"{_page(table, idx)}: {why}, to the backing file "
                        "(fallback)", ratelimit=True)
        return True

    def staged_job(self) -> IoJob | None:
        """The writes of the pages fallback=writeback placed since the last call: the
        request that made them is acknowledged once this job is done. Its `done`
        raises the first failure's errno (the old pages are kept)."""
        if not self._staged:
            return None
        staged, self._staged = self._staged, []
        ops = [Op(WRITE, block, page) for _, _, block, page in staged]
        return self._job(ops, lambda results: self._commit(staged, results))

    def _commit(self, staged: list[tuple[PageTable, int, int, bytes]],
                results: list[Any]) -> None:
        failed = 0
        for (table, idx, block, _), res in zip(staged, results, strict=True):
            if self._land(table, idx, block, res):
                self.counters.writeback_fallback += 1
            elif res:
                self.counters.failed_writes += 1
                failed = failed or int(res)
                self.events.add("bd_error", f"{_page(table, idx)}: backing file write "
                                f"failed: {os.strerror(res)}", ratelimit=True)
        self._wb_busy = bool(self._under_wb)
        self._refresh()
        if failed:
            raise DeviceError(failed, "backing file write failed")

    def _reclaim(self, table: PageTable, idx: int, size: int, extra: int) -> bool:
        """The RFC's "trigger reclaim on cram node" before write control refuses a page:
        compaction (at most once per reclaim_interval), then, with reclaim=writeback,
        up to reclaim_pages of the coldest pages written behind. Returns whether the
        page now fits; the level, re-derived, decides the rest."""
        c = self.config
        steps = []
        now = self._monotonic()
        if now - self._last_compact >= c.reclaim_interval / 1000:
            self._last_compact = now
            self.counters.reclaim_compactions += 1
            steps.append(f"compaction gave {self.compact()} pages")
        fits = self._fits(table, idx, size, extra)
        if c.reclaim == "writeback" and self.backing is not None and (
                self.levels.level >= CRITICAL or not fits):
            steps.append(f"{self._write_behind(c.reclaim_pages, (table, idx))} pages "
                         "written back")
            fits = self._fits(table, idx, size, extra)
        ok = fits and self.levels.level < CRITICAL
        if ok:
            self.counters.reclaim_rescued += 1
        else:
            self.counters.reclaim_failed += 1
        self.events.add("reclaim", f"{_page(table, idx)}: {', '.join(steps) or 'no step due'}"
                        f"; {'stored' if ok else 'still refusing'} at fill {self.fill:.1%}",
                        ratelimit=True)
        return fits

    def _write_behind(self, count: int, exclude: tuple[PageTable, int]) -> int:
        """Move up to `count` of the coldest stored pages (idle ones first, then by last
        access; in table order without tracking) to the backing file at once: the
        device gets their memory back now, the daemon holds them until they land."""
        b = self.backing
        assert b is not None
        tracking = self.tracking

        def candidates() -> Iterator[tuple[int, int, PageTable, int]]:
            n = 0
            for t in self.tables():
                for i, w in t.items():
                    if w & KIND_MASK == DEVICE and (t, i) != exclude and not (
                            self._wb_busy and (t, i) in self._under_wb):
                        n += 1
                        yield (t.age(i) & ~TRIED if tracking else 0), n, t, i

        done = 0
        for _, _, t, i in heapq.nsmallest(count, candidates(), key=lambda c: c[:2]):
            block = self._alloc_block()
            if block is None:
                break
            data = self._decode(t.get(i))
            self._release(t, i)
            self._install(t, i, pack(BACKED, block))
            b.write_behind(block, data)
            self._behind[block] = (t, i)
            done += 1
        self.counters.reclaim_written += done
        self._refresh()
        return done

    def flush_job(self) -> IoJob | None:
        """Queued backing-file I/O (pages written behind, holes to punch), or None."""
        b = self.backing
        if b is None or not b.queue:
            return None
        ops = b.take()
        return self._job(ops, lambda results: self._flushed(ops, results))

    def _flushed(self, ops: list[Op], results: list[Any]) -> None:
        b = self.backing
        assert b is not None
        for op, res in zip(ops, results, strict=True):
            if op.kind == WRITE and not res:
                self.counters.bd_writes += 1
        for op, err in b.finish(ops, results):
            # a page written behind did not land: it stays in host memory instead
            self.counters.bd_failed += 1
            table, idx = self._behind.get(op.block, (None, 0))
            if table is not None and table.get(idx) == pack(BACKED, op.block):
                self._release(table, idx)
                self._install(table, idx, pack(FALLBACK, self.fallback.put(op.data), _NONE_ID,
                                               True))
                self.events.add("bd_error", f"{_page(table, idx)}: backing file write "
                                f"failed: {os.strerror(err)}, kept in host memory",
                                ratelimit=True)
        for op in ops:
            if op.kind == WRITE:
                self._behind.pop(op.block, None)
        self._refresh()

    def settle(self) -> None:
        """Carry out every pending backing-file job here and now (the in-process API's
        way; the adapter runs them in a worker thread instead)."""
        while (job := self.staged_job() or self.flush_job()) is not None:
            try:
                run_inline(job)
            except DeviceError:
                continue            # a failed staged write: already counted and logged

    def bd_stat(self) -> str:
        """zram's bd_stat: bd_count, bd_reads, bd_writes, in 4 KiB pages."""
        count = self.backing.count if self.backing is not None else 0
        return f"{count:8} {self.counters.bd_reads:8} {self.counters.bd_writes:8}"

    # ------------------------------------------------------------ knobs and faults

    def set(self, name: str, text: str) -> None:
        """Change a setting live; EINVAL (and an events line) leaves the old value."""
        if name not in SETTINGS or not SETTINGS[name].runtime:
            self.reject(name, "cannot be changed while mounted")
        old_delay = self.config.release_delay
        try:
            self.config = self.config.with_value(name, text)
        except ValueError as e:
            self.reject(name, str(e))
        if self.config.release_delay < old_delay and self._pending:
            # a shorter delay applies to the frees already waiting too: each is due its
            # new delay after it was freed (_refresh below releases those now due)
            early = (old_delay - self.config.release_delay) / 1000
            self._pending = collections.deque((t - early, h) for t, h in self._pending)
        self._configured()
        self.events.add("knob", f"{name}={self.config.show(name)}")
        self._enforce_budget()
        self._refresh(settings=True)

    def reject(self, what: str, why: str) -> NoReturn:
        """Log a refused control write and raise EINVAL with the reason."""
        self.events.add("rejected", f"{what}: {why}")
        raise DeviceError(errno.EINVAL, f"{what}: {why}")

    def inject_ratio(self, factor: float) -> None:
        if not 1 <= factor <= 64:
            self.reject("inject", f"ratio must be 1-64, got {factor:g}")
        self.inflate = factor
        self._band()
        self.events.add("inject", f"ratio {factor:g}: new pages cost {factor:g}x")

    def _set_physical(self, size: int) -> None:
        self.config = self.config.with_value("physical", str(size))
        self._configured()
        self._refresh(settings=True)

    def inject_physical(self, size: int) -> None:
        try:
            self._set_physical(size)
        except ValueError as e:
            self.reject("inject", str(e))
        self.events.add("inject", f"physical {format_size(size)}")

    def inject_poison(self, table: PageTable, idx: int) -> None:
        if not table.get(idx):
            self.reject("inject", f"{_page(table, idx)} holds no data")
        self._release(table, idx)
        self._install(table, idx, _INJECTED_POISON)
        self.counters.poisoned_pages += 1
        self.events.add("inject", f"poison {_page(table, idx)}")
        self._refresh()

    def clear_faults(self) -> None:
        self.inflate = 1.0
        self._set_physical(self.mount_physical)
        self.events.add("inject", "clear")

    def active_faults(self) -> list[str]:
        faults = []
        if self.inflate != 1:
            faults.append(f"ratio {self.inflate:g}")
        if self.config.physical != self.mount_physical:
            faults.append(f"physical {self.config.physical}")
        if self.injected_poison:
            faults.append(f"poisoned_pages {self.injected_poison}")
        return faults

    def release_pending(self, now: float) -> None:
        """Give the device back the freed objects whose release_delay has passed (all of
        them with `now` = inf)."""
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, handle = pending.popleft()
            self.pending_bytes -= self.pool.free(handle)

    def tick(self) -> int:
        """Called now and then by the adapter, so pending releases complete while idle;
        returns how many came due."""
        if not self._pending:
            return 0
        before = len(self._pending)
        self._refresh()
        return before - len(self._pending)

    def media_delay(self, write: bool, nbytes: int, now: float) -> float:
        """Seconds a request of `nbytes` should take beyond the device's own work, on
        the emulated media: each page's latency, then its transfer at `bandwidth`,
        which requests share one after another (a link busy until `_link_free`)."""
        c = self.config
        latency = (c.write_latency if write else c.read_latency) * (
            -(-nbytes // PAGE_SIZE)) / 1e6
        if not c.bandwidth:
            return latency
        start = max(now + latency, self._link_free)
        self._link_free = start + nbytes / (c.bandwidth * 1e6)
        return self._link_free - now

    def close(self) -> None:
        """Give the pools' memory back (the memfd above all); safe twice."""
        self.tier = tier_class(self.config.engine)()
        self.pool.close()
        self.fallback.close()
        if self.backing is not None:
            self.backing.close()

    def reset_peak(self) -> None:
        self.mem_used_max = self.physical_used

    def reset(self) -> None:
        """Forget counters, faults and peaks; the caller has dropped every table."""
        assert not any(self.pages), "reset with live slots"
        self.release_pending(float("inf"))
        self.counters = Counters()
        self.inflate = 1.0
        self._set_physical(self.mount_physical)
        self.mem_used_max = 0
        self.events.add("reset", "all data dropped")

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
        """Every statistic of stats.STATS the device knows (all but `files`)."""
        c = self.config
        ratio = self.ratio
        effective = c.advertised if ratio in (0.0, float("inf")) else int(c.physical * ratio)
        used = self.physical_used
        out: dict[str, int | float | str] = {
            "advertised": c.advertised,
            "physical": c.physical,
            "physical_used": used,
            "logical_stored": self.logical_stored,
            "compressed_bytes": self.pool.stored_bytes,
            "charged_bytes": self.charged,
            "unattributed_bytes": used - self.charged,
            "ratio": round(ratio, 2) if ratio != float("inf") else ratio,
            "required_ratio": round(c.advertised / c.physical, 2),
            "effective_capacity": effective,
            "fill": round(self.fill, 4),
            "danger": self.danger,
            "danger_level": self.levels.level,
            "pressure": self.pressure,
            "overflow_at_ratio": self.overflow_at_ratio(),
            "compressor": c.compressor,
            "mode": c.mode,
            "engine": c.engine,
            "mem_used_max": self.mem_used_max,
            "stored_pages": self.pages[SAME] + self.pages[DEVICE] + self.pages[BACKED],
            "same_filled_pages": self.pages[SAME],
            "stored_incompressible_pages": self.huge_pages,
            "compressed_pages": self.pages[DEVICE] - self.huge_pages,
            "fallback_pages": self.pages[FALLBACK],
            "fallback_bytes": self.fallback.used_bytes,
            "pending_release_pages": len(self._pending),
            "pending_release_bytes": self.pending_bytes,
            "promoted_pages": self.pages[PROMOTED],
            "promoted_bytes": self.pages[PROMOTED] * PAGE_SIZE,
            "poisoned_now": self.pages[POISONED],
            "written_back_pages": self.pages[BACKED],
            "bd_count": self.backing.count if self.backing is not None else 0,
            "writeback_limit": self.wb_limit,
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



if NativeCore is not None:
    class NativeDevice(NativeCore, Device):
        """A Device whose hottest transitions run compiled (engine=native)."""
