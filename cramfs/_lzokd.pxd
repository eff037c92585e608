# The kernel-exact LZO1X-1 decompressor (_lzokd.pyx). Other compiled modules cimport it
# from _lzok.pxd, with the rest of the codec.

# A block of either format (lzo-rle's header decides) into at most `capacity`
# bytes: the decompressed size, or one of the LZOK_E_* codes. Every read is
# checked against src + n and every write and back-reference against dst and
# dst + capacity, whatever the input.
cdef int lzok_decompress(const unsigned char *src, int n, unsigned char *dst,
                         int capacity) noexcept nogil
