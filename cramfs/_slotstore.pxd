# The compiled slot store's C interface, for the compiled page paths.
from libc.stdint cimport uint64_t

from ._dramtier cimport NativeTier
from ._pagetable cimport NativeTable
from ._zspool cimport NativeClassPool, NativePool


cdef class NativeSlotStore:
    cdef readonly NativePool pool
    cdef readonly NativeClassPool fallback
    cdef NativeTier ntier                 # the DRAM tier, for the paths' C calls
    cdef public object words
    cdef public object counters
    cdef object _monotonic
    cdef object _now
    cdef long long _pages[8]              # by kind: every value of a word's 3 kind bits
    cdef public long long huge_pages
    cdef public long long charged
    cdef public long long extra
    cdef public long long injected_poison
    cdef public long long mem_used_max
    cdef public long long pending_bytes
    cdef public long long release_delay
    cdef object deferred                  # release_delay's frees: deque of (due, handle)
    cdef public bint tracking
    cdef dict _marks
    cdef public object free_block
    cdef public object hook
    cdef public object cause

    cdef long long c_used(self)
    cdef uint64_t c_clear(self, NativeTable table, long long idx) except? 0
    cdef int c_install(self, NativeTable table, long long idx, uint64_t old, uint64_t word,
                       long long charge, long long extra) except -1
    cdef uint64_t c_store_device(self, NativeTable table, long long idx, bytes blob, int algo,
                                 bint huge) except? 0
    cdef uint64_t c_store_inline(self, NativeTable table, long long idx,
                                 uint64_t handle) except? 0
    cdef uint64_t c_store_fallback(self, NativeTable table, long long idx, bytes blob,
                                   int algo, bint huge) except? 0
    cdef uint64_t c_promote(self, NativeTable table, long long idx, bytes blob, int algo,
                            bint huge) except? 0
