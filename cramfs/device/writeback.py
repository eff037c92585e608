"""Writeback: the backing file below the device, and the three ways pages get there.

zram's `writeback` (batch by batch, each page's device copy kept, marked, until its
write lands), fallback=writeback (a page write control refused, acknowledged once
it is in the file) and reclaim (the coldest pages written behind at once, to make
room before write control refuses: the RFC's "demote further down"). A
written-back page is read back from the file as a counted fault, and promoted in
zswap mode.

The I/O itself is an `IoJob` the caller runs: the adapter in a worker thread,
everyone else with backing.run_inline (`Device.settle`). Nothing here writes a
table word: the slot store does, and keeps the writeback marks.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backing import READ, WRITE, BackingFile, IoJob, Op, run_inline
from ..compressors import BY_ID
from ..levels import CRITICAL
from ..pagetable import BACKED, DEVICE, HANDLE_SHIFT, HUGE_BIT, KIND_MASK, TRIED, PageTable, pack
from ..units import PAGE_SIZE
from .common import DIRTY, NONE_ID, WRITEBACK_BATCH, WRITEBACK_KINDS, DeviceError, page_name

if TYPE_CHECKING:
    from .facade import Device


@dataclass
class _Run:
    """One `writeback` from its first batch to its last."""

    kind: str
    what: str
    candidates: Iterator[tuple[PageTable, int]]
    written: int = 0
    err: int = 0
    why: str = ""


class Writeback:
    """A device's backing file and the pages on their way to and from it."""

    def __init__(self, dev: Device) -> None:
        self.dev = weakref.proxy(dev)      # the device owns its parts, not the reverse
        self.backing: BackingFile | None = None
        self.staged: list[tuple[PageTable, int, int, bytes]] = []   # fallback=writeback
        self.behind: dict[int, tuple[PageTable, int]] = {}          # reclaim's blocks
        self.limit_enable = False
        self.limit = 0                   # pages writeback may still write, if enabled
        self.last_compact = float("-inf")

    # ------------------------------------------------------------ the file

    def attach(self, path: str, fd: int, blocks: int) -> None:
        """Take an opened backing file (mount time, or .cram/backing_dev while empty)."""
        if self.backing is not None:
            self.backing.close()
        self.backing = BackingFile(path, fd, blocks)
        self.dev.store.free_block = self.backing.free

    def set_backing(self, path: str, opened: tuple[int, int] | None) -> None:
        """.cram/backing_dev: a new backing file (`opened` is its fd and blocks) or none
        (""). Only while the device is empty and no I/O is on its way: EBUSY."""
        dev, b = self.dev, self.backing
        if any(dev.store.pages) or self.staged or (
                b is not None and (b.count or b.queue or b.jobs)):
            if opened:
                os.close(opened[0])
            dev.events.add("rejected", "backing_dev: the device holds pages")
            raise DeviceError(errno.EBUSY, "backing_dev: the device holds pages")
        try:
            dev.config = dev.config.with_value("backing_dev", path or "none")
        except ValueError as e:
            if opened:
                os.close(opened[0])
            dev.reject("backing_dev", str(e))
        if b is not None:
            b.close()
            self.backing = None
            dev.store.free_block = None
        if opened:
            self.attach(path, *opened)
        dev.configured()
        dev.events.add("knob", f"backing_dev={dev.config.show('backing_dev')}")

    def close(self) -> None:
        if self.backing is not None:
            self.backing.close()

    def job(self, ops: list[Op], done: Callable[[list[Any]], IoJob | None]) -> IoJob:
        b = self.backing
        assert b is not None
        b.jobs += 1

        def finished(results: list[Any]) -> IoJob | None:
            b.jobs -= 1
            return done(results)

        return IoJob(lambda: b.run(ops), finished)

    def alloc_block(self) -> int | None:
        """A block for one more page, within writeback_limit; None (and counted) if
        the file is full or the limit spent."""
        assert self.backing is not None
        block = None if self.limit_enable and self.limit <= 0 else self.backing.alloc()
        if block is None:
            self.dev.counters.bd_full += 1
        elif self.limit_enable:
            self.limit -= 1
        return block

    def full_errno(self) -> tuple[int, str]:
        if self.limit_enable and self.limit <= 0:
            return errno.EIO, "writeback_limit spent"
        return errno.ENOSPC, "backing file full"

    def bd_stat(self) -> str:
        """zram's bd_stat: bd_count, bd_reads, bd_writes, in 4 KiB pages."""
        count = self.backing.count if self.backing is not None else 0
        c = self.dev.counters
        return f"{count:8} {c.bd_reads:8} {c.bd_writes:8}"

    # ------------------------------------------------------------ reading back

    def backed_page(self, table: PageTable, idx: int, word: int) -> bytes:
        dev, b = self.dev, self.backing
        assert b is not None
        block = word >> HANDLE_SHIFT
        from_file = block not in b.inflight
        try:
            data = b.read(block)
        except OSError as e:
            dev.counters.failed_reads += 1
            dev.counters.bd_failed += 1
            dev.events.add("bd_error", f"{page_name(table, idx)}: backing file read failed: "
                           f"{e.strerror}, EIO", ratelimit=True)
            raise DeviceError(errno.EIO, f"{page_name(table, idx)}: backing read failed") \
                from None
        if from_file:
            dev.counters.bd_reads += 1
        return data

    def backed_fault(self, table: PageTable, idx: int, word: int) -> bytes:
        """A read of a written-back page: a fault, served from the file; in zswap mode
        the page then moves to DRAM and its block is freed."""
        dev = self.dev
        data = self.backed_page(table, idx, word)
        dev.counters.faults += 1
        if dev.store.tracking:
            table.touch(idx, dev.now())
        if dev.promote:
            if dev.paths.tier_room():
                dev.store.store_promoted(table, idx, (None, data, DIRTY, False))
                dev.refresh()
                dev.counters.promotions += 1
            else:
                dev.counters.promotions_skipped += 1
        return data

    def fetch(self, table: PageTable, off: int, size: int) -> tuple[IoJob | None, dict[int, bytes]]:
        """The file reads a request for [off, off+size) needs, to run before it off the
        loop; the dict fills with the pages, for `fetched()` to hand to the read."""
        fetched: dict[int, bytes] = {}
        b = self.backing
        if b is None or not self.dev.store.pages[BACKED] or size <= 0:
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

        return self.job(ops, done), fetched

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

    # ------------------------------------------------------------ zram's writeback

    def wanted(self, table: PageTable, idx: int, word: int, kind: str) -> bool:
        """Is this slot one `writeback kind` takes? (zram skips same-filled, written-back
        and under-writeback slots; `page` takes any other stored page.)"""
        store = self.dev.store
        if word & KIND_MASK != DEVICE or store.marked(table, idx) is not None:
            return False
        if kind == "page":
            return True
        huge = bool(word & HUGE_BIT)
        age = table.age(idx) if store.tracking else -1
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
        dev = self.dev
        if self.backing is None:
            dev.events.add("rejected", "writeback: no backing_dev")
            raise DeviceError(errno.ENODEV, "writeback: no backing_dev")
        if kind not in WRITEBACK_KINDS and not (kind == "page" and page is not None):
            dev.reject("writeback", f"expected {'|'.join(WRITEBACK_KINDS)} or page=FILE:N")
        what = kind if page is None else f"{page_name(*page)}"
        if self.limit_enable and self.limit <= 0:
            dev.events.add("writeback", f"{what}: writeback_limit spent, EIO")
            raise DeviceError(errno.EIO, "writeback: writeback_limit spent")
        candidates: Iterator[tuple[PageTable, int]] = iter([page]) if page else (
            (t, i) for t in dev.tables() for i, _ in t.items())
        return self._batch(_Run(kind, what, candidates))

    def _batch(self, run: _Run) -> IoJob | None:
        store = self.dev.store
        batch: list[tuple[PageTable, int, int, bytes]] = []
        for table, idx in run.candidates:
            word = table.get(idx)
            if not self.wanted(table, idx, word, run.kind):
                continue
            block = self.alloc_block()
            if block is None:
                run.err, run.why = self.full_errno()
                break
            store.mark(table, idx, block)
            batch.append((table, idx, block, store.decode(word)))
            if len(batch) >= WRITEBACK_BATCH:
                break
        if not batch:
            self._report(run)
            return None
        ops = [Op(WRITE, block, data) for _, _, block, data in batch]
        return self.job(ops, lambda results: self._landed(run, batch, results))

    def _landed(self, run: _Run, batch: list[tuple[PageTable, int, int, bytes]],
                results: list[Any]) -> IoJob | None:
        """A batch is in the file: each page still marked leaves the device."""
        for (table, idx, block, _), res in zip(batch, results, strict=True):
            if self.land(table, idx, block, res):
                run.written += 1
            elif res:
                run.err, run.why = int(res), f"backing file write failed: {os.strerror(res)}"
        self.dev.refresh()
        if run.err:
            self._report(run)
        return self._batch(run)

    def land(self, table: PageTable, idx: int, block: int, res: int) -> bool:
        """A page written under its mark (writeback or fallback=writeback) reached the
        file, or failed (`res`, an errno): it becomes written back if the write worked
        and the slot still holds the mark; otherwise its block goes (a write won, or
        the file failed). True if the page landed."""
        dev = self.dev
        assert self.backing is not None
        mine = dev.store.unmark(table, idx, block)
        if res or not mine:
            self.backing.free(block)
            if res:
                dev.counters.bd_failed += 1
            else:
                dev.counters.writeback_dropped += 1
            return False
        dev.counters.bd_writes += 1
        dev.store.store_backed(table, idx, block)
        return True

    def _report(self, run: _Run) -> None:
        tail = f", stopped: {run.why}" if run.err else ""
        self.dev.events.add("writeback", f"{run.what}: {run.written} pages written back{tail}")
        if run.err:
            raise DeviceError(run.err, f"writeback: {run.why}")

    # ------------------------------------------------------------ fallback=writeback

    def stage(self, table: PageTable, idx: int, blob: bytes, algo: int, why: str) -> bool:
        """fallback=writeback: a refused page goes to the backing file. The slot keeps
        its old page, marked, until the write lands (staged_job); ENOSPC if no block."""
        dev = self.dev
        block = self.alloc_block()
        if block is None:
            return dev.reference.refuse(table, idx, f"{why}, {self.full_errno()[1]}", False)
        page = blob if algo == NONE_ID else BY_ID[algo].decompress(blob)
        dev.store.mark(table, idx, block)
        self.staged.append((table, idx, block, page))
        dev.events.add("refused", f"{page_name(table, idx)}: {why}, to the backing file "
                       "(fallback)", ratelimit=True)
        return True

    def staged_job(self) -> IoJob | None:
        """The writes of the pages fallback=writeback placed since the last call: the
        request that made them is acknowledged once this job is done. Its `done`
        raises the first failure's errno (the old pages are kept)."""
        if not self.staged:
            return None
        staged, self.staged = self.staged, []
        ops = [Op(WRITE, block, page) for _, _, block, page in staged]
        return self.job(ops, lambda results: self._commit(staged, results))

    def _commit(self, staged: list[tuple[PageTable, int, int, bytes]],
                results: list[Any]) -> None:
        dev = self.dev
        failed = 0
        for (table, idx, block, _), res in zip(staged, results, strict=True):
            if self.land(table, idx, block, res):
                dev.counters.writeback_fallback += 1
            elif res:
                dev.counters.failed_writes += 1
                failed = failed or int(res)
                dev.events.add("bd_error", f"{page_name(table, idx)}: backing file write "
                               f"failed: {os.strerror(res)}", ratelimit=True)
        dev.refresh()
        if failed:
            raise DeviceError(failed, "backing file write failed")

    # ------------------------------------------------------------ reclaim

    def reclaim(self, table: PageTable, idx: int, size: int, extra: int) -> bool:
        """The RFC's "trigger reclaim on cram node" before write control refuses a page:
        compaction (at most once per reclaim_interval), then, with reclaim=writeback,
        up to reclaim_pages of the coldest pages written behind. Returns whether the
        page now fits; the level, re-derived, decides the rest."""
        dev = self.dev
        c = dev.config
        steps = []
        now = dev.clock()
        if now - self.last_compact >= c.reclaim_interval / 1000:
            self.last_compact = now
            dev.counters.reclaim_compactions += 1
            steps.append(f"compaction gave {dev.compact()} pages")
        fits = dev.reference.fits(table, idx, size, extra)
        if c.reclaim == "writeback" and self.backing is not None and (
                dev.levels.level >= CRITICAL or not fits):
            steps.append(f"{self._write_behind(c.reclaim_pages, (table, idx))} pages "
                         "written back")
            fits = dev.reference.fits(table, idx, size, extra)
        ok = fits and dev.levels.level < CRITICAL
        if ok:
            dev.counters.reclaim_rescued += 1
        else:
            dev.counters.reclaim_failed += 1
        dev.events.add("reclaim", f"{page_name(table, idx)}: "
                       f"{', '.join(steps) or 'no step due'}"
                       f"; {'stored' if ok else 'still refusing'} at fill {dev.fill:.1%}",
                       ratelimit=True)
        return fits

    def _write_behind(self, count: int, exclude: tuple[PageTable, int]) -> int:
        """Move up to `count` of the coldest stored pages (idle ones first, then by last
        access; in table order without tracking) to the backing file at once: the
        device gets their memory back now, the daemon holds them until they land."""
        dev, b, store = self.dev, self.backing, self.dev.store
        assert b is not None
        tracking = store.tracking

        def candidates() -> Iterator[tuple[int, int, PageTable, int]]:
            n = 0
            for t in dev.tables():
                for i, w in t.items():
                    if w & KIND_MASK == DEVICE and (t, i) != exclude and (
                            store.marked(t, i) is None):
                        n += 1
                        yield (t.age(i) & ~TRIED if tracking else 0), n, t, i

        done = 0
        for _, _, t, i in heapq.nsmallest(count, candidates(), key=lambda c: c[:2]):
            block = self.alloc_block()
            if block is None:
                break
            data = store.decode(t.get(i))
            store.store_backed(t, i, block)
            b.write_behind(block, data)
            self.behind[block] = (t, i)
            done += 1
        dev.counters.reclaim_written += done
        dev.refresh()
        return done

    def flush_job(self) -> IoJob | None:
        """Queued backing-file I/O (pages written behind, holes to punch), or None."""
        b = self.backing
        if b is None or not b.queue:
            return None
        ops = b.take()
        return self.job(ops, lambda results: self._flushed(ops, results))

    def _flushed(self, ops: list[Op], results: list[Any]) -> None:
        dev, b = self.dev, self.backing
        assert b is not None
        for op, res in zip(ops, results, strict=True):
            if op.kind == WRITE and not res:
                dev.counters.bd_writes += 1
        for op, err in b.finish(ops, results):
            # a page written behind did not land: it stays in host memory instead
            dev.counters.bd_failed += 1
            table, idx = self.behind.get(op.block, (None, 0))
            if table is not None and table.get(idx) == pack(BACKED, op.block):
                dev.store.store_fallback(table, idx, op.data, NONE_ID, True)
                dev.events.add("bd_error", f"{page_name(table, idx)}: backing file write "
                               f"failed: {os.strerror(err)}, kept in host memory",
                               ratelimit=True)
        for op in ops:
            if op.kind == WRITE:
                self.behind.pop(op.block, None)
        dev.refresh()

    def settle(self) -> None:
        """Carry out every pending backing-file job here and now (the in-process API's
        way; the adapter runs them in a worker thread instead)."""
        while (job := self.staged_job() or self.flush_job()) is not None:
            try:
                run_inline(job)
            except DeviceError:
                continue            # a failed staged write: already counted and logged
