"""Where compressed page data physically lives, and what it really costs.

The device talks to a pool through `Pool` only. `used_bytes` is the honest
physical usage including allocator overhead (zram's mem_used_total);
`stored_bytes` is the sum of object lengths (compr_data_size).

`ArenaPool` is zsmalloc's design in Python:

- zsmalloc's size classes for a chain size (zsgeometry.py): 16 bytes apart,
  merged where zsmalloc merges them, looked up with the handle's 8 bytes
  added; an object at or above the huge threshold gets a page of its own;
- each class carves *zspages*, runs of 1 to chain-size contiguous pages, so
  objects straddle page boundaries; the next object goes where zsmalloc
  would put it (the fullest zspage first), and compaction moves objects as
  zs_compact does, so the same stores and frees give zram's numbers;
- a handle *is* the object's location (class, zspage, index, size), as
  zsmalloc's obj value is, so a stored page costs no pool metadata beyond its
  share of its zspage's 10 bytes; `compact()` moves objects and returns the
  old-to-new handle map for the owner to apply;
- `used_bytes` = pages held by zspages and huge pages × 4096.

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
from dataclasses import dataclass
from typing import Protocol

from .units import PAGE_SHIFT, PAGE_SIZE
from .zsgeometry import CHAIN_SIZES, DEFAULT_CHAIN_SIZE, ZS_SIZE_CLASSES, SizeClass, geometry

MAX_ZSPAGE_PAGES = max(CHAIN_SIZES)     # the longest zspage any chain size makes
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
_HUGE_MASK = (1 << (_ZS_BITS + _IDX_BITS)) - 1    # a huge object's page number
_PAGE_LIMIT = (1 << 32) - 1                         # page numbers are kept in array('I')
HANDLE_BITS = _CLS_SHIFT + 8

_FALLOC_KEEP_SIZE_PUNCH_HOLE = 0x01 | 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def class_size(size: int, chain_size: int = DEFAULT_CHAIN_SIZE) -> int:
    """The bytes an object of `size` occupies in zsmalloc: its merged class's size,
    handle included (a page for a page)."""
    return geometry(chain_size).class_of(min(size, PAGE_SIZE)).size


# class_size() for every object length at the default chain size: the fallback pool
# charges every page it takes and frees, and a refusal storm sends it thousands a second
DEFAULT_CLASS_SIZE = [class_size(n) for n in range(PAGE_SIZE + 1)]


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

    def charge_of(self, handle: int) -> int:
        """The charge of a stored object."""
        ...

    def put(self, blob: bytes) -> int: ...

    def get(self, handle: int) -> bytes: ...

    def free(self, handle: int) -> int:
        """Free an object; return its charge."""
        ...

    def compact(self) -> dict[int, int]:
        """Move objects to free memory; return {old handle: new handle}."""
        ...

    def close(self) -> None:
        """Give the memory back; the pool is unusable after."""
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
        return DEFAULT_CLASS_SIZE[min(size, PAGE_SIZE)]

    def charge(self, size: int) -> int:
        return DEFAULT_CLASS_SIZE[min(size, PAGE_SIZE)]

    def charge_of(self, handle: int) -> int:
        return self.charge(len(self._objects[handle]))

    def put(self, blob: bytes) -> int:
        handle = self._next
        self._next += 1
        self._objects[handle] = blob
        self.used_bytes += self.charge(len(blob))
        self.stored_bytes += len(blob)
        return handle

    def get(self, handle: int) -> bytes:
        return self._objects[handle]

    def free(self, handle: int) -> int:
        blob = self._objects.pop(handle)
        charge = self.charge(len(blob))
        self.used_bytes -= charge
        self.stored_bytes -= len(blob)
        return charge

    def __len__(self) -> int:
        return len(self._objects)

    def compact(self) -> dict[int, int]:
        return {}

    def close(self) -> None:
        self._objects.clear()


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


@dataclass
class ClassStats:
    index: int             # zsmalloc's class index
    size: int
    pages_per_zspage: int
    objs_allocated: int
    objs_used: int
    pages_used: int
    freeable_pages: int


# zsmalloc's fullness groups: 0 empty, 1-10 by tenths of objects in use, 11 full.
_FULL = 11
_ISOLATED = 12                   # taken off every list while compaction works on it
_LISTED = 0b11111111110          # groups 1-10: the zspages that can take an object


class _SizeClass:
    """One size class: its zspages as parallel typed arrays, indexed by zspage id.

    10 bytes a zspage: first page, live objects, objects ever carved, and the
    head of the free list that lives inside the free objects themselves.
    Free-list links are stored as index + 1, so 0 ends the list; freed objects
    are reused last-freed first and never-used ones in address order, which is
    the order of zsmalloc's own free list.

    Which zspage takes the next object is zsmalloc's choice exactly: the head
    of the fullest non-full group (find_get_zspage), where a zspage that
    changes group goes to the head of its new one. A group's dict keeps that
    order (the head is its last key), and `mask` has a bit per non-empty group."""

    def __init__(self, cid: int, spec: SizeClass, runs: _Runs) -> None:
        self.cid = cid
        self.index = spec.index
        self.size = spec.size
        self.k = spec.pages_per_zspage
        self.per_zspage = spec.objs_per_zspage
        self.runs = runs
        self.mem = runs.mem
        self.page = array("I")       # first page of the zspage in the memfd
        self.used = array("H")       # live objects; 0 = the zspage id is free
        self.bump = array("H")       # objects ever carved (never-used ones follow)
        self.head = array("H")       # first free object below bump, + 1; 0 if none
        self.group = array("B")      # fullness group
        # zsmalloc's OBJ_ALLOCATED_TAG as a bitmap, bit zs * per_zspage + idx: a free of
        # an object that is not live, or a read of one, is refused instead of absorbed
        # (a second free would put the object on its free list twice)
        self.alive = bytearray()
        self.free_ids = array("I")   # zspage ids to reuse
        self.groups: list[dict[int, None]] = [{} for _ in range(_FULL)]
        self.mask = 0
        self.live = 0
        self.zspages = 0

    # ------------------------------------------------------------ fullness lists

    def _fullness(self, used: int) -> int:
        """get_fullness_group()."""
        if used == self.per_zspage:
            return _FULL
        return 100 * used // self.per_zspage // 10 + 1 if used else 0

    def _list(self, zs: int, group: int) -> None:
        self.group[zs] = group
        if 0 < group < _FULL:
            self.groups[group][zs] = None
            self.mask |= 1 << group

    def _unlist(self, zs: int) -> None:
        group = self.group[zs]
        if 0 < group < _FULL:
            members = self.groups[group]
            del members[zs]
            if not members:
                self.mask &= ~(1 << group)

    def _regroup(self, zs: int) -> None:
        """fix_fullness_group(): a zspage whose group changed moves to its head."""
        group = self._fullness(self.used[zs])
        if group != self.group[zs]:
            self._unlist(zs)
            self._list(zs, group)

    def _head(self, fullest: bool) -> int | None:
        """The head of the fullest (or sparsest) group in 1-10, or None."""
        mask = self.mask & _LISTED
        if not mask:
            return None
        group = mask.bit_length() - 1 if fullest else (mask & -mask).bit_length() - 1
        return next(reversed(self.groups[group]))

    @property
    def has_room(self) -> bool:
        return bool(self.mask & _LISTED)

    # ------------------------------------------------------------ objects

    def is_live(self, zs: int, idx: int) -> bool:
        bit = zs * self.per_zspage + idx
        return idx < self.per_zspage and bit >> 3 < len(self.alive) and bool(
            self.alive[bit >> 3] >> (bit & 7) & 1)

    def _obj_malloc(self, zs: int) -> tuple[int, int]:
        """Take a free object of the zspage; return (object index, byte offset)."""
        base = self.page[zs] << PAGE_SHIFT
        link = self.head[zs]
        if link:
            idx = link - 1
            off = base + idx * self.size
            mm = self.mem.mm
            self.head[zs] = mm[off] | mm[off + 1] << 8      # type: ignore[index]
        else:
            idx = self.bump[zs]
            if idx >= self.per_zspage:
                raise ValueError(f"size class {self.size}: zspage {zs} overfilled")
            self.bump[zs] = idx + 1
            off = base + idx * self.size
        bit = zs * self.per_zspage + idx
        self.alive[bit >> 3] |= 1 << (bit & 7)
        self.used[zs] += 1
        self.live += 1
        return idx, off

    def _obj_free(self, zs: int, idx: int) -> None:
        if not self.is_live(zs, idx):
            raise ValueError(f"size class {self.size}: object {zs}:{idx} is not live "
                             "(freed twice, or a stale handle)")
        bit = zs * self.per_zspage + idx
        self.alive[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
        self.live -= 1
        self.used[zs] -= 1
        off = (self.page[zs] << PAGE_SHIFT) + idx * self.size
        link = self.head[zs]
        mm = self.mem.mm
        # zsmalloc's trick: the free list lives in the free objects themselves
        mm[off] = link & 0xFF                                # type: ignore[index]
        mm[off + 1] = link >> 8                              # type: ignore[index]
        self.head[zs] = idx + 1

    def alloc(self) -> tuple[int, int, int]:
        """Reserve an object slot; return (zspage id, object index, byte offset)."""
        zs = self._head(fullest=True)
        if zs is None:
            zs = self._new_zspage()
        idx, off = self._obj_malloc(zs)
        self._regroup(zs)
        return zs, idx, off

    def release(self, zs: int, idx: int) -> bool:
        """Free an object slot; True if its zspage was emptied and returned."""
        self._obj_free(zs, idx)
        if not self.used[zs]:
            self._unlist(zs)
            self._free_zspage(zs)
            return True
        self._regroup(zs)
        return False

    def offset(self, zs: int, idx: int) -> int:
        return (self.page[zs] << PAGE_SHIFT) + idx * self.size

    def live_objects(self, zs: int) -> list[int]:
        """Indices of the live objects of a zspage, in address order."""
        free = set()
        mm = self.mem.mm
        assert mm is not None
        link = self.head[zs]
        while link:
            free.add(link - 1)
            off = self.offset(zs, link - 1)
            link = mm[off] | mm[off + 1] << 8
        return [i for i in range(self.bump[zs]) if i not in free]

    def _new_zspage(self) -> int:
        if not self.free_ids and len(self.page) > _ZS_MASK:   # before a run is taken
            raise MemoryError(f"size class {self.size}: out of zspage ids")
        page = self.runs.take()
        if self.free_ids:
            zs = self.free_ids.pop()
            self.page[zs], self.used[zs], self.bump[zs], self.head[zs] = page, 0, 0, 0
            self.group[zs] = 0
        else:
            zs = len(self.page)
            # the zspage's live bits, all clear (a reused id's are clear: all freed)
            need = ((zs + 1) * self.per_zspage + 7) >> 3
            self.alive.extend(bytes(need - len(self.alive)))
            self.page.append(page)
            self.used.append(0)
            self.bump.append(0)
            self.head.append(0)
            self.group.append(0)
        self.zspages += 1
        return zs

    def _free_zspage(self, zs: int) -> None:
        self.runs.give_back(self.page[zs])
        self.group[zs] = 0
        self.free_ids.append(zs)
        self.zspages -= 1

    # ------------------------------------------------------------ compaction

    def freeable(self) -> int:
        """zs_can_compact(): pages that compaction could give back."""
        wasted = self.zspages * self.per_zspage - self.live
        return wasted // self.per_zspage * self.k

    def compact(self, mm: mmap.mmap, moves: dict[int, int]) -> int:
        """__zs_compact(): move objects from the sparsest zspages into the fullest;
        return the pages given back. Records each move in `moves`."""
        freed = 0
        dst: int | None = None
        while self.freeable():
            if dst is None:
                dst = self._isolate(fullest=True)
                if dst is None:
                    break
            src = self._isolate(fullest=False)
            if src is None:
                break
            for idx in self.live_objects(src):          # migrate_zspage()
                nidx, noff = self._obj_malloc(dst)
                off = self.offset(src, idx)
                mm[noff:noff + self.size] = mm[off:off + self.size]
                key = self.cid << _CLS_SHIFT | src << _ZS_SHIFT | idx << _IDX_SHIFT
                moves[key] = self.cid << _CLS_SHIFT | dst << _ZS_SHIFT | nidx << _IDX_SHIFT
                self._obj_free(src, idx)
                if self.used[dst] == self.per_zspage or not self.used[src]:
                    break
            if self.used[src]:
                self._list(src, self._fullness(self.used[src]))
            else:
                self._free_zspage(src)
                freed += self.k
            if self.used[dst] == self.per_zspage:
                self._list(dst, _FULL)
                dst = None
        if dst is not None:
            self._list(dst, self._fullness(self.used[dst]))
        return freed

    def _isolate(self, fullest: bool) -> int | None:
        zs = self._head(fullest)
        if zs is not None:
            self._unlist(zs)
            self.group[zs] = _ISOLATED
        return zs

    def stats(self) -> ClassStats:
        return ClassStats(self.index, self.size, self.k, self.zspages * self.per_zspage, self.live,
                          self.zspages * self.k, self.freeable())

    @property
    def metadata_bytes(self) -> int:
        return len(self.page) * 11 + len(self.free_ids) * 4 + (
            len(self.page) * self.per_zspage + 7) // 8


class ArenaPool:
    def __init__(self, huge_threshold: int | None = None,
                 chain_size: int = DEFAULT_CHAIN_SIZE) -> None:
        geo = geometry(chain_size)
        self.geometry = geo
        self.huge_threshold = geo.huge_class_size if huge_threshold is None else huge_threshold
        if not 1 <= self.huge_threshold <= geo.huge_class_size:
            raise ValueError(f"huge_threshold must be 1-{geo.huge_class_size} with "
                             f"chain_size {chain_size}")
        self._mem = _Memory()
        self._runs: dict[int, _Runs] = {}
        # the classes an object below the huge threshold can land in
        top = geo.class_of(self.huge_threshold - 1).size if self.huge_threshold > 1 else 0
        specs = [c for c in geo.classes if c.size <= top]
        self._classes = [_SizeClass(cid, spec, self._runs_of(spec.pages_per_zspage))
                         for cid, spec in enumerate(specs)]
        assert len(self._classes) < HUGE
        by_index = {c.size: c for c in self._classes}
        # huge objects own a page: the handle holds its page number, no zspage state
        self._huge_runs = self._runs_of(1)
        self._huge_alive = bytearray()  # a live bit per page number (see _SizeClass.alive)
        # length -> class, precomputed: the lookup is on every store
        # (with huge_threshold 1 there are no classes at all: everything is huge)
        self._by_size: list[_SizeClass | None] = [
            by_index.get(geo.class_of(n).size) if n < self.huge_threshold else None
            for n in range(PAGE_SIZE + 1)]
        self.stored_bytes = 0
        self.used_bytes = 0             # pages held by zspages and huge pages, in bytes
        self.huge_pages = 0
        self.pages_compacted = 0

    def _runs_of(self, k: int) -> _Runs:
        if k not in self._runs:
            self._runs[k] = _Runs(self._mem, k)
        return self._runs[k]

    def _huge_live(self, page: int) -> bool:
        return page >> 3 < len(self._huge_alive) and bool(
            self._huge_alive[page >> 3] >> (page & 7) & 1)

    def _set_huge(self, page: int, live: bool) -> None:
        if page >> 3 >= len(self._huge_alive):       # in 8-byte words, as the native pool
            self._huge_alive.extend(bytes(((page >> 6) + 1) * 8 - len(self._huge_alive)))
        if live:
            self._huge_alive[page >> 3] |= 1 << (page & 7)
        else:
            self._huge_alive[page >> 3] &= ~(1 << (page & 7)) & 0xFF

    def _offset(self, handle: int) -> int:
        """Where a live object is; ValueError for a handle that names none (freed,
        never made, or of another size), as the native pool refuses it."""
        cid = handle >> _CLS_SHIFT
        size = handle & _SIZE_MASK
        if cid == HUGE:
            page = handle >> _IDX_SHIFT & _HUGE_MASK
            if not self._huge_live(page) or size > PAGE_SIZE:
                raise ValueError(f"bad pool handle {handle:#x}: no live object")
            return page << PAGE_SHIFT
        if cid >= len(self._classes):
            raise ValueError(f"bad pool handle {handle:#x}")
        c = self._classes[cid]
        zs, idx = handle >> _ZS_SHIFT & _ZS_MASK, handle >> _IDX_SHIFT & _IDX_MASK
        if not c.is_live(zs, idx) or size > c.size:
            raise ValueError(f"bad pool handle {handle:#x}: no live object")
        return (c.page[zs] << PAGE_SHIFT) + idx * c.size

    # ------------------------------------------------------------ Pool

    def charge(self, size: int) -> int:
        c = self._by_size[size]
        return c.size if c is not None else PAGE_SIZE

    def charge_of(self, handle: int) -> int:
        return self.charge(handle & _SIZE_MASK)

    def cost(self, size: int) -> int:
        c = self._by_size[size]
        if c is None:
            return PAGE_SIZE
        return 0 if c.has_room else c.k * PAGE_SIZE

    def put(self, blob: bytes) -> int:
        size = len(blob)
        c = self._by_size[size]
        if c is None:
            page = self._huge_runs.take()
            self._mem.mm[page << PAGE_SHIFT:(page << PAGE_SHIFT) + size] = blob  # type: ignore[index]
            self._set_huge(page, True)
            self.used_bytes += PAGE_SIZE
            self.stored_bytes += size
            self.huge_pages += 1
            return HUGE << _CLS_SHIFT | page << _IDX_SHIFT | size
        grows = not c.has_room
        zs, idx, off = c.alloc()          # may fail (no memory): nothing counted yet
        if grows:
            self.used_bytes += c.k * PAGE_SIZE
        self._mem.mm[off:off + size] = blob                  # type: ignore[index]
        self.stored_bytes += size
        return c.cid << _CLS_SHIFT | zs << _ZS_SHIFT | idx << _IDX_SHIFT | size

    def get(self, handle: int) -> bytes:
        off = self._offset(handle)
        return self._mem.mm[off:off + (handle & _SIZE_MASK)]     # type: ignore[index]

    def free(self, handle: int) -> int:
        """Free a live object; ValueError (nothing changed) for any other handle."""
        self._offset(handle)              # checks that it names a live object
        cid = handle >> _CLS_SHIFT
        if cid == HUGE:
            page = handle >> _IDX_SHIFT & _HUGE_MASK
            self._set_huge(page, False)
            self.stored_bytes -= handle & _SIZE_MASK
            self.used_bytes -= PAGE_SIZE
            self.huge_pages -= 1
            self._huge_runs.give_back(page)
            return PAGE_SIZE
        c = self._classes[cid]
        self.stored_bytes -= handle & _SIZE_MASK
        if c.release(handle >> _ZS_SHIFT & _ZS_MASK, handle >> _IDX_SHIFT & _IDX_MASK):
            self.used_bytes -= c.k * PAGE_SIZE
        return c.size

    def __len__(self) -> int:
        return sum(c.live for c in self._classes) + self.huge_pages

    def extent(self, handle: int) -> tuple[int, int]:
        """[start, stop) of an object in the pool, for checking that none overlap."""
        off = self._offset(handle)
        return off, off + (handle & _SIZE_MASK)

    # ------------------------------------------------------------ compaction and stats

    def compact(self) -> dict[int, int]:
        """zs_compact(): per class, largest first, move objects from the sparsest
        zspages into the fullest, as zsmalloc does; then give back the memory that
        holds nothing. Returns {old handle: new handle} (without the size bits);
        the owner rewrites its references (the device does, in its page tables)."""
        moves: dict[int, int] = {}
        mm = self._mem.mm
        for c in reversed(self._classes):
            if mm is not None and c.freeable():
                freed = c.compact(mm, moves)
                self.used_bytes -= freed * PAGE_SIZE
                self.pages_compacted += freed
        for runs in self._runs.values():
            runs.flush()
        return moves

    def class_stats(self) -> list[ClassStats]:
        out = [c.stats() for c in self._classes if c.zspages]
        if self.huge_pages:
            out.append(ClassStats(ZS_SIZE_CLASSES - 1, PAGE_SIZE, 1, self.huge_pages,
                                  self.huge_pages, self.huge_pages, 0))
        return out

    @property
    def metadata_bytes(self) -> int:
        """Bytes of bookkeeping the pool keeps outside the pages it holds."""
        return sum(c.metadata_bytes for c in self._classes) + sum(
            r.metadata_bytes for r in self._runs.values()) + len(self._huge_alive)

    def inject_failure(self, n: int) -> None:
        """Tests: the n-th next memory operation (a window carved, a hole punched)
        fails with ENOMEM; 0 clears it."""
        self._mem.fail_in = n

    def close(self) -> None:
        self._mem.close()


def rebase(handle: int, moves: dict[int, int]) -> int:
    """The handle an object has after compaction (moves are keyed without size)."""
    new = moves.get(handle & ~_SIZE_MASK)
    return handle if new is None else new | handle & _SIZE_MASK
