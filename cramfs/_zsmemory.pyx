# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""The compiled pool's memory: `zsmemory._Memory` and `zsmemory._Runs` compiled.

Split from _zspool.pyx, as zsmemory.py is from pool.py, so that the size
classes (_zsclass.pyx) and the pool see their memory only as runs of k pages
named by a page number, and the memfd, its mapping and the holes punched to
give pages back are handled in one place. Every address the layers above use
comes from `_Memory.at`, checked against the mapping.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.errno cimport errno
from libcpp.vector cimport vector
from posix.mman cimport mmap, munmap, madvise, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close, ftruncate

from .zsmemory import POPULATE_BYTES, REUSE_CACHE_BYTES, WINDOW_BYTES

cdef extern from "<sys/mman.h>" nogil:
    void *mremap(void *old_address, size_t old_size, size_t new_size, int flags)
    int memfd_create(const char *name, unsigned int flags)
    int MREMAP_MAYMOVE
    int MFD_CLOEXEC

cdef extern from "<fcntl.h>" nogil:
    int fallocate(int fd, int mode, long offset, long length)
    int FALLOC_FL_KEEP_SIZE
    int FALLOC_FL_PUNCH_HOLE

include "_zslayout.pxi"

DEF MADV_POPULATE_WRITE = 23

cdef uint64_t PAGE_LIMIT = (1 << 32) - 1
cdef size_t C_WINDOW = WINDOW_BYTES
cdef size_t C_REUSE = REUSE_CACHE_BYTES
cdef size_t C_POPULATE = POPULATE_BYTES


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
    """Runs of k contiguous pages for one zspage length (zsmemory._Runs)."""


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
        """zsmemory._Runs.give_back: never fails; a run whose hole cannot be punched stays
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
        """zsmemory._Runs.flush: best effort, never fails (compaction calls it after
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
