# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""The native engine's pool: `pool.ArenaPool` compiled, decision for decision.

Every store and free of a page walks the pool's bookkeeping (which class,
which zspage, which fullness group), and in Python that walk cost more than
lz4 did. This is the same algorithm over C arrays: the same size classes, the
same zspage chosen for each object, the same free-list order, the same
compaction moves and the same handle bits, so a device on either pool shows
the same numbers and the property tests can demand that they match.

Memory safety before speed: every handle that comes in is checked against
the pool's own state before it is turned into an address, every address is
checked against the mapping, and the arrays are C++ vectors grown by the
library. A bad handle raises ValueError (the adapter's EIO), never a fault.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libc.errno cimport errno
from libcpp.vector cimport vector
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from posix.mman cimport mmap, munmap, madvise, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close, ftruncate

import os

from .pool import (DEFAULT_CLASS_SIZE, POPULATE_BYTES, REUSE_CACHE_BYTES, WINDOW_BYTES,
                   ClassStats)
from .units import PAGE_SIZE as _PY_PAGE_SIZE
from .zsgeometry import DEFAULT_CHAIN_SIZE, ZS_SIZE_CLASSES, geometry

cdef extern from "<sys/mman.h>" nogil:
    void *mremap(void *old_address, size_t old_size, size_t new_size, int flags)
    int memfd_create(const char *name, unsigned int flags)
    int MREMAP_MAYMOVE
    int MFD_CLOEXEC

cdef extern from *:
    int __builtin_clz(unsigned int)
    int __builtin_ctz(unsigned int)

cdef extern from "<fcntl.h>" nogil:
    int fallocate(int fd, int mode, long offset, long length)
    int FALLOC_FL_KEEP_SIZE
    int FALLOC_FL_PUNCH_HOLE

DEF PAGE_SHIFT = 12
DEF PAGE = 4096
DEF MADV_POPULATE_WRITE = 23
DEF HUGE = 255
DEF SIZE_BITS = 13
DEF IDX_BITS = 10
DEF ZS_BITS = 26
DEF IDX_SHIFT = 13
DEF ZS_SHIFT = 23
DEF CLS_SHIFT = 49
DEF FULL = 11
DEF ISOLATED = 12
DEF LISTED = 0b11111111110
DEF NIL = 0xFFFFFFFF

cdef uint64_t SIZE_MASK = (1 << SIZE_BITS) - 1
cdef uint64_t IDX_MASK = (1 << IDX_BITS) - 1
cdef uint64_t ZS_MASK = (1 << ZS_BITS) - 1
cdef uint64_t HUGE_MASK = (1 << (ZS_BITS + IDX_BITS)) - 1
cdef uint64_t PAGE_LIMIT = (1 << 32) - 1
cdef size_t C_WINDOW = WINDOW_BYTES
cdef size_t C_REUSE = REUSE_CACHE_BYTES
cdef size_t C_POPULATE = POPULATE_BYTES

assert _PY_PAGE_SIZE == PAGE


cdef class _Memory:
    """One memfd, mapped whole and grown by doubling (mremap may move it: nothing
    keeps an address across a call that can grow it)."""


    def __cinit__(self):
        self.fd = memfd_create(b"cramfs-pool", MFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(errno, "memfd_create")
        self.base = NULL
        self.mapped = 0
        self.carved = 0
        self.cached = 0
        self.fail_in = 0

    def __dealloc__(self):
        self.release()

    cdef void release(self):
        if self.base != NULL:
            munmap(self.base, self.mapped)
            self.base = NULL
            self.mapped = 0
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    cdef int injected(self) except -1:
        """Tests: fail the fail_in-th memory operation from when it was set."""
        if self.fail_in > 0:
            self.fail_in -= 1
            if self.fail_in == 0:
                raise OSError(12, "injected failure")        # ENOMEM
        return 0

    cdef long long window(self) except -1:
        """Carve a new window; return its offset in bytes. A failure carves nothing."""
        cdef size_t offset = self.carved
        cdef size_t carved = self.carved + C_WINDOW
        cdef size_t size
        cdef void *moved
        if self.fd < 0:
            raise ValueError("the pool is closed")
        self.injected()
        if self.base == NULL:
            if ftruncate(self.fd, C_WINDOW) != 0:
                raise OSError(errno, "ftruncate on the pool memfd")
            moved = mmap(NULL, C_WINDOW, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
            if moved == MAP_FAILED:
                raise OSError(errno, "mmap of the pool memfd")
            self.base = <unsigned char *>moved
            self.mapped = C_WINDOW
        elif carved > self.mapped:
            size = max(carved, 2 * self.mapped)
            if ftruncate(self.fd, size) != 0:
                raise OSError(errno, "ftruncate on the pool memfd")
            moved = mremap(self.base, self.mapped, size, MREMAP_MAYMOVE)
            if moved == MAP_FAILED:
                raise OSError(errno, "mremap of the pool memfd")
            self.base = <unsigned char *>moved
            self.mapped = size
        self.carved = carved
        return offset

    cdef void populate(self, size_t offset, size_t length):
        # before Linux 5.14 this fails, and pages simply fault in one by one
        if offset + length <= self.mapped:
            madvise(self.base + offset, length, MADV_POPULATE_WRITE)

    cdef int punch(self, size_t offset, size_t length) except -1:
        self.injected()
        if fallocate(self.fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, offset, length) != 0:
            raise OSError(errno, "fallocate(PUNCH_HOLE) on the pool memfd")
        return 0

    cdef unsigned char *at(self, size_t offset, size_t length) except NULL:
        """The address of [offset, offset + length), checked against the mapping."""
        if self.base == NULL or offset + length > self.mapped or offset + length < offset:
            raise ValueError(f"pool offset {offset}+{length} outside the mapping")
        return self.base + offset


cdef class _Runs:
    """Runs of k contiguous pages for one zspage length (pool._Runs)."""


    def __cinit__(self, _Memory mem, uint32_t k):
        self.mem = mem
        self.k = k
        self.span = k * PAGE
        self.next = self.end = self.populated_to = 0

    cdef long long take(self) except -1:
        cdef uint32_t page
        cdef size_t start
        if self.cached.size():
            page = self.cached.back()
            self.cached.pop_back()
            self.mem.cached -= self.span
            return page
        if self.free.size():
            page = self.free.back()
            self.free.pop_back()
            return page
        if self.next + self.span > self.end:
            self.next = self.populated_to = <size_t>self.mem.window()
            self.end = self.next + C_WINDOW // self.span * self.span
        start = self.next
        self.next += self.span
        if start >= self.populated_to:
            self.populated_to = min(start + max(C_POPULATE, self.span), self.end)
            self.mem.populate(start, self.populated_to - start)
        if (start >> PAGE_SHIFT) > PAGE_LIMIT:
            raise MemoryError("pool memfd exhausted")
        return start >> PAGE_SHIFT

    cdef int give_back(self, uint32_t page) except -1:
        """pool._Runs.give_back: never fails; a run whose hole cannot be punched stays
        resident in the reuse cache, so the caller's free is never half undone."""
        if self.mem.cached + self.span > C_REUSE:
            try:
                self.mem.punch(<size_t>page << PAGE_SHIFT, self.span)
                self.free.push_back(page)
                return 0
            except OSError:
                pass
        self.cached.push_back(page)
        self.mem.cached += self.span
        return 0

    cdef int flush(self) except -1:
        """pool._Runs.flush: best effort, never fails (compaction calls it after
        moving objects); a run that cannot be punched stays cached."""
        cdef vector[uint32_t] kept
        cdef uint32_t page
        for page in self.cached:
            try:
                self.mem.punch(<size_t>page << PAGE_SHIFT, self.span)
            except OSError:
                kept.push_back(page)
                continue
            self.free.push_back(page)
            self.mem.cached -= self.span
        self.cached.swap(kept)
        if self.populated_to > self.next:
            try:
                self.mem.punch(self.next, self.populated_to - self.next)
                self.populated_to = self.next
            except OSError:
                pass
        return 0

    cdef size_t metadata_bytes(self):
        return 4 * (self.free.size() + self.cached.size())


cdef class _Class:
    """One size class (pool._SizeClass): zspages as parallel vectors by zspage id, and
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
        """__zs_compact(), as pool._SizeClass.compact."""
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
        # the live bits as bits (pool._SizeClass.metadata_bytes counts them so too)
        return self.page.size() * 11 + self.free_ids.size() * 4 + (
            self.page.size() * self.per_zspage + 7) // 8


cdef class NativePool:
    """pool.ArenaPool's interface and behaviour, compiled."""


    def __init__(self, huge_threshold=None, int chain_size=DEFAULT_CHAIN_SIZE):
        geo = geometry(chain_size)
        self.geometry = geo
        self.huge_threshold = geo.huge_class_size if huge_threshold is None else huge_threshold
        if not 1 <= self.huge_threshold <= geo.huge_class_size:
            raise ValueError(f"huge_threshold must be 1-{geo.huge_class_size} with "
                             f"chain_size {chain_size}")
        self._mem = _Memory()
        self._runs = {}
        top = geo.class_of(self.huge_threshold - 1).size if self.huge_threshold > 1 else 0
        specs = [c for c in geo.classes if c.size <= top]
        self._classes = [_Class(cid, spec, self._runs_of(spec.pages_per_zspage))
                         for cid, spec in enumerate(specs)]
        assert len(self._classes) < HUGE
        by_size = {c.size: cid for cid, c in enumerate(specs)}
        self._huge_runs = self._runs_of(1)
        self._cid_of_size.assign(PAGE + 1, -1)
        for n in range(self.huge_threshold):
            # (with huge_threshold 1 there are no classes at all: everything is huge)
            self._cid_of_size[n] = by_size.get(geo.class_of(n).size, -1)
        self.stored_bytes = self.used_bytes = self.huge_pages = self.pages_compacted = 0

    def _runs_of(self, k):
        if k not in self._runs:
            self._runs[k] = _Runs(self._mem, k)
        return self._runs[k]

    cdef int cid_of(self, Py_ssize_t size) except -2:
        if size < 0 or size > PAGE:
            raise ValueError(f"object size {size} outside 0-{PAGE}")
        return self._cid_of_size[size]

    cdef size_t locate(self, uint64_t handle) except? 0:
        """The byte offset of a stored object, after checking that the handle names one."""
        cdef uint64_t cid = handle >> CLS_SHIFT
        cdef uint32_t size = handle & SIZE_MASK
        cdef uint64_t page
        cdef uint32_t zs, idx
        cdef _Class c
        if cid == HUGE:
            page = handle >> IDX_SHIFT & HUGE_MASK
            if size > PAGE or (page + 1) << PAGE_SHIFT > self._mem.carved \
                    or not self.huge_live(page):
                raise ValueError(f"bad pool handle {handle:#x}: no live object")
            return page << PAGE_SHIFT
        if cid >= <uint64_t>len(self._classes):
            raise ValueError(f"bad pool handle {handle:#x}")
        c = <_Class>self._classes[cid]
        zs = handle >> ZS_SHIFT & ZS_MASK
        idx = handle >> IDX_SHIFT & IDX_MASK
        if not c.valid(zs, idx, size):
            raise ValueError(f"bad pool handle {handle:#x}: no live object")
        return c.offset(zs, idx)

    cdef bint huge_live(self, uint64_t page):
        return (page >> 6) < self._huge_alive.size() and (
            self._huge_alive[page >> 6] >> (page & 63)) & 1

    cdef void set_huge(self, uint64_t page, bint live):
        if (page >> 6) >= self._huge_alive.size():
            self._huge_alive.resize((page >> 6) + 1, 0)
        if live:
            self._huge_alive[page >> 6] |= (<uint64_t>1) << (page & 63)
        else:
            self._huge_alive[page >> 6] &= ~((<uint64_t>1) << (page & 63))

    def inject_failure(self, int n):
        """Tests: the n-th next memory operation (a window carved, a hole punched)
        fails with ENOMEM; 0 clears it."""
        self._mem.fail_in = n

    # ------------------------------------------------------------ Pool

    cpdef int charge(self, Py_ssize_t size) except -1:
        cdef int cid = self.cid_of(size)
        return PAGE if cid < 0 else (<_Class>self._classes[cid]).size

    cpdef int charge_of(self, uint64_t handle) except -1:
        return self.charge(handle & SIZE_MASK)

    cpdef long long cost(self, Py_ssize_t size) except -1:
        cdef int cid = self.cid_of(size)
        cdef _Class c
        if cid < 0:
            return PAGE
        c = <_Class>self._classes[cid]
        return 0 if c.has_room() else c.k * PAGE

    cpdef uint64_t put(self, bytes blob) except? 0:
        cdef Py_ssize_t size
        cdef int cid
        if blob is None:
            raise TypeError("put() needs bytes, not None")
        size = PyBytes_GET_SIZE(blob)
        cid = self.cid_of(size)
        cdef _Class c
        cdef long long where
        cdef uint64_t page
        cdef size_t off
        cdef bint grows
        if cid < 0:
            page = <uint64_t>self._huge_runs.take()
            memcpy(self._mem.at(page << PAGE_SHIFT, size), PyBytes_AS_STRING(blob), size)
            self.set_huge(page, True)
            self.used_bytes += PAGE
            self.stored_bytes += size
            self.huge_pages += 1
            return <uint64_t>HUGE << CLS_SHIFT | page << IDX_SHIFT | <uint64_t>size
        c = <_Class>self._classes[cid]
        grows = not c.has_room()
        where = c.alloc()                 # may fail (no memory): nothing counted yet
        if grows:
            self.used_bytes += c.k * PAGE
        off = c.offset(where >> 16, where & 0xFFFF)
        memcpy(self._mem.at(off, size), PyBytes_AS_STRING(blob), size)
        self.stored_bytes += size
        return (<uint64_t>cid << CLS_SHIFT | <uint64_t>(where >> 16) << ZS_SHIFT
                | <uint64_t>(where & 0xFFFF) << IDX_SHIFT | <uint64_t>size)

    cpdef bytes get(self, uint64_t handle):
        cdef size_t off = self.locate(handle)
        cdef size_t size = handle & SIZE_MASK
        return PyBytes_FromStringAndSize(<char *>self._mem.at(off, size), size)

    cdef const char *view(self, uint64_t handle, Py_ssize_t *size) except NULL:
        """get() without the copy, for a caller that decodes the object at once: the
        address stays valid only until the next call that can grow the pool."""
        cdef size_t off = self.locate(handle)
        size[0] = handle & SIZE_MASK
        return <const char *>self._mem.at(off, size[0])

    cpdef int free(self, uint64_t handle) except -1:
        cdef uint64_t cid = handle >> CLS_SHIFT
        cdef _Class c
        self.locate(handle)               # ValueError, nothing changed, unless live
        self.stored_bytes -= handle & SIZE_MASK
        if cid == HUGE:
            self.set_huge(handle >> IDX_SHIFT & HUGE_MASK, False)
            self._huge_runs.give_back(handle >> IDX_SHIFT & HUGE_MASK)
            self.used_bytes -= PAGE
            self.huge_pages -= 1
            return PAGE
        c = <_Class>self._classes[cid]
        if c.release(handle >> ZS_SHIFT & ZS_MASK, handle >> IDX_SHIFT & IDX_MASK):
            self.used_bytes -= c.k * PAGE
        return c.size

    def __len__(self):
        return sum((<_Class>c).live for c in self._classes) + self.huge_pages

    def extent(self, uint64_t handle):
        """[start, stop) of an object in the pool, for checking that none overlap."""
        off = self.locate(handle)
        return off, off + (handle & SIZE_MASK)

    # ------------------------------------------------------------ compaction and stats

    def compact(self):
        """zs_compact(), as ArenaPool.compact: {old handle: new handle}, size bits off."""
        cdef dict moves = {}
        cdef _Class c
        cdef long long freed
        cdef _Runs runs
        if self._mem.base != NULL:
            for c in reversed(self._classes):
                if c.freeable():
                    freed = c.compact(moves)
                    self.used_bytes -= freed * PAGE
                    self.pages_compacted += freed
        for runs in self._runs.values():
            runs.flush()
        return moves

    def class_stats(self):
        cdef _Class c
        out = [ClassStats(c.index, c.size, c.k, c.zspages * c.per_zspage, c.live,
                          c.zspages * c.k, c.freeable())
               for c in self._classes if c.zspages]
        if self.huge_pages:
            out.append(ClassStats(ZS_SIZE_CLASSES - 1, PAGE, 1, self.huge_pages,
                                  self.huge_pages, self.huge_pages, 0))
        return out

    @property
    def metadata_bytes(self):
        cdef _Class c
        cdef _Runs r
        total = 0
        for c in self._classes:
            total += c.metadata_bytes()
        for r in self._runs.values():
            total += r.metadata_bytes()
        return total + self._huge_alive.size() * 8

    def close(self):
        self._mem.release()


cdef class NativeClassPool:
    """pool.ClassPool compiled: the host-memory side of fallback, objects kept whole as
    bytes, each charged its size class. A device under pressure stores, reads and
    frees a fallback page for every fault, and the compiled device core calls
    these without Python."""

    def __init__(self):
        self._objects = {}
        self._next = 1
        self.used_bytes = self.stored_bytes = 0
        self._class_size.assign(PAGE + 1, 0)
        for n, size in enumerate(DEFAULT_CLASS_SIZE):
            self._class_size[n] = size

    cpdef int cost(self, Py_ssize_t size) except -1:
        return self.charge(size)

    cpdef int charge(self, Py_ssize_t size) except -1:
        if size < 0:
            raise ValueError(f"object size {size}")
        return self._class_size[min(size, <Py_ssize_t>PAGE)]

    cpdef int charge_of(self, long long handle) except -1:
        return self.charge(PyBytes_GET_SIZE(<bytes>self._objects[handle]))

    cpdef long long put(self, bytes blob) except -1:
        cdef long long handle = self._next
        if blob is None:
            raise TypeError("put() needs bytes, not None")
        self._next += 1
        self._objects[handle] = blob
        self.used_bytes += self.charge(PyBytes_GET_SIZE(blob))
        self.stored_bytes += PyBytes_GET_SIZE(blob)
        return handle

    cpdef bytes get(self, long long handle):
        return self._objects[handle]

    cpdef int free(self, long long handle) except -1:
        cdef bytes blob = self._objects.pop(handle)
        cdef int charge = self.charge(PyBytes_GET_SIZE(blob))
        self.used_bytes -= charge
        self.stored_bytes -= PyBytes_GET_SIZE(blob)
        return charge

    def __len__(self):
        return len(self._objects)

    def compact(self):
        return {}

    def close(self):
        self._objects.clear()


def _constants():
    """The handle's layout as this module was compiled with it (engine.py checks it against
    pool.py at import)."""
    return {"PAGE": PAGE, "PAGE_SHIFT": PAGE_SHIFT, "HUGE": HUGE, "SIZE_BITS": SIZE_BITS,
            "IDX_BITS": IDX_BITS, "ZS_BITS": ZS_BITS, "IDX_SHIFT": IDX_SHIFT,
            "ZS_SHIFT": ZS_SHIFT, "CLS_SHIFT": CLS_SHIFT}
