# The compiled pool's memory layer, for _zsclass.pyx and _zspool.pyx to call without
# Python. (final: no subclass exists; a call from another module still goes through
# the type's method table, one indirect call.)
cimport cython
from libc.stdint cimport uint32_t
from libcpp.vector cimport vector


@cython.final
cdef class _Memory:
    cdef int fd
    cdef unsigned char *base
    cdef size_t mapped
    cdef size_t carved
    cdef size_t cached                    # bytes of emptied runs kept resident
    cdef int fail_in                      # tests: the n-th next window or punch fails
    cdef void release(self)
    cdef int injected(self) except -1
    cdef long long window(self) except -1
    cdef void populate(self, size_t offset, size_t length)
    cdef int punch(self, size_t offset, size_t length) except -1
    cdef unsigned char *at(self, size_t offset, size_t length) except NULL


@cython.final
cdef class _Runs:
    cdef _Memory mem
    cdef uint32_t k
    cdef size_t span
    cdef vector[uint32_t] free
    cdef vector[uint32_t] cached
    cdef size_t next, end, populated_to
    cdef long long take(self) except -1
    cdef int give_back(self, uint32_t page) except -1
    cdef int flush(self) except -1
    cdef size_t metadata_bytes(self)
