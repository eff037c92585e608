"""The device: one object the adapter, the control files and the lab talk to.

It owns the parts and hands each request to the one that decides it: the page
paths (paths.py, or compiled, _devpaths.pyx) for reads and writes, the slot
store (slots.py, or compiled, _slotstore.pyx) for every change of a slot, and
writeback.py, maintenance.py, emulation.py and reporting.py for the rest. What
stays here is what the parts share: the settings and what is derived from them,
the danger level and pressure, the files' tables, and the counters.
"""

from __future__ import annotations

import contextlib
import errno
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any, NoReturn

from .. import engine as engines
from ..backing import LOCK_WAIT, IoJob, open_file
from ..compressors import COMPRESSORS
from ..config import SETTINGS, DeviceConfig
from ..events import EventLog
from ..levels import CRITICAL, LevelTracker, pressure, pressure_band
from ..pagetable import BACKED, DEVICE, KIND_MASK, POISONED, SAME, PageTable
from ..pool import Pool
from ..units import PAGE_SIZE
from . import maintenance, reporting
from .common import MAX_GROWTH, Counters, DeviceError, Encoded, encoder
from .emulation import Emulation
from .paths import PagePaths
from .writeback import Writeback


def _age_clock(monotonic: Callable[[], float], epoch: float) -> Callable[[], int]:
    """Device.now for the slot store, without a reference to the device: the parts hold
    the device only weakly, so a device no one holds is freed at once, its pool's
    memory with it, not at the next collection of cycles."""
    return lambda: int(monotonic() - epoch) + 1


class Device:
    """The emulated device. `engine=` in its config picks the slot store and the page
    paths: compiled (native) or the Python reference; they decide alike."""

    def __init__(self, config: DeviceConfig | None = None, pool: Pool | None = None,
                 fallback_pool: Pool | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic    # access ages and delayed releases (a replay's own clock)
        self.config = config or DeviceConfig()
        self.config.check()
        engine = self.config.engine
        self.levels = LevelTracker()
        self.pressure = 0                    # the RFC's 0-1000, quantised (levels.pressure)
        self.events = EventLog(clock=clock)
        self.counters = Counters()
        self.inflate = 1.0                   # injected cost factor for new pages
        self.recomp_algorithm: str | None = None
        self._epoch = monotonic()
        self._level_listeners: list[Callable[[str], None]] = []
        # every table that may hold device pages, for compaction, idle and recompression
        # to walk: in creation order (a WeakSet's order follows addresses, and two runs
        # of the same operations must make the same choices)
        self._tables: dict[int, weakref.ref[PageTable]] = {}
        self._next_table = 0
        self._table_class = engines.table_class(engine)
        self.store: Any = engines.make_store(
            engine, pool or engines.make_pool(engine, self.config.huge_threshold,
                                              self.config.chain_size),
            fallback_pool or engines.make_fallback_pool(engine),
            engines.tier_class(engine)(), self.counters, monotonic,
            _age_clock(monotonic, self._epoch))
        self.emulation = Emulation(self)
        self.wb = Writeback(self)
        # the page paths: the reference's, or the compiled ones, which hand it their
        # uncommon cases
        self.reference = PagePaths(self)
        self.paths: Any = self.reference if engine == "python" else engines.native_paths(
            weakref.proxy(self), self.reference)
        self.configured()
        if self.config.backing_dev:
            self.attach_backing(self.config.backing_dev,
                                *open_file(self.config.backing_dev, LOCK_WAIT))

    # ------------------------------------------------------------ settings

    def configured(self) -> None:
        """Recompute what is derived from the settings (after any change)."""
        c = self.config
        self.encode = engines.page_encoder(c.engine, c.compressor, c.huge_threshold) or (
            encoder(c.compressor, c.huge_threshold))
        self.encode_request = engines.request_encoder(c.engine, c.compressor,
                                                      c.huge_threshold)
        self.algo = COMPRESSORS[c.compressor].ident
        self.direct_dram = c.mode == "direct" and c.dram >= PAGE_SIZE
        self.zswap = c.mode == "zswap"
        self.promote = self.zswap and c.dram >= PAGE_SIZE
        self.tier_budget = c.dram // PAGE_SIZE
        self.store.release_delay = c.release_delay
        self.comp_threads = c.comp_threads
        # is any media emulation on? (the adapter skips media_delay() when not)
        self.media = bool(c.read_latency or c.write_latency or c.bandwidth)
        self.band()

    def band(self) -> None:
        """Derive the thresholds the page paths compare against (after any change
        of settings, level or injected faults)."""
        c = self.config
        low, high = self.levels.quiet_band(c.warn_at, c.critical_at, c.hysteresis)
        low, high = pressure_band(self.levels.level, self.pressure, c.warn_at, c.critical_at,
                                  low, high)
        self.quiet_low = low * c.physical
        self.quiet_high = high * c.physical
        # Below this usage a store needs no questions: it fits whatever its
        # size, write control is not refusing, and no injected cost applies.
        easy = self.inflate == 1 and not (c.write_control and self.levels.level >= CRITICAL)
        self.easy_below = c.physical - MAX_GROWTH if easy else -1
        # A compressed page write control refuses whatever its size, into host memory
        # (the compiled paths' case under pressure; admission decides the same)
        self.refuse_to_host = (self.inflate == 1 and c.write_control and c.reclaim == "off"
                               and self.levels.level >= CRITICAL and c.fallback == "host")
        self.paths.configure()

    def set(self, name: str, text: str) -> None:
        """Change a setting live; EINVAL (and an events line) leaves the old value."""
        if name not in SETTINGS or not SETTINGS[name].runtime:
            self.reject(name, "cannot be changed while mounted")
        old_delay = self.config.release_delay
        try:
            self.config = self.config.with_value(name, text)
        except ValueError as e:
            self.reject(name, str(e))
        if self.config.release_delay < old_delay and self.store.pending:
            # a shorter delay applies to the frees already waiting too: each is due its
            # new delay after it was freed (refresh below releases those now due)
            self.store.shorten_delay((old_delay - self.config.release_delay) / 1000)
        self.configured()
        self.events.add("knob", f"{name}={self.config.show(name)}")
        self.enforce_budget()
        self.refresh(settings=True)

    def reject(self, what: str, why: str) -> NoReturn:
        """Log a refused control write and raise EINVAL with the reason."""
        self.events.add("rejected", f"{what}: {why}")
        raise DeviceError(errno.EINVAL, f"{what}: {why}")

    # ------------------------------------------------------------ usage and level

    @property
    def physical_used(self) -> int:
        return self.store.used

    @property
    def logical_stored(self) -> int:
        """Bytes of page slots the device holds (zram's orig_data_size, which keeps
        written-back pages)."""
        p = self.store.pages
        return (p[SAME] + p[DEVICE] + p[BACKED]) * PAGE_SIZE

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

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener("danger")` when the level changes and `listener("pressure")`
        when the quantised pressure does: what poll() waiters wait for."""
        self._level_listeners.append(listener)

    def refresh(self, overflowed: bool = False, settings: bool = False) -> None:
        """Track the peak, the level and the pressure after usage or `settings` changed
        (the delayed frees now due given back first, so the peak never counts them)."""
        store = self.store
        if store.pending:
            store.release_due(self._monotonic())
        used = store.used
        if used > store.mem_used_max:
            store.mem_used_max = used
        if not (overflowed or settings) and self.quiet_low <= used < self.quiet_high:
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
            self.band()
            for what in changed:
                for listener in self._level_listeners:
                    listener(what)

    # ------------------------------------------------------------ files

    def table(self, name: str = "") -> PageTable:
        """A new file's page table, known to the device so compaction can rewrite it."""
        table = self._table_class(name)
        if self.store.tracking:
            table.track(self.now())
        key, tables = self._next_table, self._tables
        # a gone table drops out by itself (the callback holds the dict, not the device)
        tables[key] = weakref.ref(table, lambda _: tables.pop(key, None))
        self._next_table += 1
        return table

    def tables(self) -> list[PageTable]:
        """The live tables, oldest first."""
        return [t for ref in list(self._tables.values()) if (t := ref()) is not None]

    @contextlib.contextmanager
    def cause(self, op: str) -> Generator[None, None, None]:
        """Name the operation the slot store's transitions inside belong to."""
        store = self.store
        outer, store.cause = store.cause, op
        try:
            yield
        finally:
            store.cause = outer

    # ------------------------------------------------------------ requests

    def read(self, table: PageTable, off: int, size: int) -> bytes:
        """Bytes [off, off+size) of a file's slots; holes read as zeros."""
        if self.store.hook is None:
            return self.paths.read(table, off, size)
        with self.cause("read"):
            return self.paths.read(table, off, size)

    def fault(self, table: PageTable, off: int, size: int) -> int:
        """read() for a caller that wants no bytes (a replay)."""
        if self.store.hook is None:
            return self.paths.fault(table, off, size)
        with self.cause("read"):
            return self.paths.fault(table, off, size)

    def write(self, table: PageTable, off: int, data: bytes) -> int:
        """Write data at off. A refusal after some pages gives a short count, as
        a full disk does; a refusal of the first page raises."""
        if self.store.hook is None:
            return self.paths.write(table, off, data)
        with self.cause("write"):
            return self.paths.write(table, off, data)

    def write_encoded(self, table: PageTable, off: int, encoded: list[Encoded],
                      page_of: Callable[[int], bytes]) -> int:
        """write() of whole pages already encoded as this device's encoder would."""
        with self.cause("write"):
            return self.paths.write_encoded(table, off, encoded, page_of)

    def discard(self, table: PageTable, first: int, count: int) -> int:
        """Release `count` whole pages from `first`; return how many held data.
        notify_free counts every page of the range, held or not, as zram's discard
        does; discarded_pages only those that held data."""
        targets = table.indices_in(first, first + count)
        with self.cause("discard"):
            for idx in targets:
                self.store.release(table, idx)
        self.store.unmark_range(table, first, first + count)
        self.counters.discarded_pages += len(targets)
        self.counters.notify_free += count
        self.counters.discards += 1
        self.refresh()
        return len(targets)

    def truncate(self, table: PageTable, size: int) -> None:
        """Drop slots past `size` and zero the tail of a partial last page.

        Never refused: a refusal half-way would have dropped the later pages of
        a file whose size the caller then leaves as it was. The partial page is
        rewritten after the later pages are freed and without write control's
        question, as it replaces a page the device already holds; its new
        form has fewer non-zero bytes, so it costs at most one more zspage."""
        first = -(-size // PAGE_SIZE)
        with self.cause("truncate"):
            for idx in table.indices_in(first, 1 << 62):
                self.store.release(table, idx)
            self.store.unmark_range(table, first, 1 << 62)
            tail = size % PAGE_SIZE
            last = size // PAGE_SIZE
            word = table.get(last) if tail else 0
            if word and word & KIND_MASK != POISONED:
                page = self.paths.peek(table, last)
                if any(page[tail:]):
                    self.paths.write_page(table, last, page[:tail] + bytes(PAGE_SIZE - tail),
                                          force=True)
        self.refresh()

    def drop(self, table: PageTable) -> None:
        """Free every slot of a file that is gone."""
        with self.cause("unlink"):
            for idx, _ in table.items():
                self.store.release(table, idx)
        self.store.unmark_range(table, 0, 1 << 62)
        self.refresh()

    # ------------------------------------------------------------ the DRAM tier

    def enforce_budget(self) -> None:
        budget = self.config.dram // PAGE_SIZE
        while self.store.promoted() > budget and self.paths.demote_one():
            pass

    def demote(self, count: int | None) -> int:
        """Demote up to `count` (None: all) promoted pages now, coldest first."""
        done = 0
        while (count is None or done < count) and self.paths.demote_one():
            done += 1
        return done

    # ------------------------------------------------------------ time

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock the device runs on (a replay's, in a replay): what a
        trace stamps its records with."""
        return self._monotonic

    def age(self) -> float:
        """Seconds since the device started, on its own clock."""
        return self._monotonic() - self._epoch

    def now(self) -> int:
        """Seconds since the device started, plus 1: an access age (0 means idle)."""
        return int(self._monotonic() - self._epoch) + 1

    def release_pending(self, now: float) -> None:
        """Give the device back the freed objects whose release_delay has passed (all of
        them with `now` = inf)."""
        self.store.release_due(now)

    def tick(self) -> int:
        """Called now and then by the adapter, so pending releases complete while idle;
        returns how many came due."""
        before = self.store.pending
        if not before:
            return 0
        self.refresh()
        return before - self.store.pending

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Give the pools' memory back (the memfd above all); safe twice."""
        self.store.tier = engines.tier_class(self.config.engine)()
        self.store.pool.close()
        self.store.fallback.close()
        self.wb.close()

    def reset_peak(self) -> None:
        self.store.reset_peak()

    def reset(self) -> None:
        """Forget counters, faults and peaks; the caller has dropped every table."""
        assert not any(self.store.pages), "reset with live slots"
        self.store.release_due(float("inf"))
        self.counters.reset()
        self.inflate = 1.0
        self.emulation.set_physical(self.emulation.mount_physical)
        self.store.mem_used_max = 0
        self.events.add("reset", "all data dropped")

    # ------------------------------------------------------------ the parts' verbs

    def compact(self) -> int:
        return maintenance.compact(self)

    def mark_idle(self, older_than: int | None) -> int:
        return maintenance.mark_idle(self, older_than)

    def set_recomp_algorithm(self, name: str) -> None:
        maintenance.set_recomp_algorithm(self, name)

    def recompress(self, kind: str, max_pages: int | None = None, threshold: int = 0) -> int:
        with self.cause("recompress"):
            return maintenance.recompress(self, kind, max_pages, threshold)

    def inject_ratio(self, factor: float) -> None:
        self.emulation.inject_ratio(factor)

    def inject_physical(self, size: int) -> None:
        self.emulation.inject_physical(size)

    def inject_poison(self, table: PageTable, idx: int) -> None:
        self.emulation.inject_poison(table, idx)

    def clear_faults(self) -> None:
        self.emulation.clear()

    def active_faults(self) -> list[str]:
        return self.emulation.active()

    def media_delay(self, write: bool, nbytes: int, now: float) -> float:
        return self.emulation.media_delay(write, nbytes, now)

    def attach_backing(self, path: str, fd: int, blocks: int) -> None:
        self.wb.attach(path, fd, blocks)

    def set_backing(self, path: str, opened: tuple[int, int] | None) -> None:
        self.wb.set_backing(path, opened)

    def writeback(self, kind: str, page: tuple[PageTable, int] | None = None) -> IoJob | None:
        with self.cause("writeback"):
            return self.wb.writeback(kind, page)

    def staged_job(self) -> IoJob | None:
        return self.wb.staged_job()

    def flush_job(self) -> IoJob | None:
        return self.wb.flush_job()

    def settle(self) -> None:
        self.wb.settle()

    def fetch(self, table: PageTable, off: int, size: int) -> tuple[IoJob | None, dict[int, bytes]]:
        return self.wb.fetch(table, off, size)

    def fetched(self, pages: dict[int, bytes]) -> contextlib.AbstractContextManager[None]:
        return self.wb.fetched(pages)

    def stats(self) -> dict[str, int | float | str]:
        return reporting.stats(self)

    def mm_stat(self) -> str:
        return reporting.mm_stat(self)

    def io_stat(self) -> str:
        return reporting.io_stat(self)

    def bd_stat(self) -> str:
        return self.wb.bd_stat()

    def comp_algorithm(self) -> str:
        return reporting.comp_algorithm(self)

    def overflow_at_ratio(self) -> int:
        return reporting.overflow_at_ratio(self)

    # ------------------------------------------------------------ the parts' state

    @property
    def pool(self) -> Any:
        return self.store.pool

    @property
    def fallback(self) -> Any:
        return self.store.fallback

    @property
    def tier(self) -> Any:
        return self.store.tier

    @property
    def words(self) -> Any:
        return self.store.words

    @property
    def pages(self) -> list[int]:
        return self.store.pages

    @property
    def huge_pages(self) -> int:
        return int(self.store.huge_pages)

    @property
    def charged(self) -> int:
        return int(self.store.charged)

    @property
    def mem_used_max(self) -> int:
        return int(self.store.mem_used_max)

    @property
    def pending_bytes(self) -> int:
        return int(self.store.pending_bytes)

    @property
    def tracking(self) -> bool:
        return bool(self.store.tracking)

    @property
    def mount_physical(self) -> int:
        return self.emulation.mount_physical

    @property
    def backing(self) -> Any:
        return self.wb.backing

    @property
    def wb_limit_enable(self) -> bool:
        return self.wb.limit_enable

    @wb_limit_enable.setter
    def wb_limit_enable(self, value: bool) -> None:
        self.wb.limit_enable = value

    @property
    def wb_limit(self) -> int:
        return self.wb.limit

    @wb_limit.setter
    def wb_limit(self, value: int) -> None:
        self.wb.limit = value
