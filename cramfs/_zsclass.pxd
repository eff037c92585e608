# One size class of the compiled pool, for _zspool.pyx to call without Python.
# (final: no subclass exists; a call from another module still goes through the
# type's method table, one indirect call.)
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libcpp.vector cimport vector

from ._zsmemory cimport _Memory, _Runs


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
