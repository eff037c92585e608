# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""LZO1X-1 as the Linux kernel writes it: zram's `lzo` and `lzo-rle`, byte for byte.

What: the codec's Python interface, bound, compress and decompress, and the test
hooks that run it on exact-size copies into guarded buffers. `lzo` is the
kernel's lzo1x_1_compress, `lzo-rle` its lzorle1x_1_compress: the same LZO1X-1
stream behind a 2-byte header (17, then bitstream version 1) with one more
instruction, a run of 4 to 2051 zero bytes.

The codec itself is in three parts, each cimported through _lzok.pxd by other
compiled modules:
- _lzokc.pyx, the compressor: lib/lzo/lzo1x_compress.c rule for rule, so every
  block is the kernel's, byte for byte (the rules are listed there);
- _lzokd.pyx, the decompressor: one decoder for both formats, every read and
  write checked, the kernel's decoder's verdicts and error codes;
- _lzodefs.pxd: the format's numbers, the return codes and the worst-case bound.

Safety: the compressor never reads outside its input nor writes past its
capacity, the decompressor touches no memory outside its two buffers whatever
the input (see each module). The Python functions release the GIL around both.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from ._lzodefs cimport D_SIZE


# --------------------------------------------------------------------------- Python

WORKMEM = LZOK_WORKMEM
"""LZO1X_1_MEM_COMPRESS: the work memory lzok_compress needs."""

cdef dict _ERRORS = {
    LZOK_E_ERROR: "bad end of stream",
    LZOK_E_INPUT_OVERRUN: "input overrun",
    LZOK_E_OUTPUT_OVERRUN: "output overrun",
    LZOK_E_LOOKBEHIND_OVERRUN: "lookbehind overrun",
    LZOK_E_INPUT_NOT_CONSUMED: "input not consumed",
}

# the largest input whose bound still fits an int
cdef Py_ssize_t _MAX_INPUT = 2000000000


def bound(Py_ssize_t n) -> int:
    """lzo1x_worst_compress(n): n + n/16 + 64 + 3, plus lzo-rle's 2-byte header."""
    if n < 0:
        raise ValueError("negative size")
    return n + n // 16 + 64 + 3 + 2


def compress(data, bint rle=False) -> bytes:
    """`data` (any contiguous buffer) as zram's `lzo` (rle false) or `lzo-rle`
    (rle true) stores it."""
    cdef Py_buffer view
    cdef uint16_t table[D_SIZE]
    cdef unsigned char *buf
    cdef int size, cap, n
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len > _MAX_INPUT:
            raise OverflowError(f"{view.len} bytes is too much for one block")
        n = <int>view.len
        cap = lzok_bound(n)
        buf = <unsigned char *>malloc(cap)
        if buf == NULL:
            raise MemoryError()
        try:
            with nogil:
                size = lzok_compress(<const unsigned char *>view.buf, n, buf, cap, rle, table)
            if size < 0:
                raise RuntimeError("LZO block longer than its bound")  # cannot happen
            return PyBytes_FromStringAndSize(<char *>buf, size)
        finally:
            free(buf)
    finally:
        PyBuffer_Release(&view)


def decompress(blob, Py_ssize_t size) -> bytes:
    """A block of either format back into at most `size` bytes (the result may
    be shorter); ValueError if it is corrupt or needs more room."""
    cdef Py_buffer view
    cdef unsigned char *buf
    cdef int got
    if not 0 <= size <= _MAX_INPUT:
        raise ValueError(f"bad size {size}")
    PyObject_GetBuffer(blob, &view, PyBUF_SIMPLE)
    try:
        if view.len > _MAX_INPUT:
            raise ValueError(f"{view.len} bytes is too much for one block")
        buf = <unsigned char *>malloc(size if size > 0 else 1)
        if buf == NULL:
            raise MemoryError()
        try:
            with nogil:
                got = lzok_decompress(<const unsigned char *>view.buf, <int>view.len, buf,
                                      <int>size)
            if got < 0:
                raise ValueError(f"corrupt LZO block: {_ERRORS.get(got, got)} ({got})")
            return PyBytes_FromStringAndSize(<char *>buf, got)
        finally:
            free(buf)
    finally:
        PyBuffer_Release(&view)


# ------------------------------------------------------------------ test hooks

cdef enum:
    GUARD = 64                  # bytes after an output buffer that must stay untouched


cdef unsigned char *_exact_copy(object data, Py_ssize_t *n) except? NULL:
    """`data` copied into a heap block of exactly its size (1 byte if empty), so that a
    build with AddressSanitizer sees any read past its end."""
    cdef Py_buffer view
    cdef unsigned char *copy
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len > _MAX_INPUT:
            raise ValueError("too long")
        copy = <unsigned char *>malloc(view.len if view.len > 0 else 1)
        if copy == NULL:
            raise MemoryError()
        memcpy(copy, view.buf, view.len)
        n[0] = view.len
        return copy
    finally:
        PyBuffer_Release(&view)


cdef unsigned char *_guarded(int capacity) except NULL:
    cdef unsigned char *out = <unsigned char *>malloc(capacity + GUARD)
    if out == NULL:
        raise MemoryError()
    memset(out + capacity, 0xa5, GUARD)
    return out


cdef void _check_guard(unsigned char *out, int capacity) except *:
    cdef int i
    for i in range(GUARD):
        if out[capacity + i] != 0xa5:
            raise RuntimeError(f"wrote past the output's end (+{i})")


def _checked_compress(data, int capacity, bint rle=False):
    """Tests only: lzok_compress from an exact-size copy of `data` into `capacity`
    bytes with a guard after them: the block, or None if it does not fit;
    RuntimeError if the guard was touched."""
    cdef Py_ssize_t n = 0
    cdef unsigned char *src
    cdef unsigned char *out
    cdef uint16_t table[D_SIZE]
    cdef int size
    if capacity < 0:
        raise ValueError("negative capacity")
    src = _exact_copy(data, &n)
    try:
        out = _guarded(capacity)
        try:
            with nogil:
                size = lzok_compress(src, <int>n, out, capacity, rle, table)
            _check_guard(out, capacity)
            return None if size < 0 else PyBytes_FromStringAndSize(<char *>out, size)
        finally:
            free(out)
    finally:
        free(src)


def _checked_decompress(blob, int capacity):
    """Tests only: lzok_decompress from an exact-size copy of `blob` into `capacity`
    bytes with a guard after them: the bytes, or the negative error code;
    RuntimeError if the guard was touched or the size is out of range."""
    cdef Py_ssize_t n = 0
    cdef unsigned char *src
    cdef unsigned char *out
    cdef int got
    if capacity < 0:
        raise ValueError("negative capacity")
    src = _exact_copy(blob, &n)
    try:
        out = _guarded(capacity)
        try:
            with nogil:
                got = lzok_decompress(src, <int>n, out, capacity)
            _check_guard(out, capacity)
            if got > capacity:
                raise RuntimeError(f"claims {got} bytes in {capacity}")
            return got if got < 0 else PyBytes_FromStringAndSize(<char *>out, got)
        finally:
            free(out)
    finally:
        free(src)
