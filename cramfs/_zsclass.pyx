# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""One size class of the compiled pool: `zsclass._SizeClass` compiled.

Split from _zspool.pyx, as zsclass.py is from pool.py, so that the pool there
only routes an object to its class and counts, and the bookkeeping that picks
each object's place (the part that must match zsmalloc, and the Python
reference, decision for decision: the same zspage, free-list order and
compaction moves) is read in one place. An object is checked live against its
class's bits before it is freed or moved, and its memory is reached only
through `_Memory.at`, checked against the mapping.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libcpp.vector cimport vector

cdef extern from *:
    int __builtin_clz(unsigned int)
    int __builtin_ctz(unsigned int)

include "_zslayout.pxi"

DEF FULL = 11
DEF ISOLATED = 12
DEF LISTED = 0b11111111110
DEF NIL = 0xFFFFFFFF

cdef uint64_t ZS_MASK = (1 << ZS_BITS) - 1


cdef class _Class:
    """One size class (zsclass._SizeClass): zspages as parallel vectors by zspage id, and
    the fullness groups as intrusive doubly linked lists whose head is the zspage
    listed last, the one zsmalloc's find_get_zspage() takes."""


    def __cinit__(self, int cid, spec, _Runs runs):
        cdef int g
        self.cid = cid
        self.index = spec.index
        self.size = spec.size
        self.k = spec.pages_per_zspage
        self.per_zspage = spec.objs_per_zspage
        self.runs = runs
        self.mem = runs.mem
        for g in range(FULL):
            self.group_head[g] = NIL
        self.mask = 0
        self.live = 0
        self.zspages = 0

    # ------------------------------------------------------------ fullness lists

    cdef int fullness(self, uint32_t used):
        if used == self.per_zspage:
            return FULL
        return 100 * used // self.per_zspage // 10 + 1 if used else 0

    cdef void list_in(self, uint32_t zs, int group):
        cdef uint32_t first
        self.group[zs] = group
        if 0 < group < FULL:
            first = self.group_head[group]
            self.prev[zs] = NIL
            self.nxt[zs] = first
            if first != NIL:
                self.prev[first] = zs
            self.group_head[group] = zs
            self.mask |= (<uint32_t>1) << group

    cdef void unlist(self, uint32_t zs):
        cdef int group = self.group[zs]
        cdef uint32_t p, n
        if 0 < group < FULL:
            p = self.prev[zs]
            n = self.nxt[zs]
            if p != NIL:
                self.nxt[p] = n
            else:
                self.group_head[group] = n
            if n != NIL:
                self.prev[n] = p
            if self.group_head[group] == NIL:
                self.mask &= ~((<uint32_t>1) << group)

    cdef void regroup(self, uint32_t zs):
        cdef int group = self.fullness(self.used[zs])
        if group != self.group[zs]:
            self.unlist(zs)
            self.list_in(zs, group)

    cdef uint32_t head_of(self, bint fullest):
        cdef uint32_t m = self.mask & LISTED
        cdef int group = 0
        if not m:
            return NIL
        if fullest:
            group = 31 - __builtin_clz(m)
        else:
            group = __builtin_ctz(m)
        return self.group_head[group]

    # ------------------------------------------------------------ objects

    cdef size_t offset(self, uint32_t zs, uint32_t idx):
        return (<size_t>self.page[zs] << PAGE_SHIFT) + <size_t>idx * self.size

    cdef uint32_t obj_malloc(self, uint32_t zs) except NIL:
        cdef uint32_t link = self.head[zs]
        cdef uint32_t idx
        cdef unsigned char *p
        if link:
            idx = link - 1
            p = self.mem.at(self.offset(zs, idx), 2)
            self.head[zs] = p[0] | p[1] << 8
        else:
            idx = self.bump[zs]
            if idx >= self.per_zspage:
                raise ValueError(f"size class {self.size}: zspage {zs} overfilled")
            self.bump[zs] = idx + 1
        cdef uint64_t bit = <uint64_t>zs * self.per_zspage + idx
        self.alive[bit >> 6] |= (<uint64_t>1) << (bit & 63)
        self.used[zs] += 1
        self.live += 1
        return idx

    cdef bint is_live(self, uint32_t zs, uint32_t idx):
        cdef uint64_t bit = <uint64_t>zs * self.per_zspage + idx
        return (idx < self.per_zspage and (bit >> 6) < self.alive.size()
                and (self.alive[bit >> 6] >> (bit & 63)) & 1)

    cdef int obj_free(self, uint32_t zs, uint32_t idx) except -1:
        """Free a live object; ValueError, nothing changed, for one that is not live:
        zsmalloc's OBJ_ALLOCATED_TAG, so a second free is caught, never absorbed
        (it would put the object on the free list twice: two stores, one slot)."""
        if not self.is_live(zs, idx):
            raise ValueError(f"size class {self.size}: object {zs}:{idx} is not live "
                             "(freed twice, or a stale handle)")
        cdef uint32_t link = self.head[zs]
        cdef unsigned char *p = self.mem.at(self.offset(zs, idx), 2)
        cdef uint64_t bit = <uint64_t>zs * self.per_zspage + idx
        self.alive[bit >> 6] &= ~((<uint64_t>1) << (bit & 63))
        self.live -= 1
        self.used[zs] -= 1
        # zsmalloc's trick: the free list lives in the free objects themselves
        p[0] = link & 0xFF
        p[1] = link >> 8
        self.head[zs] = idx + 1
        return 0

    cdef long long new_zspage(self) except -1:
        cdef uint32_t page
        cdef uint32_t zs
        if not self.free_ids.size() and self.page.size() > ZS_MASK:   # before a run is taken
            raise MemoryError(f"size class {self.size}: out of zspage ids")
        page = <uint32_t>self.runs.take()
        if self.free_ids.size():
            zs = self.free_ids.back()
            self.free_ids.pop_back()
            self.page[zs] = page
            self.used[zs] = 0
            self.bump[zs] = 0
            self.head[zs] = 0
            self.group[zs] = 0
        else:
            zs = self.page.size()
            # the zspage's live bits, all clear (a reused id's are clear: all freed)
            self.alive.resize(((<size_t>zs + 1) * self.per_zspage + 63) >> 6, 0)
            self.page.push_back(page)
            self.used.push_back(0)
            self.bump.push_back(0)
            self.head.push_back(0)
            self.group.push_back(0)
            self.prev.push_back(NIL)
            self.nxt.push_back(NIL)
        self.zspages += 1
        return zs

    cdef int free_zspage(self, uint32_t zs) except -1:
        self.runs.give_back(self.page[zs])
        self.group[zs] = 0
        self.free_ids.push_back(zs)
        self.zspages -= 1
        return 0

    cdef bint has_room(self):
        return (self.mask & LISTED) != 0

    cdef long long alloc(self) except -1:
        """Reserve an object; return zspage id << 16 | object index."""
        cdef uint32_t zs = self.head_of(True)
        cdef uint32_t idx
        if zs == NIL:
            zs = <uint32_t>self.new_zspage()
        idx = self.obj_malloc(zs)
        self.regroup(zs)
        return <long long>zs << 16 | idx

    cdef int release(self, uint32_t zs, uint32_t idx) except -1:
        """Free an object; 1 if its zspage was emptied and given back."""
        self.obj_free(zs, idx)
        if not self.used[zs]:
            self.unlist(zs)
            self.free_zspage(zs)
            return 1
        self.regroup(zs)
        return 0

    cdef int valid(self, uint32_t zs, uint32_t idx, uint32_t size):
        return (zs < self.page.size() and self.used[zs] > 0 and idx < self.bump[zs]
                and size <= self.size and self.is_live(zs, idx))

    # ------------------------------------------------------------ compaction

    cdef long long freeable(self):
        cdef long long wasted = self.zspages * self.per_zspage - self.live
        return wasted // self.per_zspage * self.k

    cdef uint32_t isolate(self, bint fullest):
        cdef uint32_t zs = self.head_of(fullest)
        if zs != NIL:
            self.unlist(zs)
            self.group[zs] = ISOLATED
        return zs

    cdef long long compact(self, dict moves) except -1:
        """__zs_compact(), as zsclass._SizeClass.compact."""
        cdef long long freed = 0
        cdef uint32_t dst = NIL
        cdef uint32_t src, idx, nidx, link, n
        cdef vector[uint8_t] is_free
        cdef unsigned char *p
        cdef unsigned char *q
        cdef uint64_t key
        while self.freeable():
            if dst == NIL:
                dst = self.isolate(True)
                if dst == NIL:
                    break
            src = self.isolate(False)
            if src == NIL:
                break
            # the live objects of src, in address order (its free list marks the rest)
            n = self.bump[src]
            is_free.assign(n, 0)
            link = self.head[src]
            while link:
                if link - 1 >= n:
                    raise ValueError(f"size class {self.size}: free list out of range")
                is_free[link - 1] = 1
                p = self.mem.at(self.offset(src, link - 1), 2)
                link = p[0] | p[1] << 8
            for idx in range(n):
                if is_free[idx]:
                    continue
                nidx = self.obj_malloc(dst)
                p = self.mem.at(self.offset(src, idx), self.size)
                q = self.mem.at(self.offset(dst, nidx), self.size)
                memcpy(q, p, self.size)
                key = <uint64_t>self.cid << CLS_SHIFT | <uint64_t>src << ZS_SHIFT | \
                    <uint64_t>idx << IDX_SHIFT
                moves[key] = <uint64_t>self.cid << CLS_SHIFT | <uint64_t>dst << ZS_SHIFT | \
                    <uint64_t>nidx << IDX_SHIFT
                self.obj_free(src, idx)
                if self.used[dst] == self.per_zspage or not self.used[src]:
                    break
            if self.used[src]:
                self.list_in(src, self.fullness(self.used[src]))
            else:
                self.free_zspage(src)
                freed += self.k
            if self.used[dst] == self.per_zspage:
                self.list_in(dst, FULL)
                dst = NIL
        if dst != NIL:
            self.list_in(dst, self.fullness(self.used[dst]))
        return freed

    cdef size_t metadata_bytes(self):
        # the live bits as bits (zsclass._SizeClass.metadata_bytes counts them so too)
        return self.page.size() * 11 + self.free_ids.size() * 4 + (
            self.page.size() * self.per_zspage + 7) // 8
