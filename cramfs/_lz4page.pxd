# lz4 as the compiled modules call it, and the two page checks they share
# (_pagecodec encodes pages for the device, _tracering for the trace): one
# definition, so a page's block is the same bytes wherever it is made.

from libc.stdint cimport uint16_t
from libc.string cimport memcmp

from ._lz4k cimport LZ4K_TABLE_ENTRIES, lz4k_compress_table


cdef extern from "lz4.h" nogil:
    ctypedef struct LZ4_stream_t:
        pass
    int LZ4_sizeofState()
    LZ4_stream_t *LZ4_initStream(void *buffer, size_t size)
    int LZ4_compress_fast_continue(LZ4_stream_t *stream, const char *src, char *dst,
                                   int srcSize, int dstCapacity, int acceleration)
    int LZ4_compressBound(int inputSize)
    int LZ4_versionNumber()

cdef inline size_t state_size() noexcept nogil:
    """Bytes of the `state` compress_block and compress_page take: a stream for the one,
    the kernel-exact compressor's hash table for the other."""
    cdef size_t table = LZ4K_TABLE_ENTRIES * sizeof(uint16_t)
    cdef size_t stream = LZ4_sizeofState()
    return stream if stream > table else table


cdef enum:
    PAGE = 4096
    LZ4_BOUND_PAGE = 4128        # LZ4_COMPRESSBOUND(4096): 4096 + 4096 / 255 + 16


cdef inline int compress_block(void *state, const char *src, int size, char *dst,
                               int capacity) noexcept nogil:
    """`size` bytes as `lz4.block.compress(src, store_size=False)` compresses them: a
    fresh stream, then compress_continue (one-shot LZ4_compress_default emits other
    bytes for some pages). `state` is LZ4_sizeofState() bytes; `capacity` at least
    LZ4_compressBound(size)."""
    cdef LZ4_stream_t *stream = LZ4_initStream(state, LZ4_sizeofState())
    if stream == NULL:
        return -1
    return LZ4_compress_fast_continue(stream, src, dst, size, capacity, 1)


cdef inline int compress_page(void *state, const char *src, char *dst,
                              int capacity) noexcept nogil:
    """A page as zram's lz4 backend compresses it (lib/lz4's LZ4_compress_fast with
    acceleration 1, the rules _lz4k follows), so its size is the kernel's. `state`,
    LZ4_sizeofState() bytes, holds the hash table. 0 if it does not fit `capacity`.
    (compress_block stays liblz4's: the trace's blocks of other lengths are a file
    format, not a device's sizes.)"""
    return lz4k_compress_table(<const unsigned char *>src, PAGE, <unsigned char *>dst,
                               capacity, <uint16_t *>state)


cdef inline bint same_filled(const char *page) noexcept nogil:
    """zram's page_same_filled(): the last word first, then the whole page."""
    cdef int i
    if memcmp(page, page + PAGE - 8, 8) != 0:
        return False
    i = 8
    while i < PAGE:
        if memcmp(page, page + i, 8) != 0:
            return False
        i += 8
    return True
