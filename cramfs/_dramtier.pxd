# The compiled DRAM tier's C interface, for the slot store and the page paths.
from libc.stdint cimport uint32_t, uintptr_t
from libcpp.vector cimport vector

cdef extern from "_tiermap.h":
    cppclass cram_tier_map:
        size_t size()
        void clear()
    long long cram_tier_find(const cram_tier_map &m, uintptr_t t, long long i)
    long long cram_tier_take(cram_tier_map &m, uintptr_t t, long long i)
    long long cram_tier_add(cram_tier_map &m, uintptr_t t, long long i,
                            uint32_t slot) except +


cdef class _Node:
    cdef _Node prev
    cdef _Node next
    cdef object table
    cdef long long idx
    cdef uint32_t slot          # its place in NativeTier._slots
    cdef object word            # Encoded's fields: same-filled word (None here)
    cdef object blob            # the compressed form, or the page itself
    cdef int algo               # compressor id, or DIRTY
    cdef bint huge
    cdef object kept            # the tuple Python code gave or was given, if any
    cdef tuple encoded(self)


cdef class NativeTier:
    cdef cram_tier_map _index
    cdef list _slots            # node by slot; None in a free slot
    cdef vector[uint32_t] _free
    cdef _Node _head            # least recently used
    cdef _Node _tail            # most recently used
    cdef void _unlink(self, _Node n)
    cdef void _append(self, _Node n)
    cdef _Node _find(self, table, long long idx)
    cdef _Node _place(self, table, long long idx)
    cdef _Node _take(self, table, long long idx)
    cdef int c_put(self, table, long long idx, bytes blob, int algo, bint huge) except -1
    cdef _Node c_peek(self, table, long long idx)
    cdef _Node c_get(self, table, long long idx)
    cdef int c_pop(self, table, long long idx) except -1
    cdef _Node c_oldest(self)
    cpdef put(self, key, data)
    cpdef get(self, key)
    cpdef peek(self, key)
    cpdef pop(self, key)
    cpdef oldest(self)
