# The kernel-exact LZO1X-1 codec (_lzok.pyx), for other compiled modules: the same
# block, byte for byte, as zram's `lzo` (rle false) and `lzo-rle` (rle true).

cdef enum:
    # LZO1X_1_MEM_COMPRESS: the hash table, 2^13 16-bit offsets
    LZOK_WORKMEM = 16384
    # the kernel's return codes (include/linux/lzo.h)
    LZOK_E_ERROR = -1
    LZOK_E_INPUT_OVERRUN = -4
    LZOK_E_OUTPUT_OVERRUN = -5
    LZOK_E_LOOKBEHIND_OVERRUN = -6
    LZOK_E_INPUT_NOT_CONSUMED = -8


cdef inline int lzok_bound(int n) noexcept nogil:
    """lzo1x_worst_compress(n): the largest block `n` bytes can give, lzo-rle's
    2-byte header included. (Callers keep n below 2^31 * 16 / 17 - 69.)"""
    return n + (n >> 4) + 64 + 3 + 2


# `n` bytes of src as the kernel's lzo1x_1_compress (rle false) or
# lzorle1x_1_compress (rle true) writes them: the block's size, or -1 when it is
# longer than `capacity` (nothing is written past dst + capacity; a capacity of
# lzok_bound(n) always suffices). `wrkmem` is LZOK_WORKMEM bytes, any content.
cdef int lzok_compress(const unsigned char *src, int n, unsigned char *dst, int capacity,
                       bint rle, void *wrkmem) noexcept nogil

# A block of either format (lzo-rle's header decides) into at most `capacity`
# bytes: the decompressed size, or one of the LZOK_E_* codes. Every read is
# checked against src + n and every write and back-reference against dst and
# dst + capacity, whatever the input.
cdef int lzok_decompress(const unsigned char *src, int n, unsigned char *dst,
                         int capacity) noexcept nogil
