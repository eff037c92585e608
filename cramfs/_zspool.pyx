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

It is three modules, as pool.py is: this one is the pool (`NativePool`, which
routes an object to its class or a page of its own and keeps the counts, and
the fallback's `NativeClassPool`), _zsclass.pyx is one size class, and
_zsmemory.pyx is the memory. The layout they share is _zslayout.pxi.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy
from libcpp.vector cimport vector
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from ._zsclass cimport _Class

from .pool import DEFAULT_CLASS_SIZE, ClassStats
from .units import PAGE_SIZE as _PY_PAGE_SIZE
from .zsgeometry import DEFAULT_CHAIN_SIZE, ZS_SIZE_CLASSES, geometry

include "_zslayout.pxi"

cdef uint64_t SIZE_MASK = (1 << SIZE_BITS) - 1
cdef uint64_t IDX_MASK = (1 << IDX_BITS) - 1
cdef uint64_t ZS_MASK = (1 << ZS_BITS) - 1
cdef uint64_t HUGE_MASK = (1 << (ZS_BITS + IDX_BITS)) - 1

assert _PY_PAGE_SIZE == PAGE


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
