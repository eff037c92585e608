# The kernel's LZ4 block compressor, as other compiled modules call it (see _lz4k.pyx):
# `lz4k_compress` gives for a page the bytes zram's lz4 backend stores for it.

from libc.stdint cimport uint16_t

cdef enum:
    LZ4K_MAX_INPUT = 65535         # the largest input taken (positions are 16-bit)
    LZ4K_TABLE_ENTRIES = 8192      # the kernel's byU16 hash table: 2^(LZ4_HASHLOG + 1)
    LZ4K_PAGE_BOUND = 4128         # LZ4_COMPRESSBOUND(4096): 4096 + 4096 / 255 + 16


# LZ4_COMPRESSBOUND(n): the most a block of n bytes can take (n + n / 255 + 16); 0 for n < 0.
cdef int lz4k_bound(int n) noexcept nogil

# `n` bytes at `src` (0 <= n <= 65535) as the kernel's LZ4_compress_fast(..., 1) compresses
# them, written to `dst`: the block's size, or 0 if it does not fit in `capacity` bytes or
# an argument is out of range. Writes only dst[0:capacity], reads only src[0:n]. Its
# 16 KiB hash table is on the stack.
cdef int lz4k_compress(const unsigned char *src, int n, unsigned char *dst,
                       int capacity) noexcept nogil

# The same, with the hash table in `table` (LZ4K_TABLE_ENTRIES entries, cleared here): for
# callers that keep one per thread instead of 16 KiB of stack.
cdef int lz4k_compress_table(const unsigned char *src, int n, unsigned char *dst,
                             int capacity, uint16_t *table) noexcept nogil
