# The compiled pool's C interface, for the slot store and the page paths to call without
# Python. (final: no subclass exists, so a call from this module is a direct C call; from
# another, _slotstore.pyx or _devpaths.pyx, one indirect call through the type's method table.)
cimport cython
from libc.stdint cimport uint64_t
from libcpp.vector cimport vector

from ._zsmemory cimport _Memory, _Runs


@cython.final
cdef class NativePool:
    cdef readonly object geometry
    cdef readonly int huge_threshold
    cdef readonly long long stored_bytes
    cdef readonly long long used_bytes
    cdef readonly long long huge_pages
    cdef readonly long long pages_compacted
    cdef _Memory _mem
    cdef dict _runs
    cdef list _classes
    cdef _Runs _huge_runs
    cdef vector[uint64_t] _huge_alive     # a live bit per page number
    cdef bint huge_live(self, uint64_t page)
    cdef void set_huge(self, uint64_t page, bint live)
    cdef vector[int] _cid_of_size         # object length -> class id, -1: huge
    cdef int cid_of(self, Py_ssize_t size) except -2
    cdef size_t locate(self, uint64_t handle) except? 0
    cdef const char *view(self, uint64_t handle, Py_ssize_t *size) except NULL
    cpdef int charge(self, Py_ssize_t size) except -1
    cpdef int charge_of(self, uint64_t handle) except -1
    cpdef long long cost(self, Py_ssize_t size) except -1
    cpdef uint64_t put(self, bytes blob) except? 0
    cpdef bytes get(self, uint64_t handle)
    cpdef int free(self, uint64_t handle) except -1


@cython.final
cdef class NativeClassPool:
    cdef dict _objects
    cdef long long _next
    cdef readonly long long used_bytes
    cdef readonly long long stored_bytes
    cdef vector[int] _class_size          # object length -> its class's size
    cpdef int cost(self, Py_ssize_t size) except -1
    cpdef int charge(self, Py_ssize_t size) except -1
    cpdef int charge_of(self, long long handle) except -1
    cpdef long long put(self, bytes blob) except -1
    cpdef bytes get(self, long long handle)
    cpdef int free(self, long long handle) except -1
