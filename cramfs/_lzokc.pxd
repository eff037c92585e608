# The kernel-exact LZO1X-1 compressor (_lzokc.pyx). Other compiled modules cimport it
# from _lzok.pxd, with the rest of the codec.

# `n` bytes of src as the kernel's lzo1x_1_compress (rle false) or
# lzorle1x_1_compress (rle true) writes them: the block's size, or -1 when it is
# longer than `capacity` (nothing is written past dst + capacity; a capacity of
# lzok_bound(n) always suffices). `wrkmem` is LZOK_WORKMEM bytes, any content.
cdef int lzok_compress(const unsigned char *src, int n, unsigned char *dst, int capacity,
                       bint rle, void *wrkmem) noexcept nogil
