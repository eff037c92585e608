"""The arena pool's memory: one memfd, carved into runs of contiguous pages.

Split from pool.py so that the size classes (zsclass.py) and the pool see their
memory only as runs of k pages named by a page number, and the fd, the mapping
and giving pages back to the kernel are dealt with in one place. The compiled
pool's memory layer (_zsmemory.pyx) is this module compiled, with its constants.

The memory is one memfd, mapped whole, and carved in windows, one run length
per window. A freed zspage is returned to the kernel with
fallocate(PUNCH_HOLE), which works on mlock()ed memory and, unlike madvise or
munmap, does not split the mapping; a small cache of emptied zspages is kept
for reuse first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import weakref
from array import array

from .units import PAGE_SHIFT, PAGE_SIZE

WINDOW_BYTES = 32 << 20          # the memfd is carved this much at a time per run length
# Emptied zspages kept mapped for quick reuse, all run lengths together, before the
# rest go back to the kernel: refaulting a punched page costs more than compressing
# it, and the DRAM tier's promotions and demotions empty and refill zspages all the
# time. (A replay of a recorded swap run punched 11,248 holes with 1 MiB for each
# run length, 1,515 with 8 MiB shared, the same worst case.)
REUSE_CACHE_BYTES = 8 << 20
# Fresh memory is faulted in this much at a time (MADV_POPULATE_WRITE): one
# madvise is far cheaper than a page fault on every new zspage.
POPULATE_BYTES = 256 << 10
_MADV_POPULATE_WRITE = 23
_PAGE_LIMIT = (1 << 32) - 1                         # page numbers are kept in array('I')

_FALLOC_KEEP_SIZE_PUNCH_HOLE = 0x01 | 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


class _Memory:
    """The pool's memory: one memfd, mapped whole and grown by doubling.

    One mapping means an object's address is plain arithmetic on its page
    number, with no window lookup on the hot path. The memfd is sparse, so
    mapping ahead costs address space only. Growth uses mmap.resize (mremap),
    which may move the mapping: nothing may hold a view into it across a put.
    """

    def __init__(self) -> None:
        self.fd = os.memfd_create("cramfs-pool", os.MFD_CLOEXEC)
        self.mm: mmap.mmap | None = None
        self.carved = 0                   # bytes handed out as windows so far
        self.cached = 0                   # bytes of emptied runs kept resident
        self.fail_in = 0                  # tests: the n-th next window or punch fails
        # an fd is a plain int: without this, a pool dropped unclosed leaks it
        self._close_fd = weakref.finalize(self, os.close, self.fd)

    def _injected(self) -> None:
        if self.fail_in > 0:
            self.fail_in -= 1
            if not self.fail_in:
                raise OSError(errno.ENOMEM, "injected failure")

    def window(self) -> int:
        """Carve a new window; return its offset in bytes. A failure (no memory, no
        address space) carves nothing."""
        offset = self.carved
        self._injected()
        if self.mm is None:
            os.ftruncate(self.fd, WINDOW_BYTES)
            self.mm = mmap.mmap(self.fd, WINDOW_BYTES, mmap.MAP_SHARED)
        elif offset + WINDOW_BYTES > len(self.mm):
            self.mm.resize(max(offset + WINDOW_BYTES, 2 * len(self.mm)))
        self.carved = offset + WINDOW_BYTES
        return offset

    def populate(self, offset: int, length: int) -> None:
        assert self.mm is not None
        # before Linux 5.14 this fails, and pages simply fault in one by one
        with contextlib.suppress(OSError):
            self.mm.madvise(_MADV_POPULATE_WRITE, offset, length)

    def punch(self, offset: int, length: int) -> None:
        self._injected()
        if _libc.fallocate(self.fd, _FALLOC_KEEP_SIZE_PUNCH_HOLE, offset, length) != 0:
            raise OSError(ctypes.get_errno(), "fallocate(PUNCH_HOLE) on the pool memfd")

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        self._close_fd()


class _Runs:
    """Runs of k contiguous pages for one zspage length, carved window by window.

    A run is named by the number of its first page in the memfd."""

    def __init__(self, mem: _Memory, k: int) -> None:
        self.mem = mem
        self.k = k
        self.span = k * PAGE_SIZE
        self.free = array("I")           # punched: cost nothing until reused
        self.cached = array("I")         # still resident: reused first
        self.next = self.end = 0         # carving position in the newest window
        self.populated_to = 0

    def take(self) -> int:
        if self.cached:
            self.mem.cached -= self.span
            return self.cached.pop()
        if self.free:
            return self.free.pop()
        if self.next + self.span > self.end:
            self.next = self.populated_to = self.mem.window()
            self.end = self.next + WINDOW_BYTES // self.span * self.span
        start = self.next
        self.next += self.span
        if start >= self.populated_to:
            self.populated_to = min(start + max(POPULATE_BYTES, self.span), self.end)
            self.mem.populate(start, self.populated_to - start)
        page = start >> PAGE_SHIFT
        if page > _PAGE_LIMIT:
            raise MemoryError("pool memfd exhausted")
        return page

    def _cache(self, page: int) -> None:
        self.cached.append(page)
        self.mem.cached += self.span

    def give_back(self, page: int) -> None:
        """Take back an emptied run. Never fails: a run whose hole cannot be punched
        stays resident in the reuse cache (over its budget), so the caller's free,
        already done, is never half undone."""
        if self.mem.cached + self.span <= REUSE_CACHE_BYTES:
            self._cache(page)
            return
        try:
            self.mem.punch(page << PAGE_SHIFT, self.span)
        except OSError:
            self._cache(page)
            return
        self.free.append(page)

    def flush(self) -> None:
        """Give back what is resident but holds nothing: the reuse cache and the
        part of the newest window populated ahead of use. Best effort, never fails
        (compaction calls it after moving objects): a run that cannot be punched
        stays cached."""
        kept = array("I")
        for page in self.cached:
            try:
                self.mem.punch(page << PAGE_SHIFT, self.span)
            except OSError:
                kept.append(page)
                continue
            self.free.append(page)
            self.mem.cached -= self.span
        self.cached = kept
        if self.populated_to > self.next:
            with contextlib.suppress(OSError):
                self.mem.punch(self.next, self.populated_to - self.next)
                self.populated_to = self.next

    @property
    def metadata_bytes(self) -> int:
        return 4 * (len(self.free) + len(self.cached))

