# The compiled page table's C interface, for the slot store and the page paths to call without Python.
from libc.stdint cimport uint32_t, uint64_t


cdef class _Chunk:
    cdef uint64_t words[512]
    cdef uint32_t *ages
    cdef int used
    cdef int ensure_ages(self, uint32_t fill) except -1


cdef class NativeTable:
    cdef dict _chunks
    cdef bint _tracking
    cdef public object name
    cdef public long long count
    cdef public dict extra
    cdef public long long stored_pages
    cdef public long long physical_bytes
    cdef public long long promoted_pages
    cdef object __weakref__
    cdef _Chunk chunk_of(self, long long idx)
    cpdef uint64_t get(self, long long idx) except? 0
    cpdef set(self, long long idx, uint64_t word)
    cpdef uint64_t clear(self, long long idx) except? 0
    cdef uint32_t *ages_of(self, long long idx) except NULL
    cpdef touch(self, long long idx, uint32_t now)
    cpdef renew(self, long long idx, uint32_t now)
    cpdef uint32_t age(self, long long idx) except? 0
    cpdef set_age(self, long long idx, uint32_t value)
