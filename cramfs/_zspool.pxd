# The compiled pool's C interface, for the slot store and the page paths to call without Python.
# (final: no subclass exists, so every method call here is a direct C call.)
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
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


@cython.final
cdef class _Class:
    cdef int cid
    cdef int index
    cdef uint32_t size
    cdef uint32_t k
    cdef uint32_t per_zspage
    cdef _Runs runs
    cdef _Memory mem
    cdef vector[uint32_t] page
    cdef vector[uint16_t] used
    cdef vector[uint16_t] bump
    cdef vector[uint16_t] head
    cdef vector[uint8_t] group
    cdef vector[uint32_t] prev
    cdef vector[uint32_t] nxt
    cdef vector[uint32_t] free_ids
    cdef vector[uint64_t] alive           # a live bit per object: zs * per_zspage + idx
    cdef uint32_t group_head[11]          # one list head per fullness group below FULL
    cdef uint32_t mask
    cdef long long live
    cdef long long zspages
    cdef int fullness(self, uint32_t used)
    cdef void list_in(self, uint32_t zs, int group)
    cdef void unlist(self, uint32_t zs)
    cdef void regroup(self, uint32_t zs)
    cdef uint32_t head_of(self, bint fullest)
    cdef size_t offset(self, uint32_t zs, uint32_t idx)
    cdef uint32_t obj_malloc(self, uint32_t zs) except 0xFFFFFFFF
    cdef int obj_free(self, uint32_t zs, uint32_t idx) except -1
    cdef long long new_zspage(self) except -1
    cdef int free_zspage(self, uint32_t zs) except -1
    cdef bint has_room(self)
    cdef long long alloc(self) except -1
    cdef int release(self, uint32_t zs, uint32_t idx) except -1
    cdef bint is_live(self, uint32_t zs, uint32_t idx)
    cdef int valid(self, uint32_t zs, uint32_t idx, uint32_t size)
    cdef long long freeable(self)
    cdef uint32_t isolate(self, bint fullest)
    cdef long long compact(self, dict moves) except -1
    cdef size_t metadata_bytes(self)


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
