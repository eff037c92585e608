"""One zsmalloc size class: its zspages, fullness groups, free lists and compaction.

Split from pool.py so that the arena pool there only routes an object to its
class and counts, and the bookkeeping that decides where each object goes (the
part that must match zsmalloc decision for decision) is read in one place. The
compiled pool's `_Class` (_zsclass.pyx) is this module compiled.

The handle's bit layout is defined here too: a handle *is* an object's place in
a class (class, zspage, object index, size), and compaction, which moves
objects, writes the new handles. pool.py re-exports it, and engine.py checks
the compiled modules' layout (_zslayout.pxi) against it.
"""

from __future__ import annotations

import mmap
from array import array
from dataclasses import dataclass

from .units import PAGE_SHIFT
from .zsgeometry import SizeClass
from .zsmemory import _Runs

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
HANDLE_BITS = _CLS_SHIFT + 8


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
