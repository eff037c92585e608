"""Where compressed page data physically lives, and what it really costs.

The device talks to a pool through `Pool` only. `used_bytes` is the honest
physical usage including allocator overhead (zram's mem_used_total);
`stored_bytes` is the sum of object lengths (compr_data_size).

`ArenaPool` is zsmalloc's design in Python:

- size classes 16 bytes apart, from 32 bytes up to the huge threshold; an
  object at or above it is huge and gets a page of its own;
- each class carves *zspages*, runs of 1-8 contiguous pages (the count chosen,
  as zsmalloc does, to waste the least), so objects straddle page boundaries;
- a handle *is* the object's location (class, zspage, index, size), as
  zsmalloc's obj value is, so a stored page costs no pool metadata beyond its
  share of its zspage's 10 bytes; `compact()` moves objects and returns the
  old-to-new handle map for the owner to apply;
- `used_bytes` = pages held by zspages and huge pages × 4096.

The memory is a memfd mapped in windows, one run length per window. A freed
zspage is returned to the kernel with fallocate(PUNCH_HOLE), which works on
mlock()ed memory and, unlike madvise or munmap, does not split the mapping; a
small cache of emptied zspages is kept for reuse first.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from array import array
from dataclasses import dataclass
from typing import Protocol

from .units import PAGE_SIZE

CLASS_STEP = 16
MIN_CLASS = 32
MAX_ZSPAGE_PAGES = 8
WINDOW_BYTES = 32 << 20          # memfd is mapped this much at a time
# Emptied zspages kept mapped for quick reuse, per run length, before the rest go
# back to the kernel: refaulting a punched page costs more than compressing it.
REUSE_CACHE_BYTES = 1 << 20
# Fresh memory is faulted in this much at a time (MADV_POPULATE_WRITE): one
# madvise is far cheaper than a page fault on every new zspage.
POPULATE_BYTES = 256 << 10
_MADV_POPULATE_WRITE = 23
HUGE = 255                       # class id of whole-page objects

# handle: class 8 bits | zspage 26 bits | object index 10 bits | size 13 bits = 57 bits,
# so the device can pack it into a 64-bit page-table word with 6 bits of its own.
_SIZE_BITS, _IDX_BITS, _ZS_BITS = 13, 10, 26
_IDX_SHIFT = _SIZE_BITS
_ZS_SHIFT = _IDX_SHIFT + _IDX_BITS
_CLS_SHIFT = _ZS_SHIFT + _ZS_BITS
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_IDX_MASK = (1 << _IDX_BITS) - 1
_ZS_MASK = (1 << _ZS_BITS) - 1
HANDLE_BITS = _CLS_SHIFT + 8

_FALLOC_KEEP_SIZE_PUNCH_HOLE = 0x01 | 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def class_size(size: int) -> int:
    """The size class an object of `size` bytes occupies (a page when huge)."""
    if size <= MIN_CLASS:
        return MIN_CLASS
    if size >= PAGE_SIZE:
        return PAGE_SIZE
    return -(-size // CLASS_STEP) * CLASS_STEP


def pages_per_zspage(size: int) -> int:
    """zsmalloc's get_pages_per_zspage: the run length that wastes the least."""
    best, best_used = 1, 0.0
    for k in range(1, MAX_ZSPAGE_PAGES + 1):
        span = k * PAGE_SIZE
        used = (span // size * size) / span
        if used > best_used + 1e-9:
            best, best_used = k, used
    return best


class Pool(Protocol):
    @property
    def used_bytes(self) -> int: ...

    @property
    def stored_bytes(self) -> int: ...

    def cost(self, size: int) -> int:
        """How much `used_bytes` would grow if an object of `size` were stored now."""
        ...

    def charge(self, size: int) -> int:
        """The bytes an object of `size` occupies (its class size)."""
        ...

    def put(self, blob: bytes) -> int: ...

    def get(self, handle: int) -> bytes: ...

    def free(self, handle: int) -> int:
        """Free an object; return its charge."""
        ...

    def compact(self) -> dict[int, int]:
        """Move objects to free memory; return {old handle: new handle}."""
        ...


class ClassPool:
    """Objects kept whole as Python bytes, each charged its size class.

    The host-memory side of fallback: few pages, no need for arenas."""

    def __init__(self) -> None:
        self._objects: dict[int, bytes] = {}
        self._next = 1
        self.used_bytes = 0
        self.stored_bytes = 0

    def cost(self, size: int) -> int:
        return class_size(size)

    def charge(self, size: int) -> int:
        return class_size(size)

    def put(self, blob: bytes) -> int:
        handle = self._next
        self._next += 1
        self._objects[handle] = blob
        self.used_bytes += class_size(len(blob))
        self.stored_bytes += len(blob)
        return handle

    def get(self, handle: int) -> bytes:
        return self._objects[handle]

    def free(self, handle: int) -> int:
        blob = self._objects.pop(handle)
        charge = class_size(len(blob))
        self.used_bytes -= charge
        self.stored_bytes -= len(blob)
        return charge

    def __len__(self) -> int:
        return len(self._objects)

    def compact(self) -> dict[int, int]:
        return {}


class _Windows:
    """Runs of k pages carved from a memfd, one run length per mapped window."""

    def __init__(self, fd: int, k: int, alloc_window: _WindowAllocator) -> None:
        self.fd = fd
        self.k = k
        self.span = k * PAGE_SIZE
        self.per_window = WINDOW_BYTES // self.span
        self._alloc_window = alloc_window
        self.maps: list[mmap.mmap] = []
        self.offsets: list[int] = []      # window's offset in the memfd
        self.free_slots = array("Q")     # punched: cost nothing until reused
        self.cached = array("Q")         # still resident: reused first
        self.cache_limit = max(1, REUSE_CACHE_BYTES // self.span)
        self.populated_to = 0            # offset in the newest window faulted in so far
        self.next_slot = 0

    def take(self) -> int:
        if self.cached:
            return self.cached.pop()
        if self.free_slots:
            return self.free_slots.pop()
        slot = self.next_slot
        w, i = divmod(slot, self.per_window)
        if w >= len(self.maps):
            offset, mm = self._alloc_window()
            self.maps.append(mm)
            self.offsets.append(offset)
        start = i * self.span
        if start >= self.populated_to:
            self._populate(w, start)
        self.next_slot += 1
        return slot

    def _populate(self, w: int, start: int) -> None:
        stop = min(start + max(POPULATE_BYTES, self.span), self.per_window * self.span)
        # before Linux 5.14 this fails, and pages simply fault in one by one
        with contextlib.suppress(OSError):
            self.maps[w].madvise(_MADV_POPULATE_WRITE, start, stop - start)
        self.populated_to = stop if stop < self.per_window * self.span else 0

    def give_back(self, slot: int) -> None:
        if len(self.cached) < self.cache_limit:
            self.cached.append(slot)
            return
        w, i = divmod(slot, self.per_window)
        if _libc.fallocate(self.fd, _FALLOC_KEEP_SIZE_PUNCH_HOLE,
                           self.offsets[w] + i * self.span, self.span) != 0:
            raise OSError(ctypes.get_errno(), "fallocate(PUNCH_HOLE) on the pool memfd")
        self.free_slots.append(slot)

    def locate(self, slot: int) -> tuple[mmap.mmap, int]:
        w, i = divmod(slot, self.per_window)
        return self.maps[w], i * self.span


class _WindowAllocator(Protocol):
    def __call__(self) -> tuple[int, mmap.mmap]: ...


@dataclass
class ClassStats:
    size: int
    pages_per_zspage: int
    objs_allocated: int
    objs_used: int
    pages_used: int
    freeable_pages: int


class _SizeClass:
    """One size class: its zspages as parallel typed arrays, indexed by zspage id.

    10 bytes a zspage: window slot, live objects, objects ever carved, and the
    head of the free list that lives inside the free objects themselves."""

    def __init__(self, cid: int, size: int, k: int, windows: _Windows) -> None:
        self.cid = cid
        self.size = size
        self.k = k
        self.per_zspage = k * PAGE_SIZE // size
        self.windows = windows
        self.slot = array("I")       # window slot of the zspage
        self.used = array("H")       # live objects; 0 = the zspage id is free
        self.bump = array("H")       # objects ever carved (never-used ones follow)
        self.head = array("h")       # first free object below bump, -1 if none
        self.free_ids = array("I")   # zspage ids to reuse
        self.partial: set[int] = set()
        self.live = 0
        self.zspages = 0

    def alloc(self) -> tuple[int, int]:
        """Reserve an object slot; return (zspage id, object index)."""
        zs = next(iter(self.partial)) if self.partial else self._new_zspage()
        head = self.head[zs]
        if head >= 0:
            mm, base = self.windows.locate(self.slot[zs])
            off = base + head * self.size
            self.head[zs] = int.from_bytes(mm[off:off + 2], "little", signed=True)
            idx = head
        else:
            idx = self.bump[zs]
            self.bump[zs] = idx + 1
        used = self.used[zs] + 1
        self.used[zs] = used
        self.live += 1
        if used == self.per_zspage:
            self.partial.discard(zs)
        return zs, idx

    def release(self, zs: int, idx: int) -> bool:
        """Free an object slot; True if its zspage was emptied and returned."""
        self.live -= 1
        used = self.used[zs] - 1
        self.used[zs] = used
        if not used:
            self.windows.give_back(self.slot[zs])
            self.partial.discard(zs)
            self.free_ids.append(zs)
            self.zspages -= 1
            return True
        mm, base = self.windows.locate(self.slot[zs])
        off = base + idx * self.size
        # zsmalloc's trick: the free list lives in the free objects themselves
        mm[off:off + 2] = self.head[zs].to_bytes(2, "little", signed=True)
        self.head[zs] = idx
        self.partial.add(zs)
        return False

    def live_objects(self, zs: int) -> list[int]:
        """Indices of the live objects of a zspage: carved and not on the free list."""
        free = set()
        mm, base = self.windows.locate(self.slot[zs])
        i = self.head[zs]
        while i >= 0:
            free.add(i)
            off = base + i * self.size
            i = int.from_bytes(mm[off:off + 2], "little", signed=True)
        return [i for i in range(self.bump[zs]) if i not in free]

    def _new_zspage(self) -> int:
        slot = self.windows.take()
        if self.free_ids:
            zs = self.free_ids.pop()
            self.slot[zs], self.used[zs], self.bump[zs], self.head[zs] = slot, 0, 0, -1
        else:
            zs = len(self.slot)
            if zs > _ZS_MASK:
                raise MemoryError(f"size class {self.size}: out of zspage ids")
            self.slot.append(slot)
            self.used.append(0)
            self.bump.append(0)
            self.head.append(-1)
        self.partial.add(zs)
        self.zspages += 1
        return zs

    def stats(self) -> ClassStats:
        needed = -(-self.live // self.per_zspage)
        return ClassStats(self.size, self.k, self.zspages * self.per_zspage, self.live,
                          self.zspages * self.k, (self.zspages - needed) * self.k)

    @property
    def metadata_bytes(self) -> int:
        return len(self.slot) * 10 + len(self.free_ids) * 4


class ArenaPool:
    def __init__(self, huge_threshold: int = 3072) -> None:
        self.huge_threshold = huge_threshold
        self._fd = os.memfd_create("cramfs-pool", os.MFD_CLOEXEC)
        self._fd_size = 0
        self._windows: dict[int, _Windows] = {}
        self._classes: list[_SizeClass] = []
        top = class_size(max(huge_threshold - 1, 1))
        for cid, size in enumerate(range(MIN_CLASS, top + 1, CLASS_STEP)):
            self._classes.append(_SizeClass(cid, size, pages_per_zspage(size),
                                            self._window(pages_per_zspage(size))))
        assert len(self._classes) < HUGE
        # huge objects own a page: the handle holds its window slot, no zspage state
        self._huge_pages = self._window(1)
        # size -> class, precomputed: the lookup is on every store
        self._by_size: list[_SizeClass | None] = [
            self._classes[(max(n, MIN_CLASS) - MIN_CLASS + CLASS_STEP - 1) // CLASS_STEP]
            if n < huge_threshold else None for n in range(PAGE_SIZE + 1)]
        self.stored_bytes = 0
        self.used_bytes = 0             # pages held by zspages and huge pages, in bytes
        self.huge_pages = 0
        self.pages_compacted = 0

    def _window(self, k: int) -> _Windows:
        if k not in self._windows:
            self._windows[k] = _Windows(self._fd, k, self._map_window)
        return self._windows[k]

    def _map_window(self) -> tuple[int, mmap.mmap]:
        offset = self._fd_size
        self._fd_size += WINDOW_BYTES
        os.ftruncate(self._fd, self._fd_size)        # sparse: costs nothing until written
        return offset, mmap.mmap(self._fd, WINDOW_BYTES, mmap.MAP_SHARED,
                                 offset=offset)

    # ------------------------------------------------------------ Pool

    def charge(self, size: int) -> int:
        c = self._by_size[size]
        return c.size if c is not None else PAGE_SIZE

    def cost(self, size: int) -> int:
        c = self._by_size[size]
        if c is None:
            return PAGE_SIZE
        return 0 if c.partial else c.k * PAGE_SIZE

    def put(self, blob: bytes) -> int:
        size = len(blob)
        c = self._by_size[size]
        if c is None:
            slot = self._huge_pages.take()
            mm, off = self._huge_pages.locate(slot)
            mm[off:off + size] = blob
            self.used_bytes += PAGE_SIZE
            self.stored_bytes += size
            self.huge_pages += 1
            return HUGE << _CLS_SHIFT | slot << _IDX_SHIFT | size
        before = c.zspages
        zs, idx = c.alloc()
        if c.zspages != before:
            self.used_bytes += c.k * PAGE_SIZE
        mm, base = c.windows.locate(c.slot[zs])
        off = base + idx * c.size
        mm[off:off + size] = blob
        self.stored_bytes += size
        return c.cid << _CLS_SHIFT | zs << _ZS_SHIFT | idx << _IDX_SHIFT | size

    def get(self, handle: int) -> bytes:
        cid = handle >> _CLS_SHIFT
        size = handle & _SIZE_MASK
        if cid == HUGE:
            mm, off = self._huge_pages.locate(handle >> _IDX_SHIFT & ((1 << 36) - 1))
            return mm[off:off + size]
        c = self._classes[cid]
        mm, base = c.windows.locate(c.slot[handle >> _ZS_SHIFT & _ZS_MASK])
        off = base + (handle >> _IDX_SHIFT & _IDX_MASK) * c.size
        return mm[off:off + size]

    def free(self, handle: int) -> int:
        cid = handle >> _CLS_SHIFT
        self.stored_bytes -= handle & _SIZE_MASK
        if cid == HUGE:
            self._huge_pages.give_back(handle >> _IDX_SHIFT & ((1 << 36) - 1))
            self.used_bytes -= PAGE_SIZE
            self.huge_pages -= 1
            return PAGE_SIZE
        c = self._classes[cid]
        if c.release(handle >> _ZS_SHIFT & _ZS_MASK, handle >> _IDX_SHIFT & _IDX_MASK):
            self.used_bytes -= c.k * PAGE_SIZE
        return c.size

    def __len__(self) -> int:
        return sum(c.live for c in self._classes) + self.huge_pages

    def extent(self, handle: int) -> tuple[int, int, int]:
        """(window id, start, stop) of an object, for checking that none overlap."""
        cid = handle >> _CLS_SHIFT
        if cid == HUGE:
            mm, off = self._huge_pages.locate(handle >> _IDX_SHIFT & ((1 << 36) - 1))
        else:
            c = self._classes[cid]
            mm, base = c.windows.locate(c.slot[handle >> _ZS_SHIFT & _ZS_MASK])
            off = base + (handle >> _IDX_SHIFT & _IDX_MASK) * c.size
        return id(mm), off, off + (handle & _SIZE_MASK)

    # ------------------------------------------------------------ compaction and stats

    def compact(self) -> dict[int, int]:
        """Move objects out of sparse zspages so those can be freed.

        Like zs_compact: per class, evacuate the emptiest zspages into free slots
        of the fullest. Returns {old handle: new handle}; the owner rewrites its
        references (the device does, in its page tables)."""
        moves: dict[int, int] = {}
        for c in self._classes:
            spare = c.zspages - -(-c.live // c.per_zspage)
            if spare <= 0:
                continue
            live = [zs for zs in range(len(c.slot)) if c.used[zs]]
            victims = sorted(live, key=lambda z: c.used[z])[:spare]
            c.partial -= set(victims)
            for zs in victims:
                mm, base = c.windows.locate(c.slot[zs])
                for idx in c.live_objects(zs):
                    off = base + idx * c.size
                    data = mm[off:off + c.size]
                    nzs, nidx = c.alloc()
                    nmm, nbase = c.windows.locate(c.slot[nzs])
                    noff = nbase + nidx * c.size
                    nmm[noff:noff + c.size] = data
                    old = c.cid << _CLS_SHIFT | zs << _ZS_SHIFT | idx << _IDX_SHIFT
                    new = c.cid << _CLS_SHIFT | nzs << _ZS_SHIFT | nidx << _IDX_SHIFT
                    moves[old] = new
                    if c.release(zs, idx):
                        self.used_bytes -= c.k * PAGE_SIZE
                        self.pages_compacted += c.k
                    else:
                        c.partial.discard(zs)   # still a victim: take no new objects
        return moves

    def class_stats(self) -> list[ClassStats]:
        out = [c.stats() for c in self._classes if c.zspages]
        if self.huge_pages:
            out.append(ClassStats(PAGE_SIZE, 1, self.huge_pages, self.huge_pages,
                                  self.huge_pages, 0))
        return out

    @property
    def metadata_bytes(self) -> int:
        """Bytes of bookkeeping the pool keeps outside the pages it holds."""
        return sum(c.metadata_bytes for c in self._classes) + sum(
            8 * (len(w.free_slots) + len(w.cached)) for w in self._windows.values())

    def close(self) -> None:
        for w in self._windows.values():
            for mm in w.maps:
                mm.close()
        os.close(self._fd)


def rebase(handle: int, moves: dict[int, int]) -> int:
    """The handle an object has after compaction (moves are keyed without size)."""
    new = moves.get(handle & ~_SIZE_MASK)
    return handle if new is None else new | handle & _SIZE_MASK
