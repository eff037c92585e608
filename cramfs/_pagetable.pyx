# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
"""The native engine's page table: `pagetable.PageTable` compiled, same interface.

Every page transition reads and writes a file's table a few times; in Python
each of those is a method call, a dict lookup and an array index. Here a
chunk is a C array of 512 words inside one small object, so a lookup is one
dict probe and an index, with no Python frame. The layout, the word format and
the access ages (allocated only once idle tracking is used) are the Python
table's; tests/test_engine.py holds the two to the same results.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free

DEF CHUNK_BITS = 9
DEF CHUNK = 512
DEF LOW = 511
DEF TRIED = 0x80000000


cdef class _Chunk:
    """512 slots: their words, how many are not holes, and their access ages (or NULL).
    (Fields and C methods are declared in _pagetable.pxd.)"""

    def __cinit__(self):
        self.ages = NULL
        self.used = 0
        for i in range(CHUNK):
            self.words[i] = 0

    def __dealloc__(self):
        free(self.ages)

    cdef int ensure_ages(self, uint32_t fill) except -1:
        cdef int i
        if self.ages == NULL:
            self.ages = <uint32_t *>calloc(CHUNK, sizeof(uint32_t))
            if self.ages == NULL:
                raise MemoryError()
            if fill:
                for i in range(CHUNK):
                    self.ages[i] = fill
        return 0


cdef class NativeTable:
    """A file's slots and its share of the device (kept by the slot store, device/slots.py)."""

    def __init__(self, name=""):
        self.name = name
        self._chunks = {}
        self._tracking = False
        self.count = 0
        self.extra = {}
        self.stored_pages = 0
        self.physical_bytes = 0
        self.promoted_pages = 0

    cdef _Chunk chunk_of(self, long long idx):
        if idx < 0:
            raise IndexError(f"page index {idx} is negative")
        return <_Chunk>self._chunks.get(idx >> CHUNK_BITS)

    cpdef uint64_t get(self, long long idx) except? 0:
        cdef _Chunk c = self.chunk_of(idx)
        return c.words[idx & LOW] if c is not None else 0

    cpdef set(self, long long idx, uint64_t word):
        cdef _Chunk c = self.chunk_of(idx)
        cdef int i = idx & LOW
        if c is None:
            c = _Chunk()
            self._chunks[idx >> CHUNK_BITS] = c
        if not c.words[i]:
            c.used += 1
            self.count += 1
        c.words[i] = word

    cpdef uint64_t clear(self, long long idx) except? 0:
        """Make the slot a hole; return the word it held (0 if it was one)."""
        cdef _Chunk c = self.chunk_of(idx)
        cdef int i = idx & LOW
        cdef uint64_t word
        if c is None:
            return 0
        word = c.words[i]
        if word:
            c.words[i] = 0
            self.count -= 1
            c.used -= 1
            if not c.used:
                del self._chunks[idx >> CHUNK_BITS]
        return word

    def items(self):
        """(index, word) of every non-hole slot, a snapshot safe to mutate under."""
        cdef _Chunk c
        cdef long long base
        cdef int i
        out = []
        for key in sorted(self._chunks):
            c = <_Chunk>self._chunks[key]
            base = <long long>key << CHUNK_BITS
            for i in range(CHUNK):
                if c.words[i]:
                    out.append((base + i, c.words[i]))
        return iter(out)

    def indices_in(self, long long first, long long stop):
        """Non-hole indices in [first, stop), visiting only allocated chunks."""
        cdef _Chunk c
        cdef long long base, lo, hi, i
        out = []
        for key in sorted(self._chunks):
            base = <long long>key << CHUNK_BITS
            if base + CHUNK <= first or base >= stop:
                continue
            c = <_Chunk>self._chunks[key]
            lo = max(first - base, 0)
            hi = min(stop - base, CHUNK)
            for i in range(lo, hi):
                if c.words[i]:
                    out.append(base + i)
        return out

    # ------------------------------------------------------------ access ages

    @property
    def tracking(self):
        return self._tracking

    def track(self, uint32_t now):
        """Start tracking: every page present counts as accessed `now`."""
        cdef _Chunk c
        if not self._tracking:
            for c in self._chunks.values():
                c.ensure_ages(now)
            self._tracking = True

    cdef uint32_t *ages_of(self, long long idx) except NULL:
        cdef _Chunk c = self.chunk_of(idx)
        if c is None:
            # as the Python table, ages may be kept for a chunk with no page yet
            c = _Chunk()
            self._chunks[idx >> CHUNK_BITS] = c
        c.ensure_ages(0)
        return c.ages

    cpdef touch(self, long long idx, uint32_t now):
        """An access: not idle any more (a recompression mark stays)."""
        cdef uint32_t *ages = self.ages_of(idx)
        ages[idx & LOW] = now | ages[idx & LOW] & TRIED

    cpdef renew(self, long long idx, uint32_t now):
        """A new page in the slot: accessed now, never tried."""
        self.ages_of(idx)[idx & LOW] = now

    cpdef uint32_t age(self, long long idx) except? 0:
        """The raw age word: 0 idle; TRIED set if recompression gained nothing."""
        cdef _Chunk c = self.chunk_of(idx)
        if c is None or c.ages == NULL:
            return 0
        return c.ages[idx & LOW]

    cpdef set_age(self, long long idx, uint32_t value):
        self.ages_of(idx)[idx & LOW] = value

    @property
    def metadata_bytes(self):
        cdef _Chunk c
        ages = 0
        for c in self._chunks.values():
            if c.ages != NULL:
                ages += 4 * CHUNK
        return len(self._chunks) * 8 * CHUNK + ages
