"""The page paths: what a read or a write does to each page it touches.

This is where a page's life is decided (the package's docstring draws it):

- `write_page`: in direct mode with a DRAM tier a written page goes to DRAM (a
  write fault); otherwise it is encoded and `store`d;
- `store`: a same-filled page goes in the table word; a compressed one is
  screened near capacity by admission.py's decision, then stored, kept in host
  memory, staged to the backing file, refused, poisoned or dropped;
- `read_page`: in zswap mode every read of a device page is a fault, and with a
  DRAM tier the page is promoted: its compressed copy released, the page kept in
  DRAM with the compressed form it had;
- `tier_room` / `demote_one`: the tier over budget demotes its coldest page
  through `store` again, unchanged pages without recompression.

`PagePaths` is the reference, in Python. On the native engine `Device` runs
`_devpaths.NativePaths` instead, which keeps this interface, does the common case
of each path compiled and hands every other case to a `PagePaths`.
"""

from __future__ import annotations

import errno
import functools
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, NoReturn

from .. import parallel
from ..compressors import BY_ID
from ..levels import CRITICAL
from ..pagetable import (
    BACKED,
    DEVICE,
    FALLBACK,
    HUGE_BIT,
    KIND_MASK,
    POISONED,
    PROMOTED,
    PageTable,
    algo_of,
)
from ..units import PAGE_SIZE
from .admission import Verdict, decide, fits, wants_reclaim
from .common import (
    DIRTY,
    MAX_GROWTH,
    NONE_ID,
    ZERO_PAGE,
    ZERO_WORD,
    DeviceError,
    Encoded,
    page_name,
)
from .common import same_word as _same_word

if TYPE_CHECKING:
    from .facade import Device


class PagePaths:
    """The reference page paths of one device."""

    def __init__(self, dev: Device) -> None:
        self.dev = weakref.proxy(dev)      # the device owns its parts, not the reverse
        self.store_ = dev.store

    def configure(self) -> None:
        """The device's derived settings changed (the reference reads them live)."""

    # ------------------------------------------------------------ reads

    def peek(self, table: PageTable, idx: int, touch: bool = False) -> bytes:
        """A page's bytes with no tiering side effects (for read-modify-write).
        `touch` marks a promoted page as recently used, as a real read does."""
        page = self.store_.peek(table, idx, touch)
        if page is not None:
            return page
        word = table.get(idx)
        if word & KIND_MASK == POISONED:
            self.poisoned_read(table, idx)
        return self.dev.wb.backed_page(table, idx, word)

    def poisoned_read(self, table: PageTable, idx: int) -> NoReturn:
        dev = self.dev
        dev.counters.failed_reads += 1
        dev.store.note(table, idx, "error")
        dev.events.add("poison_read", f"{page_name(table, idx)}: machine check, EIO",
                       ratelimit=True)
        raise DeviceError(errno.EIO, f"{page_name(table, idx)} is poisoned")

    def read_page(self, table: PageTable, idx: int, data: bytes | None = None) -> bytes:
        """Serve one page; `data` is its decompressed content if already known."""
        dev, store = self.dev, self.store_
        word = table.get(idx)
        kind = word & KIND_MASK
        if kind == BACKED:
            return dev.wb.backed_fault(table, idx, word)
        if kind not in (DEVICE, FALLBACK):
            return self.peek(table, idx, touch=True)
        promote = dev.promote
        algo = algo_of(word)
        # one copy out of the pool serves both the decompression and the promotion
        blob = b""
        if data is None or promote:
            blob = store.blob(word)
        if data is None:
            data = BY_ID[algo].decompress(blob)
        if store.tracking:
            table.touch(idx, dev.now())
        if dev.zswap:
            # Every access faults; the page goes back to DRAM and the compressed
            # copy is released (zswap loads are exclusive).
            dev.counters.faults += 1
            if promote:
                if self.tier_room():
                    store.store_promoted(table, idx, (None, blob, algo, bool(word & HUGE_BIT)))
                    dev.refresh()
                    dev.counters.promotions += 1
                else:
                    dev.counters.promotions_skipped += 1
        return data

    def read(self, table: PageTable, off: int, size: int) -> bytes:
        """Bytes [off, off+size) of a file's slots; holes read as zeros."""
        first, start = divmod(off, PAGE_SIZE)
        last = (off + size - 1) // PAGE_SIZE
        count = last - first + 1
        self.dev.counters.reads += count
        if count == 1:
            page = self.read_page(table, first)
            return page if size == PAGE_SIZE else page[start:start + size]
        decoded: list[bytes | None] = [None] * count
        threads = self.dev.comp_threads
        if threads and count >= parallel.MIN_BATCH:
            # decompress the compressed pages of a large read on more cores first
            todo = [(k, w) for k in range(count)
                    if (w := table.get(first + k)) & KIND_MASK in (DEVICE, FALLBACK)]
            for (k, _), data in zip(todo, parallel.map_pages(
                    self.store_.decode, [w for _, w in todo], threads), strict=True):
                decoded[k] = data
        data = b"".join([self.read_page(table, first + k, decoded[k]) for k in range(count)])
        return data[start:start + size]

    def fault(self, table: PageTable, off: int, size: int) -> int:
        """read() for a caller that wants no bytes (a replay): every page faults as it
        would, with no decompression the transitions do not need; returns `size`."""
        first, last = off // PAGE_SIZE, (off + size - 1) // PAGE_SIZE
        self.dev.counters.reads += last - first + 1
        for idx in range(first, last + 1):
            self.read_page(table, idx, ZERO_PAGE)
        return size

    # ------------------------------------------------------------ the DRAM tier

    def tier_room(self) -> bool:
        """Make room for one more promoted page by demoting the coldest. False when
        demotion is refused: the tier then stops promoting rather than grow past
        its budget."""
        store, budget = self.store_, self.dev.tier_budget
        while store.promoted() >= budget:
            if not self.demote_one():
                return False
        return True

    def demote_one(self) -> bool:
        """Demote the coldest promoted page through write control: its kept
        compressed form as it is, unless a write changed it or the compressor did."""
        store, dev = self.store_, self.dev
        key = store.oldest()
        if key is None:
            return False
        table, idx = key
        kept = store.kept(table, idx)
        algo = kept[2]
        if algo == DIRTY:
            kept = dev.encode(kept[1])
        elif algo != dev.algo and algo != NONE_ID:
            kept = dev.encode(BY_ID[algo].decompress(kept[1]))   # the compressor changed
        cause, store.cause = store.cause, "demote"
        try:
            if not self.store(table, idx, kept, demoting=True):
                return False
        finally:
            store.cause = cause
        dev.counters.demotions += 1
        return True

    # ------------------------------------------------------------ writes

    def write_page(self, table: PageTable, idx: int, page: bytes,
                   enc: Encoded | None = None, force: bool = False) -> None:
        dev, store = self.dev, self.store_
        if dev.direct_dram and (enc[0] is None if enc else _same_word(page) is None):
            # A write fault on a read-only mapped page: it moves to DRAM, and its
            # compressed copy is freed.
            kind = table.get(idx) & KIND_MASK
            if kind == PROMOTED:
                store.keep(table, idx, (None, page, DIRTY, False))
                return
            if self.tier_room():
                store.store_promoted(table, idx, (None, page, DIRTY, False))
                dev.refresh()
                if kind in (DEVICE, FALLBACK):
                    dev.counters.faults += 1
                    dev.counters.promotions += 1
                return
            # the tier is full and cannot demote: the write goes to the device
            dev.counters.promotions_skipped += 1
        self.store(table, idx, enc or dev.encode(page), demoting=False, force=force)

    def store(self, table: PageTable, idx: int, enc: Encoded, demoting: bool,
              force: bool = False) -> bool:
        """Move a page onto the device: the "ask the driver if it's safe" path.

        Returns False only when `demoting` and the page must stay where it is;
        a refused user write raises ENOSPC instead. Either way the old copy is
        untouched unless the page was placed somewhere. `force` skips the
        question: only for a page the device already holds, rewritten smaller.
        """
        dev, store = self.dev, self.store_
        word, blob, algo, huge = enc
        if word is not None:
            old = store.store_same(table, idx, word)
            if word == ZERO_WORD and old & KIND_MASK in (DEVICE, FALLBACK, PROMOTED):
                dev.counters.zero_released_pages += 1
            dev.refresh()
            return True
        pool = store.pool
        size = len(blob)
        extra = 0 if dev.inflate == 1 else int(pool.charge(size) * (dev.inflate - 1))
        # Far from full, not refusing and with no injected cost there is nothing to
        # ask: that common case, paid on every page written, skips the screening.
        if store.used > dev.easy_below and not force:
            outcome = self.screen(table, idx, blob, algo, huge, extra, demoting)
            if outcome is not None:
                return outcome
        store.store_device(table, idx, blob, algo, huge, extra)
        dev.refresh()
        return True

    def fits(self, table: PageTable, idx: int, size: int, extra: int) -> bool:
        """Would a `size`-byte object for this slot stay within physical capacity?"""
        store = self.store_
        used = store.used + extra
        if used + MAX_GROWTH <= self.dev.config.physical:
            return True             # far from full: no need to ask the pool
        return fits(self.dev.config, used, store.pool.cost(size), table.get(idx),
                    table.extra.get(idx, 0))

    def screen(self, table: PageTable, idx: int, blob: bytes, algo: int, huge: bool,
               extra: int, demoting: bool) -> bool | None:
        """Write control and overflow for a compressed page near capacity.

        None: the page goes onto the device. Otherwise the page went elsewhere
        (fallback, poison, drop) and this is what `store` returns."""
        dev, store = self.dev, self.store_
        c = dev.config
        size = len(blob)
        room = self.fits(table, idx, size, extra)
        if wants_reclaim(c, dev.levels.level >= CRITICAL, room):
            room = dev.wb.reclaim(table, idx, size, extra)
        critical = dev.levels.level >= CRITICAL
        host_room = (store.fallback.used_bytes + store.fallback.charge(size)
                     <= c.fallback_limit)
        verdict = decide(c, critical, room, host_room, demoting)
        if verdict is Verdict.STORE:
            return None
        if c.write_control and (critical or not room):
            # write control refuses the page: where it goes instead
            dev.counters.reject_write_control += 1
            why = f"level {dev.danger}" if room else "no physical room"
            if verdict is Verdict.STAGE:
                with dev.cause("fallback"):
                    return dev.wb.stage(table, idx, blob, algo, why)
            if verdict is Verdict.HOST:
                dev.events.add("refused", lambda: kept_in_host(table, idx, why),
                               ratelimit=True)
                store.store_fallback(table, idx, blob, algo, huge)
                dev.refresh()
                return True
            if c.fallback == "host":
                dev.counters.fallback_limit_hit += 1
                why += ", host memory for fallback is full"
            return self.refuse(table, idx, why, demoting)
        dev.refresh(overflowed=True)
        if verdict is Verdict.REFUSE:
            return self.refuse(table, idx, "device full", demoting)
        if verdict is Verdict.POISON:
            dev.counters.poisoned_pages += 1
            dev.events.add("poisoned", lambda: f"{page_name(table, idx)}: device full, "
                           "page poisoned", ratelimit=True)
            store.store_poison(table, idx, False)
        else:
            store.release(table, idx)
            store.note(table, idx, "dropped")
            dev.counters.dropped_writes += 1
            dev.events.add("dropped", lambda: f"{page_name(table, idx)}: device full, "
                           "write dropped", ratelimit=True)
        dev.refresh()
        return True

    def refused_to_host(self, table: PageTable, idx: int, size: int) -> str:
        """The events line of a page refused into host memory, for the compiled path,
        which has not asked whether it fit (only the line needs to know)."""
        why = (f"level {self.dev.danger}" if self.fits(table, idx, size, 0)
               else "no physical room")
        return kept_in_host(table, idx, why)

    def refuse(self, table: PageTable, idx: int, why: str, demoting: bool) -> bool:
        dev = self.dev
        dev.store.note(table, idx, "kept_in_dram" if demoting else "refused")
        if demoting:
            dev.events.add("demote_failed", lambda: f"{page_name(table, idx)}: {why}, "
                           "stays in DRAM", ratelimit=True)
            return False
        dev.counters.failed_writes += 1
        dev.events.add("refused", lambda: f"{page_name(table, idx)}: {why}, ENOSPC",
                       ratelimit=True)
        raise DeviceError(errno.ENOSPC, f"device refused {page_name(table, idx)}: {why}")

    def write_encoded(self, table: PageTable, off: int, encoded: list[Encoded],
                      page_of: Callable[[int], bytes]) -> int:
        """write() of whole pages at a page offset, already encoded as this device's
        encoder would (a replay of a trace that kept them so): the same transitions,
        nothing compressed again. `page_of(k)` gives page k where a page must be kept
        whole (direct mode's DRAM)."""
        first = off // PAGE_SIZE
        direct = self.dev.direct_dram
        for k, enc in enumerate(encoded):
            self.dev.counters.writes += 1
            try:
                self.write_page(table, first + k, page_of(k) if direct else ZERO_PAGE, enc)
            except DeviceError:
                if k:
                    return k * PAGE_SIZE
                raise
        return len(encoded) * PAGE_SIZE

    def write(self, table: PageTable, off: int, data: bytes) -> int:
        """Write data at off. A refusal after some pages gives a short count, as
        a full disk does; a refusal of the first page raises."""
        dev = self.dev
        first, start = divmod(off, PAGE_SIZE)
        n = len(data)
        if not start and n == PAGE_SIZE:          # the swap path: one whole page
            dev.counters.writes += 1
            self.write_page(table, first, data)
            return n
        if not start and not n % PAGE_SIZE:       # whole pages: split once, encode ahead
            return self._write_pages(table, first, data)
        done = 0
        view = memoryview(data)
        for k in range((start + n + PAGE_SIZE - 1) // PAGE_SIZE):
            idx = first + k
            lo = start if k == 0 else 0
            hi = min(PAGE_SIZE, start + n - k * PAGE_SIZE)
            dev.counters.writes += 1
            try:
                # a whole page needs no merge; a partial one over a poisoned page is EIO
                if hi - lo == PAGE_SIZE:
                    page = bytes(view[done:done + PAGE_SIZE])
                else:
                    old = self.peek(table, idx)
                    page = b"".join((old[:lo], view[done:done + hi - lo], old[hi:]))
                self.write_page(table, idx, page)
            except DeviceError:
                # pages before this one were stored: a short count, not a failure
                if done:
                    return done
                raise
            done += hi - lo
        return done

    def _write_pages(self, table: PageTable, first: int, data: bytes) -> int:
        dev = self.dev
        pages = [data[i:i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)]
        # in direct mode with DRAM a written page goes to DRAM, not through the encoder
        ahead: Generator[Encoded, None, None] | None = None
        encoded: Iterable[Encoded | None]
        if dev.direct_dram:
            encoded = [None] * len(pages)
        elif dev.encode_request is not None:
            # native: the whole request at once, the GIL released once per part
            whole: list[Encoded] = parallel.map_parts(
                functools.partial(dev.encode_request, data), len(pages), dev.comp_threads)
            encoded = whole
        else:
            encoded = ahead = parallel.imap(dev.encode, pages, dev.comp_threads)
        try:
            for k, (page, enc) in enumerate(zip(pages, encoded, strict=True)):
                dev.counters.writes += 1
                try:
                    self.write_page(table, first + k, page, enc)
                except DeviceError:
                    if k:
                        return k * PAGE_SIZE
                    raise
        finally:
            if ahead is not None:
                ahead.close()            # stops the workers computing ahead
        return len(data)


def kept_in_host(table: PageTable, idx: int, why: str) -> str:
    return f"{page_name(table, idx)}: {why}, kept in host memory (fallback)"

