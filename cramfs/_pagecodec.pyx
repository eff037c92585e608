# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
"""The native engine's page encoder: a whole request through liblz4 at once.

python-lz4 takes and gives back the GIL on every 4 KiB page, and the Python
around each call (the same-filled check, the huge check, the tuple) costs
about as much as lz4 itself. Here one call encodes every page of a request,
with the GIL released once for all of them, so worker threads given parts
of a large request really run in parallel.

The result is `device.encoder()`'s, page for page: scripts/setup builds
python-lz4 against the same Debian liblz4 this module links, and each page
goes through the same calls python-lz4 makes (a fresh stream, then
compress_continue); tests/test_engine.py holds the two to the same bytes. Only length-checked C calls are used: every
output buffer is LZ4_compressBound() long and its size is passed in.
"""

cimport cython
from libc.stdlib cimport free, malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from ._lz4page cimport (LZ4_BOUND_PAGE, PAGE, LZ4_compressBound, state_size,
                        LZ4_versionNumber, compress_page, same_filled)


def lz4_version() -> int:
    """liblz4's version as a number (10904 for 1.9.4)."""
    return LZ4_versionNumber()


def encode_lz4_pages(bytes data, Py_ssize_t lo, Py_ssize_t hi, int ident, int none_id,
                     int huge_threshold):
    """`device.encoder("lz4", huge_threshold)` mapped over pages [lo, hi) of `data`:
    a list of (same-filled word or None, blob, compressor id, huge)."""
    cdef Py_ssize_t n, npages, i
    cdef int bound = LZ4_compressBound(PAGE)
    cdef const char *src
    cdef char *out = NULL
    cdef int *sizes = NULL
    cdef void *state = NULL
    if data is None:
        raise TypeError("encode_lz4_pages() needs bytes")
    n = PyBytes_GET_SIZE(data)
    if not 0 <= lo <= hi <= n // PAGE:
        raise ValueError(f"pages [{lo}, {hi}) outside {n} bytes")
    npages = hi - lo
    src = PyBytes_AS_STRING(data) + lo * PAGE
    result = []
    if not npages:
        return result
    out = <char *>malloc(npages * bound)
    sizes = <int *>malloc(npages * sizeof(int))
    state = malloc(state_size())
    if out == NULL or sizes == NULL or state == NULL:
        free(out)
        free(sizes)
        free(state)
        raise MemoryError()
    try:
        with nogil:
            for i in range(npages):
                if same_filled(src + i * PAGE):
                    sizes[i] = -1
                else:
                    sizes[i] = compress_page(state, src + i * PAGE, out + i * bound, bound)
        for i in range(npages):
            if sizes[i] == -1:
                result.append((PyBytes_FromStringAndSize(src + i * PAGE, 8), b"", 0, False))
            elif sizes[i] <= 0 or sizes[i] > bound:
                raise RuntimeError(f"LZ4 compression failed ({sizes[i]})")
            elif sizes[i] >= huge_threshold:
                result.append((None, PyBytes_FromStringAndSize(src + i * PAGE, PAGE), none_id,
                               True))
            else:
                result.append((None, PyBytes_FromStringAndSize(out + i * bound, sizes[i]), ident,
                               False))
    finally:
        free(out)
        free(sizes)
        free(state)
    return result


@cython.final
cdef class Lz4PageEncoder:
    """`device.encoder("lz4", huge_threshold)` for one page at a time, compiled: the swap
    path writes single pages, where a Python encoder's checks cost as much as lz4."""

    def __cinit__(self):
        self.state = malloc(state_size())
        if self.state == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.state)

    def __init__(self, int ident, int none_id, int huge_threshold):
        self.ident = ident
        self.none_id = none_id
        self.huge_threshold = huge_threshold

    cdef bytes c_encode(self, bytes page, int *algo, bint *huge):
        """The page's blob, its compressor id and huge flag through the pointers; None
        for a same-filled page (whose word the caller gets from __call__)."""
        cdef char out[LZ4_BOUND_PAGE]
        cdef int size
        cdef const char *src
        if page is None or PyBytes_GET_SIZE(page) != PAGE:
            raise ValueError("Lz4PageEncoder takes one whole page")
        src = PyBytes_AS_STRING(page)
        if same_filled(src):
            return None
        size = compress_page(self.state, src, out, LZ4_BOUND_PAGE)   # too short to drop the GIL
        if size <= 0 or size > LZ4_BOUND_PAGE:
            raise RuntimeError(f"LZ4 compression failed ({size})")
        if size >= self.huge_threshold:
            algo[0], huge[0] = self.none_id, True
            return page
        algo[0], huge[0] = self.ident, False
        return PyBytes_FromStringAndSize(out, size)

    def __call__(self, bytes page):
        cdef int algo = 0
        cdef bint huge = False
        blob = self.c_encode(page, &algo, &huge)
        if blob is None:
            return (PyBytes_FromStringAndSize(PyBytes_AS_STRING(page), 8), b"", 0, False)
        return (None, blob, algo, huge)
